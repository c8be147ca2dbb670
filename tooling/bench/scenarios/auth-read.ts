import { REQUEST_DEADLINE_MS, type Row, type Scenario } from '../context.ts'
import { startHelper } from '../infra.ts'
import { load, type HttpCall } from '../load.ts'
import { formatNumber, formatSummary, ratio, summarize } from '../stats.ts'
import { captureCalls } from './gateway.ts'

/** auth.me and flux.balance over tRPC HTTP at c=50, against a bare tRPC procedure on the same adapter. */
export const authRead: Scenario = {
  name: 'auth-read',
  quick: true,
  async run(context) {
    const users = context.deployment.users
    const connections = Math.min(50, users.length)
    const seconds = context.quick ? 2 : 5
    const bare = await startHelper<{ url: string }>('bare-trpc.ts', [context.serverRoot], context.infra.root)
    try {
      const get = (url: string): HttpCall => ({ method: 'GET', url })
      const headersFor = (index: number) => ({ authorization: `Bearer ${users[index % connections]!.token}` })
      const procedures = ['auth.me', 'flux.balance'] as const
      const sql = new Map<string, number>()
      for (const path of procedures) {
        const token = users[0]!.token
        const captured = await captureCalls(context, async () => {
          const response = await fetch(`${context.server.url}/trpc/${path}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
          await response.arrayBuffer()
        })
        sql.set(path, captured.perCall)
      }
      const bareRps: number[] = []
      const ours = new Map<string, number[]>(procedures.map(path => [path, []]))
      for (let round = 0; round < context.rounds; round++) {
        for (const path of procedures) {
          bareRps.push((await load(get(`${bare.info.url}/trpc/bench.constant`), { connections, seconds })).requestsPerSecond)
          const result = await load(get(`${context.server.url}/trpc/${path}`), { connections, seconds, headersFor })
          if (result.non2xx > 0 || result.errors > 0)
            context.log(`auth-read ${path}: ${result.non2xx} non-2xx, ${result.errors} errors`)
          ours.get(path)!.push(result.requestsPerSecond)
          context.log(`auth-read round ${round + 1}: bare ${formatNumber(bareRps.at(-1)!)} req/s, ${path} ${formatNumber(result.requestsPerSecond)} req/s`)
        }
      }
      const baseline = summarize(bareRps)
      const rows: Row[] = []
      for (const path of procedures) {
        const mine = summarize(ours.get(path)!)
        const share = ratio(mine.median, baseline.median)
        rows.push({
          scenario: 'auth-read',
          metric: `${path}, c=${connections}, vs a bare tRPC procedure (${formatNumber(sql.get(path)!)} SQL/call)`,
          baseline: formatSummary(baseline, 'req/s'),
          ours: formatSummary(mine, 'req/s'),
          ratio: formatNumber(share),
          target: '≥ 0.70',
          met: share >= 0.7,
          data: { bareRps: baseline, oursRps: mine, statementsPerCall: sql.get(path)! },
        })
      }
      return rows
    }
    finally {
      await bare.stop()
    }
  },
}
