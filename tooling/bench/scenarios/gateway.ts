import { join } from 'node:path'

import { billingData, checkBilling, combineChecks, describeBilling, markLedger, type BillingCheck } from '../billing-check.ts'
import { REQUEST_DEADLINE_MS, SERVER_APP, type BenchContext, type Row, type Scenario } from '../context.ts'
import { load, pgbench, pgbenchLength, sequentialLatencies, type HttpCall, type LoadResult } from '../load.ts'
import { pgbenchScripts, splitCalls } from '../sql-replay.ts'
import { formatNumber, formatSigned, formatSummary, ratio, summarize, percentile } from '../stats.ts'

const MESSAGES = [{ role: 'user', content: 'hi' }]

function direct(context: BenchContext, { stream = false } = {}): HttpCall {
  return {
    method: 'POST',
    url: `${context.infra.fakes.openaiUrl}/chat/completions`,
    headers: { 'content-type': 'application/json', 'authorization': `Bearer ${context.deployment.upstreamKey}` },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: MESSAGES, ...(stream ? { stream: true } : {}) }),
  }
}

/** gateway-latency's request through our gateway with `token` as the bearer (a session token or a personal API key). */
export function gateway(context: BenchContext, token: string, { stream = false } = {}): HttpCall {
  return {
    method: 'POST',
    url: `${context.server.url}/api/v1/openai/chat/completions`,
    headers: { 'content-type': 'application/json', 'authorization': `Bearer ${token}` },
    body: JSON.stringify({ model: context.deployment.model, messages: MESSAGES, ...(stream ? { stream: true } : {}) }),
  }
}

const ms = (value: number) => `${formatSigned(value)} ms`

interface PairedRounds {
  directP50: number[]
  directP99: number[]
  oursP50: number[]
  oursP99: number[]
  addedP50: number[]
  addedP99: number[]
}

/**
 * Paired rounds of `count` sequential calls (direct, then ours, each round) after
 * 30 warm-up calls of each, timed to the end of the body or to its first bytes.
 */
async function pairedSequential(context: BenchContext, name: string, base: HttpCall, ours: HttpCall, count: number, to: 'end' | 'first-byte'): Promise<PairedRounds> {
  await sequentialLatencies(base, 30, { to })
  await sequentialLatencies(ours, 30, { to })
  const rounds: PairedRounds = { directP50: [], directP99: [], oursP50: [], oursP99: [], addedP50: [], addedP99: [] }
  for (let round = 0; round < context.rounds; round++) {
    const baseline = await sequentialLatencies(base, count, { to })
    const mine = await sequentialLatencies(ours, count, { to })
    rounds.directP50.push(percentile(baseline, 50))
    rounds.directP99.push(percentile(baseline, 99))
    rounds.oursP50.push(percentile(mine, 50))
    rounds.oursP99.push(percentile(mine, 99))
    rounds.addedP50.push(percentile(mine, 50) - percentile(baseline, 50))
    rounds.addedP99.push(percentile(mine, 99) - percentile(baseline, 99))
    context.log(`${name} round ${round + 1}: added p50 ${ms(rounds.addedP50.at(-1)!)}, p99 ${ms(rounds.addedP99.at(-1)!)}`)
  }
  return rounds
}

/** The p50 and p99 rows of paired sequential rounds; a target of `null` leaves that percentile unchecked. */
function latencyRows(scenario: string, metrics: { p50: string, p99: string }, rounds: PairedRounds, targets: { p50: number | null, p99: number | null }): Row[] {
  return (['p50', 'p99'] as const).map((p) => {
    const direct = summarize(p === 'p50' ? rounds.directP50 : rounds.directP99)
    const ours = summarize(p === 'p50' ? rounds.oursP50 : rounds.oursP99)
    const added = summarize(p === 'p50' ? rounds.addedP50 : rounds.addedP99)
    const target = targets[p]
    const key = p.toUpperCase()
    return {
      scenario,
      metric: metrics[p],
      baseline: `direct ${formatSummary(direct, 'ms')}`,
      ours: formatSummary(ours, 'ms'),
      ratio: ms(added.median),
      target: target === null ? '—' : `added ≤ ${target} ms`,
      met: target === null ? null : added.median <= target,
      data: { [`direct${key}`]: direct, [`ours${key}`]: ours, [`added${key}`]: added },
    }
  })
}

export const gatewayLatency: Scenario = {
  name: 'gateway-latency',
  quick: true,
  async run(context): Promise<Row[]> {
    const count = context.quick ? 100 : 1000
    const user = context.deployment.users[0]!
    const rounds = await pairedSequential(context, 'gateway-latency', direct(context), gateway(context, user.token), count, 'end')
    return latencyRows('gateway-latency', { p50: `c=1 p50 (${count} calls/round)`, p99: 'c=1 p99' }, rounds, { p50: 1, p99: 3 })
  },
}

