import { z } from 'zod'

import { configKeys, type ConfigKey } from '../config/entries.ts'
import { adminProcedure, createRouter } from '../trpc.ts'

const configKeySchema = z.enum(configKeys as [ConfigKey, ...ConfigKey[]])

const adminConfigRouter = createRouter({
  list: adminProcedure.query(({ ctx }) => ctx.services.config.list()),

  get: adminProcedure
    .input(z.object({ key: configKeySchema }))
    .query(({ ctx, input }) => ctx.services.config.describe(input.key)),

  /** Validates `value` with the entry's schema; every instance sees it on its next read. */
  set: adminProcedure
    .input(z.object({ key: configKeySchema, value: z.unknown() }))
    .mutation(async ({ ctx, input }) => ({
      key: input.key,
      value: await ctx.services.config.set(input.key, input.value, ctx.user.id),
    })),
})

export const adminRouter = createRouter({
  config: adminConfigRouter,
})
