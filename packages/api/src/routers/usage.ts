import { usageCallsInput, usageSummaryInput } from '../services/usage/index.ts'
import { createRouter, protectedProcedure } from '../trpc.ts'

export const usageRouter = createRouter({
  /** The caller's metered calls (LLM, replies, speech, transcription), newest first. */
  calls: protectedProcedure.input(usageCallsInput).query(({ ctx, input }) => ctx.services.usage.calls(ctx.user.id, input)),

  /** The caller's usage between two UTC days (both included), by day or by model. */
  summary: protectedProcedure.input(usageSummaryInput).query(({ ctx, input }) => ctx.services.usage.summary(ctx.user.id, input)),
})
