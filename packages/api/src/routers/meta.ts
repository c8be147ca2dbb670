import { setTimeout as sleep } from 'node:timers/promises'

import { z } from 'zod'

import { createRouter, publicProcedure } from '../trpc.ts'

export const ticksInput = z.object({
  count: z.number().int().min(1).max(100).default(3),
  intervalMs: z.number().int().min(10).max(5_000).default(100),
})

export const metaRouter = createRouter({
  /** Service identity; proves the HTTP link. */
  info: publicProcedure.query(({ ctx }) => ctx.services.meta.info()),

  /**
   * Counts 1..count, one every intervalMs, naming the caller it authenticated (null
   * when anonymous); proves the WebSocket link and its connection params.
   */
  ticks: publicProcedure.input(ticksInput).subscription(async function* ({ ctx, input, signal }) {
    for (let tick = 1; tick <= input.count; tick++) {
      if (tick > 1)
        await sleep(input.intervalMs, undefined, { signal })
      yield { tick, at: new Date(), userId: (await ctx.getAuth())?.user.id ?? null }
    }
  }),
})
