import { Agent, request } from 'node:http'
import { performance } from 'node:perf_hooks'

import { REQUEST_DEADLINE_MS, type BenchContext, type Row, type Scenario } from '../context.ts'
import { trpcCall, type BenchUser } from '../deployment.ts'
import type { HttpCall } from '../load.ts'
import { formatNumber, formatSigned, formatSummary, percentile, ratio, seededRandom, summarize } from '../stats.ts'
import { captureCalls, gateway as gatewayCall, send } from './gateway.ts'

/** A budget far above anything the run spends (the schema's largest), so no call is refused and only the check's cost shows. */
const LARGE_BUDGET = { flux: 1_000_000_000, period: 'month' } as const

/** Added p50 that counts as "no worse": the larger of this and TOLERANCE_SHARE of the session's p50 (docs/performance.md says why). */
const TOLERANCE_MS = 0.25
const TOLERANCE_SHARE = 0.05

interface Side {
  name: string
  call: HttpCall
}

const ms = (value: number) => `${formatSigned(value)} ms`

async function createKey(context: BenchContext, user: BenchUser, name: string, budget?: { flux: number, period: 'day' | 'month' | 'total' }): Promise<{ id: string, key: string }> {
  try {
    return await trpcCall<{ id: string, key: string }>(context.server.url, user.token, 'apiKeys.create', { name, scopes: ['llm'], ...(budget ? { budget } : {}) }, 'mutation')
  }
  catch (error) {
    // A checkout from before personal API keys (a --server-root run): only this scenario fails.
    throw new Error(`personal API keys could not be made on this checkout: ${(error as Error).message}`)
  }
}

/**
 * Whether this checkout enforces key budgets: a key with a 1-Flux budget must be
 * refused (402 KEY_BUDGET_EXCEEDED) before a call reaches the upstream. Its first
 * call may pass (it can cost 1 Flux, the least a call reserves); by the third
 * the budget is gone either way. The probe key is revoked again.
 */
