import { z } from 'zod'

import { createRouter, protectedProcedure } from '../trpc.ts'
import { text } from './schemas.ts'

const fluxHistoryInput = z.object({
  cursor: text().min(1).max(200).nullish(),
  limit: z.number().int().min(1).max(100).default(20),
})

export const fluxRouter = createRouter({
  /** The caller's balance; the first read opens the account with INITIAL_USER_FLUX. */
  balance: protectedProcedure.query(async ({ ctx }) => ({ flux: await ctx.services.billing.getBalance(ctx.user.id) })),

  /** The caller's ledger, newest first. */
  history: protectedProcedure.input(fluxHistoryInput).query(({ ctx, input }) => ctx.services.billing.history(ctx.user.id, input)),
})
