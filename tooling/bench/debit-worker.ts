// The debit scenario's load: the billing service of the benchmarked checkout
// (composed by its own createApi, on a Kysely/pg pool of the server's size),
// debiting 1 Flux from random users at a fixed concurrency for a fixed time.
// Reports { debits, seconds, errors } over IPC, in a process of its own so the
// bench's other work does not share its event loop.
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'

import { openBilling, type DebitWorkerInput } from './debit.ts'

const input = JSON.parse(process.env.BENCH_DEBIT_INPUT!) as DebitWorkerInput
const billing = await openBilling(input.serverRoot, input.databaseUrl, input.redisUrl, input.redisPrefix)
const until = performance.now() + input.seconds * 1000
let debits = 0
let errors = 0
const started = performance.now()
await Promise.all(Array.from({ length: input.concurrency }, async () => {
  while (performance.now() < until && (input.amount === undefined || debits + errors < input.amount)) {
    const userId = input.userIds[Math.floor(Math.random() * input.userIds.length)]!
    try {
      await billing.debit({ userId, amount: 1, requestId: `bench:${randomUUID()}`, description: 'bench' })
      debits++
    }
    catch {
      errors++
    }
  }
}))
const seconds = (performance.now() - started) / 1000
await billing.close()
process.send!({ debits, seconds, errors })