async function budgetEnforced(context: BenchContext, user: BenchUser): Promise<boolean> {
  const probe = await createKey(context, user, 'bench budget probe', { flux: 1, period: 'total' })
  try {
    const call = gatewayCall(context, probe.key)
    for (let attempt = 0; attempt < 3; attempt++) {
      const response = await fetch(call.url, { method: call.method, headers: call.headers, body: call.body, signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
      const body = await response.text()
      if (response.status === 402 && body.includes('KEY_BUDGET_EXCEEDED'))
        return true
      if (!response.ok)
        throw new Error(`a call with a 1-Flux key answered ${response.status} ${body.slice(0, 200)}`)
    }
    return false
  }
  finally {
    await trpcCall(context.server.url, user.token, 'apiKeys.revoke', { id: probe.id }, 'mutation')
  }
}

/** One call on `agent` (one kept-alive socket shared by every side), timed from sending to the end of the body (ms). */
function timedCall(agent: Agent, call: HttpCall): Promise<number> {
  const url = new URL(call.url)
  return new Promise<number>((resolve, reject) => {
    const started = performance.now()
    const req = request({ agent, host: url.hostname, port: url.port, path: url.pathname, method: call.method, headers: { ...call.headers, 'content-length': Buffer.byteLength(call.body ?? '') } }, (res) => {
      res.resume()
      res.once('end', () => (res.statusCode ?? 0) >= 400 ? reject(new Error(`${call.url} answered ${res.statusCode}`)) : resolve(performance.now() - started))
      res.once('error', reject)
    })
    req.once('error', reject)
    req.setTimeout(REQUEST_DEADLINE_MS, () => req.destroy(new Error(`${call.url}: no answer within ${REQUEST_DEADLINE_MS} ms`)))
    req.end(call.body)
  })
}

/**
 * `turns` turns, each one call of every side on the same connection in an order
 * shuffled turn by turn, so noise, a call's position in the turn and the call
 * before it (a budgeted call's commits may still be running) hit every side
 * alike. A fixed rotation would not do: each side would always follow the same
 * other side. The latencies of each side, in `sides` order.
 */
async function interleaved(sides: Side[], turns: number, seed: number): Promise<number[][]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const next = seededRandom(seed)
  try {
    const latencies = sides.map(() => [] as number[])
    const order = sides.map((_, index) => index)
    for (let turn = 0; turn < turns; turn++) {
      for (let index = order.length - 1; index > 0; index--) {
        const other = Math.floor(next() * (index + 1))
        const swapped = order[index]!
        order[index] = order[other]!
        order[other] = swapped
      }
      for (const index of order)
        latencies[index]!.push(await timedCall(agent, sides[index]!.call))
    }
    return latencies
  }
  finally {
    agent.destroy()
  }
}

interface Comparison {
  name: string
  p50: number[]
  p95: number[]
  addedP50: number[]
  addedP95: number[]
  /** ours ÷ session, per round. */
  ratioP50: number[]
  ratioP95: number[]
}

/** A side against the session per percentile: p50 is checked against the tolerance, p95 is reported. */
function comparisonRows(comparison: Comparison, session: { p50: number[], p95: number[] }, turns: number, checked: boolean): Row[] {
  return (['p50', 'p95'] as const).map((p) => {
    const base = summarize(session[p])
    const ours = summarize(comparison[p])
    const added = summarize(p === 'p50' ? comparison.addedP50 : comparison.addedP95)
    const times = summarize(p === 'p50' ? comparison.ratioP50 : comparison.ratioP95)
    const allowed = Math.max(TOLERANCE_MS, TOLERANCE_SHARE * base.median)
    const key = p.toUpperCase()
    return {
      scenario: 'gateway-key',
      metric: p === 'p50'
        ? `${comparison.name} vs session token, c=1, non-streamed, p50 (${turns} turns/round, interleaved)`
        : `${comparison.name}: c=1 p95`,
      baseline: `session ${formatSummary(base, 'ms')}`,
      ours: formatSummary(ours, 'ms'),
      ratio: `${ms(added.median)} (×${formatNumber(times.median)})`,
      target: p === 'p50' && checked ? `added ≤ max(${TOLERANCE_MS} ms, ${TOLERANCE_SHARE * 100} %)` : '—',
      met: p === 'p50' && checked ? added.median <= allowed : null,
      data: { [`session${key}`]: base, [`ours${key}`]: ours, [`added${key}`]: added, [`ratio${key}`]: times, allowedMs: allowed },
    }
  })
}

/**
 * The gateway's added latency with a personal API key (issue 29) against the same
 * user's session token, on the same server in the same run: gateway-latency's
 * request, c=1, interleaved call by call with the session token (and with the
 * session token again, the A/A control that shows the noise floor).
 */
export const gatewayKey: Scenario = {
  name: 'gateway-key',
  quick: true,
  async run(context): Promise<Row[]> {
    const turns = context.quick ? 100 : 1000
    const user = context.deployment.users[0]!
    const plain = await createKey(context, user, 'bench key')
    const enforced = await budgetEnforced(context, user)
    context.log(enforced ? 'gateway-key: key budgets are enforced, a key with a large budget is measured too' : 'gateway-key: this checkout does not enforce key budgets (a 1-Flux budget let 3 calls through): no budgeted key measured')
    const budgeted = enforced ? await createKey(context, user, 'bench key with a budget', LARGE_BUDGET) : undefined

    const sides: Side[] = [
      { name: 'session token', call: gatewayCall(context, user.token) },
      { name: 'session token again (A/A)', call: gatewayCall(context, user.token) },
      { name: 'key, no budget, no rate limit', call: gatewayCall(context, plain.key) },
      ...(budgeted ? [{ name: `key with a budget (${LARGE_BUDGET.flux.toLocaleString('en-US')} Flux a ${LARGE_BUDGET.period})`, call: gatewayCall(context, budgeted.key) }] : []),
    ]
    // Warm-up: every credential resolved once and cached, connections and JIT warm.
    await interleaved(sides, context.quick ? 10 : 30, 0)

    const session = { p50: [] as number[], p95: [] as number[] }
    const comparisons: Comparison[] = sides.slice(1).map(side => ({ name: side.name, p50: [], p95: [], addedP50: [], addedP95: [], ratioP50: [], ratioP95: [] }))
    for (let round = 0; round < context.rounds; round++) {
      const [base, ...others] = await interleaved(sides, turns, round + 1)
      const baseP50 = percentile(base!, 50)
      const baseP95 = percentile(base!, 95)
      session.p50.push(baseP50)
      session.p95.push(baseP95)
      others.forEach((latencies, index) => {
        const comparison = comparisons[index]!
        comparison.p50.push(percentile(latencies, 50))
        comparison.p95.push(percentile(latencies, 95))
        comparison.addedP50.push(comparison.p50.at(-1)! - baseP50)
        comparison.addedP95.push(comparison.p95.at(-1)! - baseP95)
        comparison.ratioP50.push(ratio(comparison.p50.at(-1)!, baseP50))
        comparison.ratioP95.push(ratio(comparison.p95.at(-1)!, baseP95))
      })
      context.log(`gateway-key round ${round + 1}: session p50 ${formatNumber(baseP50)} ms; ${comparisons.map(c => `${c.name} ${ms(c.addedP50.at(-1)!)} p50, ${ms(c.addedP95.at(-1)!)} p95`).join('; ')}`)
    }

    // The statements each call sends, from Postgres's own log: the part of "no worse" that no noise can hide.
    const statements = async (name: string, token: string) => {
      const captured = await captureCalls(context, () => send(gatewayCall(context, token)))
      context.log(`gateway-key: ${name}, ${formatNumber(captured.perCall)} SQL statements per call; the last call's:\n  ${captured.last.join('\n  ')}`)
      return captured.perCall
    }
    const sql = { session: await statements('session token', user.token), key: await statements('key', plain.key), ...(budgeted ? { budgeted: await statements('key with a budget', budgeted.key) } : {}) }
    const sqlRow: Row = {
      scenario: 'gateway-key',
      metric: `SQL statements per call, key${budgeted ? ' / key with a budget' : ''} vs session token (Postgres statement log)`,
      baseline: `session ${formatNumber(sql.session)}`,
      ours: `${formatNumber(sql.key)}${budgeted ? ` / ${formatNumber(sql.budgeted!)}` : ''}`,
      ratio: formatSigned(Math.max(sql.key, sql.budgeted ?? sql.key) - sql.session),
      target: 'no more',
      met: sql.key <= sql.session && (sql.budgeted ?? sql.key) <= sql.session,
      data: { sessionStatements: sql.session, keyStatements: sql.key, budgetedStatements: sql.budgeted ?? null },
    }

    const [control, ...keys] = comparisons
    return [
      ...keys.flatMap(comparison => comparisonRows(comparison, session, turns, true)),
      ...comparisonRows(control!, session, turns, false),
      sqlRow,
    ]
  },
}
