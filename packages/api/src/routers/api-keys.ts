import { apiKeyByIdInput, apiKeyCreateInput } from '../services/api-keys/index.ts'
import { createRouter, protectedProcedure } from '../trpc.ts'

/**
 * Personal API keys (SPEC §4.17). Session-authenticated only: a key never reaches
 * tRPC (the resolver admits keys on the REST gateways alone), so a key cannot make,
 * list or revoke keys.
 */
export const apiKeysRouter = createRouter({
  /** The key is in this answer only; 409 `API_KEY_LIMIT` at 20 live keys. */
  create: protectedProcedure.input(apiKeyCreateInput).mutation(({ ctx, input }) => ctx.services.apiKeys.create(ctx.user.id, input)),

  /** The caller's keys that are not revoked, newest first, with what each spent this period. */
  list: protectedProcedure.query(({ ctx }) => ctx.services.apiKeys.list(ctx.user.id)),

  /** Stops the key on every instance; 404 `API_KEY_NOT_FOUND` for anyone else's. */
  revoke: protectedProcedure.input(apiKeyByIdInput).mutation(({ ctx, input }) => ctx.services.apiKeys.revoke(ctx.user.id, input.id)),
})
