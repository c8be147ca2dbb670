// The debit scenario's load: the billing service of the benchmarked checkout
// (composed by its own createApi, on a Kysely/pg pool of the server's size), in a
// process of its own so the bench's other work does not share its event loop.
// One process serves the whole scenario (composing the API is the slow part):
// the parent sends `capture` (a few sequential debits while it records the
// statement log) and `run` (debit 1 Flux from random users at a fixed
// concurrency for a fixed time, answered with { debits, seconds, errors }).
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'

import { openBilling, type DebitWorkerInput, type DebitWorkerRequest } from './debit.ts'

const input = JSON.parse(process.env.BENCH_DEBIT_INPUT!) as DebitWorkerInput
const billing = await openBilling(input.serverRoot, input.databaseUrl, input.redisUrl, input.redisPrefix)

async function run(seconds: number, concurrency: number, userIds: string[]): Promise<{ debits: number, seconds: number, errors: number }> {
  const until = performance.now() + seconds * 1000
  let debits = 0
  let errors = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < until) {
      const userId = userIds[Math.floor(Math.random() * userIds.length)]!
      try {
        await billing.debit({ userId, amount: 1, requestId: `bench:${randomUUID()}`, description: 'bench' })
        debits++
      }
      catch {
        errors++
      }
    }
  }))
  return { debits, seconds: (performance.now() - started) / 1000, errors }
}

process.on('message', (message: DebitWorkerRequest) => {
  void (async () => {
    try {
      if (message.type === 'debit') {
        // The request id says which call this is, so the capture can be split and rewritten.
        await billing.debit({ userId: message.userId, amount: 1, requestId: message.requestId, description: 'bench' })
        process.send!({ ok: true })
      }
      else if (message.type === 'run') {
        process.send!({ ok: true, ...await run(message.seconds, message.concurrency, message.userIds) })
      }
      else {
        await billing.close()
        process.send!({ ok: true }, () => process.exit(0))
      }
    }
    catch (error) {
      process.send!({ ok: false, error: (error as Error).stack ?? String(error) })
    }
  })()
})
process.send!({ ready: true })
