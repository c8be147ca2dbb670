import { z } from 'zod'

import { configKeys, type ConfigKey } from '../config/entries.ts'
import { upstreamKinds, upstreamPutInput } from '../services/operator/index.ts'
import { adminProcedure, createRouter } from '../trpc.ts'
import { jsonValue, text } from './schemas.ts'

const configKeySchema = z.enum(configKeys as [ConfigKey, ...ConfigKey[]])

const adminConfigRouter = createRouter({
  list: adminProcedure.query(({ ctx }) => ctx.services.config.list()),

  get: adminProcedure
    .input(z.object({ key: configKeySchema }))
    .query(({ ctx, input }) => ctx.services.config.describe(input.key)),

  /** Validates `value` with the entry's schema and its sealed keys against the vault; every instance sees it on its next read. */
  set: adminProcedure
    .input(z.object({ key: configKeySchema, value: jsonValue.optional() }))
    .mutation(async ({ ctx, input }) => ({
      key: input.key,
      value: await ctx.services.config.set(input.key, input.value, ctx.user.id),
    })),
})

/** Also the input of `pnpm airi flux grant`. */
export const fluxGrantInput = z.object({
  description: text().trim().min(1).max(200),
  amount: z.number().int().min(1).max(10_000),
  emails: z.array(text().trim().min(1).max(320)).min(1).max(200),
  idempotencyKey: text().trim().min(1).max(100).optional(),
  dryRun: z.boolean().default(false),
})

const adminFluxRouter = createRouter({
  /** Credits each e-mail's account `amount` Flux (a promo), reporting per e-mail; see billing.md. */
  grant: adminProcedure.input(fluxGrantInput).mutation(({ ctx, input }) => ctx.services.fluxGrants.grant(input, ctx.user.id)),
})

const encryptKeyInput = z.object({
  model: text().trim().min(1).max(200),
  keyId: text().trim().min(1).max(100),
  apiKey: text().min(1).max(10_000),
})

const adminLlmRouter = createRouter({
  /** `{ keyId, ciphertext }` for a key entry of LLM_ROUTER_CONFIG (AAD = model + key id). */
  encryptKey: adminProcedure.input(encryptKeyInput).mutation(({ ctx, input }) => ctx.services.llmGateway.encryptKey(input.model, input.keyId, input.apiKey)),
})

const kindInput = z.object({ kind: z.enum(upstreamKinds) })

const adminUpstreamsRouter = createRouter({
  /** The aliases of one kind (llm, tts, stt) with their upstreams, prices and keys as `••••1234` hints. */
  list: adminProcedure.input(kindInput).query(({ ctx, input }) => ctx.services.operator.upstreams.list(input.kind)),
  /** Adds or replaces an alias; a given `apiKey` is sealed on the server and never returned. */
  put: adminProcedure.input(upstreamPutInput).mutation(({ ctx, input }) => ctx.services.operator.upstreams.put(input, ctx.user.id)),
  remove: adminProcedure
    .input(kindInput.extend({ alias: text().trim().min(1).max(200) }))
    .mutation(({ ctx, input }) => ctx.services.operator.upstreams.remove(input.kind, input.alias, ctx.user.id)),
})

const emailInput = z.object({ email: z.email().max(320) })

const adminAdminsRouter = createRouter({
  /** ADMIN_EMAILS (`source: 'env'`) and the administrators added since (`stored`). */
  list: adminProcedure.query(({ ctx }) => ctx.services.operator.admins.list()),
  add: adminProcedure.input(emailInput).mutation(({ ctx, input }) => ctx.services.operator.admins.add(input.email, ctx.user.id)),
  remove: adminProcedure.input(emailInput).mutation(({ ctx, input }) => ctx.services.operator.admins.remove(input.email)),
})

const adminUsersRouter = createRouter({
  /** One account by e-mail: balance, newest calls, live sessions. */
  lookup: adminProcedure.input(emailInput).query(({ ctx, input }) => ctx.services.operator.users.lookup(input.email)),
  /** Ends one session, or every session of the user when `sessionId` is absent. */
  revokeSessions: adminProcedure
    .input(z.object({ userId: text().min(1).max(200), sessionId: text().min(1).max(200).optional() }))
    .mutation(({ ctx, input }) => ctx.services.operator.users.revokeSessions(input.userId, input.sessionId)),
})

export const adminRouter = createRouter({
  admins: adminAdminsRouter,
  config: adminConfigRouter,
  flux: adminFluxRouter,
  llm: adminLlmRouter,
  upstreams: adminUpstreamsRouter,
  users: adminUsersRouter,
})
