import { setTimeout as sleep } from 'node:timers/promises'

import { z } from 'zod'

import { mergeRouters, createRouter, publicProcedure, type AppRouter } from '@airi/api'

const ticksInput = z.object({
  count: z.number().int().min(1).max(100).default(3),
  intervalMs: z.number().int().min(10).max(5_000).default(100),
})

/** Procedures only tests need, served beside the app's by the harness (never in production). */
const testRouter = createRouter({
  test: createRouter({
    /**
     * Counts 1..count, one every intervalMs, naming the caller it authenticated (null
     * when anonymous): a subscription that needs no data, for tests of the WebSocket
     * link, its connection params and the transport's limits.
     */
    ticks: publicProcedure.input(ticksInput).subscription(async function* ({ ctx, input, signal }) {
      for (let tick = 1; tick <= input.count; tick++) {
        if (tick > 1)
          await sleep(input.intervalMs, undefined, { signal })
        yield { tick, at: new Date(), userId: (await ctx.getAuth())?.user.id ?? null }
      }
    }),
  }),
})

/** The app's router with `test.*` added. */
export function withTestProcedures(router: AppRouter) {
  return mergeRouters(router, testRouter)
}

export type TestAppRouter = ReturnType<typeof withTestProcedures>
