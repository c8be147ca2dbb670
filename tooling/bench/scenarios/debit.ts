import { join } from 'node:path'

import { startDebitWorker, type DebitWorkerInput } from '../debit.ts'
import { pgbench, pgbenchLength } from '../load.ts'
import { pgbenchScripts, splitCalls } from '../sql-replay.ts'
import { formatNumber, formatSummary, ratio, summarize } from '../stats.ts'
import type { BenchContext, Scenario } from '../context.ts'

const DEBIT_APP = 'airi-bench-debit'
const BOUNDARY = 'bench-debit-boundary'

/** The debit worker's connection: the server's database, its own application_name (the capture filters on it). */
export function debitWorkerInput(context: Pick<BenchContext, 'databaseUrl' | 'serverRoot' | 'infra' | 'serverOptions'>): DebitWorkerInput {
  const url = new URL(context.databaseUrl)
  url.searchParams.set('application_name', DEBIT_APP)
  return { serverRoot: context.serverRoot, databaseUrl: url.toString(), redisUrl: context.infra.redis.url, redisPrefix: context.serverOptions.redisPrefix }
}

/**
 * The ledger's debit at c=100 over 100 users: the billing service in a process of
 * its own (its own pool, as the server sizes it) against pgbench running the same
 * statements at the same concurrency. No HTTP and no auth: only the service's own
 * overhead and round trips are compared.
 */
export const debit: Scenario = {
  name: 'debit',
  quick: true,
  async run(context) {
    const users = context.deployment.users
    const concurrency = Math.min(100, users.length)
    const seconds = context.quick ? 2 : 5
    const amount = context.quick ? 300 : undefined
    const userIds = users.slice(0, concurrency).map(u => u.id)
    // One worker for the capture and every round: composing the API is its slow part.
    const worker = await (context.prestarted.debit ?? startDebitWorker(debitWorkerInput(context), context.infra.root))
    try {
      // The statements of one debit, captured from the same service.
      const user = users[0]!
      let n = 0
      const once = () => worker.debit(user.id, `bench:capture:${Date.now()}:${n++}`)
      await once()
      const captured = await context.infra.postgres.capture(async () => {
        for (let index = 0; index < 3; index++) {
          await context.infra.postgres.query(`SELECT '${BOUNDARY}'`)
          await once()
        }
        await context.infra.postgres.query(`SELECT '${BOUNDARY}'`)
      })
      const calls = splitCalls(captured, DEBIT_APP, BOUNDARY)
      const statements = calls.at(-1) ?? []
      const perDebit = captured.filter(statement => statement.app === DEBIT_APP).length / 3
      // The request ids of the capture are not UUIDs: make them unique per transaction.
      const replay = statements.map(sql => sql.replace(/bench:capture:\d+:\d+/g, 'bench:00000000-0000-4000-8000-000000000000'))
      context.log(`debit: ${formatNumber(perDebit)} statements per debit:\n  ${replay.join('\n  ')}`)
      const scripts = pgbenchScripts(replay, { id: user.id }, users.slice(0, concurrency).map(u => ({ id: u.id })))

      const ceiling: number[] = []
      const ours: number[] = []
      for (let round = 0; round < context.rounds; round++) {
        if (context.pgbench)
          ceiling.push((await pgbench(context.pgbench, context.databaseUrl, scripts, join(context.infra.root, 'pgbench-debit'), concurrency, pgbenchLength(seconds, amount))).tps)
        const result = await worker.run(seconds, concurrency, userIds)
        ours.push(result.debits / result.seconds)
        context.log(`debit round ${round + 1}: pgbench ${formatNumber(ceiling.at(-1) ?? Number.NaN)} tps, service ${formatNumber(ours.at(-1)!)} debits/s (${result.errors} errors)`)
      }
      const baseline = summarize(ceiling)
      const mine = summarize(ours)
      const share = ratio(mine.median, baseline.median)
      return [{
        scenario: 'debit',
        metric: `billing.debit, c=${concurrency}, ${concurrency} users, vs pgbench of its SQL (${formatNumber(perDebit)} SQL/debit)`,
        baseline: context.pgbench ? formatSummary(baseline, 'tps') : 'no pgbench',
        ours: formatSummary(mine, 'debits/s'),
        ratio: formatNumber(share),
        target: '≥ 0.80',
        met: Number.isFinite(share) ? share >= 0.8 : null,
        data: { pgbenchTps: baseline, oursPerSecond: mine, statementsPerDebit: perDebit, statements: replay.join(';\n') },
      }]
    }
    finally {
      await worker.close()
    }
  },
}