/** Fails unless `call` answers 200 with an SSE stream to its `[DONE]`: a first byte timed on anything else would not be a stream's. */
async function expectStream(call: HttpCall): Promise<void> {
  const response = await fetch(call.url, { method: call.method, headers: call.headers, body: call.body, signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
  const body = await response.text()
  const type = response.headers.get('content-type') ?? ''
  if (!response.ok || !type.startsWith('text/event-stream') || !body.includes('data: [DONE]'))
    throw new Error(`${call.url} did not stream: ${response.status} ${type} ${body.slice(0, 200)}`)
}

/**
 * c=1 streamed calls (`stream: true`), each timed from sending to the first bytes
 * of the SSE body (the role chunk), paired with the same stream straight from the fake.
 */
export const gatewayStream: Scenario = {
  name: 'gateway-stream',
  quick: true,
  async run(context): Promise<Row[]> {
    const count = context.quick ? 100 : 1000
    const user = context.deployment.users[0]!
    const base = direct(context, { stream: true })
    const ours = gateway(context, user.token, { stream: true })
    await expectStream(base)
    await expectStream(ours)
    const rounds = await pairedSequential(context, 'gateway-stream', base, ours, count, 'first-byte')
    return latencyRows('gateway-stream', { p50: `streamed, c=1, time to first byte p50 (${count} calls/round)`, p99: 'streamed, c=1, time to first byte p99' }, rounds, { p50: 1, p99: null })
  },
}

const BOUNDARY = 'bench-call-boundary'

/**
 * Captures the statements the server sends for `calls` sequential calls of
 * `call` (after one warm-up), split per call. Returns the statements per call
 * (all of them, averaged) and the last call's statements (warm caches).
 */
export async function captureCalls(context: BenchContext, call: () => Promise<void>, calls = 5): Promise<{ perCall: number, last: string[] }> {
  await call()
  const statements = await context.infra.postgres.capture(async () => {
    for (let index = 0; index < calls; index++) {
      await context.infra.postgres.query(`SELECT '${BOUNDARY}'`)
      await call()
    }
    await context.infra.postgres.query(`SELECT '${BOUNDARY}'`)
  })
  const perCallStatements = splitCalls(statements, SERVER_APP, BOUNDARY)
  const total = statements.filter(statement => statement.app === SERVER_APP).length
  return { perCall: total / calls, last: perCallStatements.at(-1) ?? [] }
}

export async function send(call: HttpCall): Promise<void> {
  const response = await fetch(call.url, { method: call.method, headers: call.headers, body: call.body, signal: AbortSignal.timeout(REQUEST_DEADLINE_MS) })
  await response.arrayBuffer()
  if (!response.ok)
    throw new Error(`${call.url} answered ${response.status}`)
}

export const gatewayThroughput: Scenario = {
  name: 'gateway-throughput',
  quick: true,
  async run(context): Promise<Row[]> {
    const users = context.deployment.users
    const connections = Math.min(100, users.length)
    const seconds = context.quick ? 2 : 5
    // pgbench by count in --quick (see pgbench); autocannon by time, for rates.
    const pgbenchTransactions = context.quick ? 300 : undefined
    const captureUser = users[0]!
    const captured = await captureCalls(context, () => send(gateway(context, captureUser.token)))
    context.log(`gateway: ${formatNumber(captured.perCall)} SQL statements per call; the last call's:\n  ${captured.last.join('\n  ')}`)

    const identities = users.slice(0, connections).map(user => ({ id: user.id, sessionToken: user.sessionToken }))
    const scripts = pgbenchScripts(captured.last, { id: captureUser.id, sessionToken: captureUser.sessionToken }, identities)

    const rounds = { directRps: [] as number[], directP99: [] as number[], pgbenchTps: [] as number[], oursRps: [] as number[], oursP99: [] as number[], errors: 0 }
    const checks: BillingCheck[] = []
    const headersFor = (index: number) => ({ authorization: `Bearer ${users[index % connections]!.token}` })
    for (let round = 0; round < context.rounds; round++) {
      const base = await load(direct(context), { connections, seconds })
      rounds.directRps.push(base.requestsPerSecond)
      rounds.directP99.push(base.p99)
      if (context.pgbench) {
        const ceiling = await pgbench(context.pgbench, context.databaseUrl, scripts, join(context.infra.root, 'pgbench-gateway'), connections, pgbenchLength(seconds, pgbenchTransactions))
        rounds.pgbenchTps.push(ceiling.tps)
      }
      const { result: ours, check } = await billedLoad(context, identities.map(identity => identity.id), () => load(gateway(context, captureUser.token), { connections, seconds, headersFor }))
      checks.push(check)
      rounds.oursRps.push(ours.requestsPerSecond)
      rounds.oursP99.push(ours.p99)
      rounds.errors += ours.errors + ours.non2xx
      context.log(`gateway-throughput round ${round + 1}: direct ${formatNumber(base.requestsPerSecond)} req/s, pgbench ${formatNumber(rounds.pgbenchTps.at(-1) ?? Number.NaN)} tps, gateway ${formatNumber(ours.requestsPerSecond)} req/s (p99 ${ours.p99} ms, ${ours.errors + ours.non2xx} failed; ${describeBilling(check)}, ${check.calls} calls)`)
    }
    const ceiling = summarize(rounds.pgbenchTps)
    const ours = summarize(rounds.oursRps)
    const share = ratio(ours.median, ceiling.median)
    const addedP99 = summarize(rounds.oursP99.map((value, index) => value - rounds.directP99[index]!))
    const directRps = summarize(rounds.directRps)
    const billing = combineChecks(checks)
    return [
      {
        scenario: 'gateway-throughput',
        metric: `c=${connections}, ${connections} users, vs direct to the fake`,
        baseline: formatSummary(directRps, 'req/s'),
        ours: `${formatSummary(ours, 'req/s')}; ${describeBilling(billing)}`,
        ratio: formatNumber(ratio(ours.median, directRps.median)),
        target: `≥ 2 000 req/s with exact billing`,
        met: ours.median >= 2000 && billing.exact,
        data: { directRps, oursRps: ours, ...billingData(billing) },
      },
      {
        scenario: 'gateway-throughput',
        // pgbench sends the captured statements one call at a time and plans each
        // again; the server groups calls into prepared statements, so this is a
        // reference, not a ceiling (docs/performance.md).
        metric: `c=${connections}, ${connections} users, vs pgbench of one call's SQL at a time`,
        baseline: context.pgbench ? formatSummary(ceiling, 'tps') : 'no pgbench',
        ours: formatSummary(ours, 'req/s'),
        ratio: formatNumber(share),
        target: 'reported',
        met: null,
        data: { pgbenchTps: ceiling, oursRps: ours, failedCalls: rounds.errors },
      },
      {
        scenario: 'gateway-throughput',
        metric: `c=${connections} p99`,
        baseline: `direct ${formatSummary(summarize(rounds.directP99), 'ms')}`,
        ours: formatSummary(summarize(rounds.oursP99), 'ms'),
        ratio: ms(addedP99.median),
        target: 'added ≤ 10 ms below saturation (c=100 saturates: not checked)',
        met: null,
        data: { directP99: summarize(rounds.directP99), oursP99: summarize(rounds.oursP99), addedP99 },
      },
      {
        scenario: 'gateway-sql',
        metric: 'SQL statements per call (Postgres statement log)',
        baseline: '—',
        ours: formatNumber(captured.perCall),
        ratio: '—',
        target: '—',
        met: null,
        data: { statementsPerCall: captured.perCall, lastCall: captured.last.join(';\n') },
      },
    ]
  },
}

/** Runs `work` (a load of `userIds`' calls) between a mark of their ledger and the check of what it billed. */
async function billedLoad(context: BenchContext, userIds: string[], work: () => Promise<LoadResult>): Promise<{ result: LoadResult, check: BillingCheck }> {
  const mark = await markLedger(context.db, userIds)
  const result = await work()
  return { result, check: await checkBilling(context.db, mark, result.errors + result.non2xx) }
}

/**
 * c=10, every connection the same user's: one balance row taking all the writes
 * (the hot user), against the fake straight at c=10; billing checked as at c=100.
 */
export const gatewayOneUser: Scenario = {
  name: 'gateway-one-user',
  quick: true,
  async run(context): Promise<Row[]> {
    const connections = 10
    const seconds = context.quick ? 2 : 5
    const user = context.deployment.users.at(-1)!
    await sequentialLatencies(direct(context), 30)
    await sequentialLatencies(gateway(context, user.token), 30)
    const rounds = { directRps: [] as number[], oursRps: [] as number[], oursP50: [] as number[], oursP99: [] as number[] }
    const checks: BillingCheck[] = []
    for (let round = 0; round < context.rounds; round++) {
      const base = await load(direct(context), { connections, seconds })
      rounds.directRps.push(base.requestsPerSecond)
      const { result: ours, check } = await billedLoad(context, [user.id], () => load(gateway(context, user.token), { connections, seconds }))
      checks.push(check)
      rounds.oursRps.push(ours.requestsPerSecond)
      rounds.oursP50.push(ours.p50)
      rounds.oursP99.push(ours.p99)
      context.log(`gateway-one-user round ${round + 1}: direct ${formatNumber(base.requestsPerSecond)} req/s, gateway ${formatNumber(ours.requestsPerSecond)} req/s (p50 ${ours.p50} ms, p99 ${ours.p99} ms, ${ours.errors + ours.non2xx} failed; ${describeBilling(check)}, ${check.calls} calls)`)
    }
    const directRps = summarize(rounds.directRps)
    const ours = summarize(rounds.oursRps)
    const billing = combineChecks(checks)
    return [{
      scenario: 'gateway-one-user',
      metric: `c=${connections}, one user, vs direct to the fake at c=${connections}`,
      baseline: formatSummary(directRps, 'req/s'),
      ours: `${formatSummary(ours, 'req/s')}; ${describeBilling(billing)}`,
      ratio: formatNumber(ratio(ours.median, directRps.median)),
      target: '≥ 1 000 req/s',
      met: ours.median >= 1000 && billing.exact,
      data: { directRps, oursRps: ours, oursP50: summarize(rounds.oursP50), oursP99: summarize(rounds.oursP99), ...billingData(billing) },
    }]
  },
}
