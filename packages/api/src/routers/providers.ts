import { z } from 'zod'

import { createRouter, protectedProcedure } from '../trpc.ts'
import { id, jsonObject, text } from './schemas.ts'

const name = text().trim().min(1).max(200)

const providerCreateInput = z.object({
  /** Which provider definition (e.g. `openai`, `elevenlabs`) this config is for. */
  definitionId: text().trim().min(1).max(100),
  name,
  config: jsonObject,
  validated: z.boolean().optional(),
  validationBypassed: z.boolean().optional(),
})

const providerUpdateInput = z.object({
  id,
  name: name.optional(),
  config: jsonObject.optional(),
  validated: z.boolean().optional(),
  validationBypassed: z.boolean().optional(),
})

export const providersRouter = createRouter({
  /** The operator's configs, then the caller's own; never another user's. */
  list: protectedProcedure.query(({ ctx }) => ctx.services.providers.list(ctx.user.id)),

  create: protectedProcedure.input(providerCreateInput).mutation(({ ctx, input }) => ctx.services.providers.create(ctx.user.id, input)),

  /** Own configs only; `config` replaces the stored one. */
  update: protectedProcedure.input(providerUpdateInput).mutation(({ ctx, input }) => ctx.services.providers.update(ctx.user.id, input)),

  /** Own configs only; soft delete. */
  delete: protectedProcedure.input(z.object({ id })).mutation(({ ctx, input }) => ctx.services.providers.delete(ctx.user.id, input.id)),
})
