import { join } from 'node:path'

import { REQUEST_DEADLINE_MS, SERVER_APP, type BenchContext, type Row, type Scenario } from '../context.ts'
import { load, pgbench, pgbenchLength, sequentialLatencies, type HttpCall } from '../load.ts'
import { pgbenchScripts, splitCalls } from '../sql-replay.ts'
import { formatNumber, formatSigned, formatSummary, ratio, summarize, percentile } from '../stats.ts'

const MESSAGES = [{ role: 'user', content: 'hi' }]

function direct(context: BenchContext): HttpCall {
  return {
    method: 'POST',
    url: `${context.infra.fakes.openaiUrl}/chat/completions`,
    headers: { 'content-type': 'application/json', 'authorization': `Bearer ${context.deployment.upstreamKey}` },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: MESSAGES }),
  }
}

function gateway(context: BenchContext, token: string): HttpCall {
  return {
    method: 'POST',
    url: `${context.server.url}/api/v1/openai/chat/completions`,
    headers: { 'content-type': 'application/json', 'authorization': `Bearer ${token}` },
    body: JSON.stringify({ model: context.deployment.model, messages: MESSAGES }),
  }
}

const ms = (value: number) => `${formatSigned(value)} ms`

export const gatewayLatency: Scenario = {
  name: 'gateway-latency',
  quick: true,
  async run(context): Promise<Row[]> {
    const count = context.quick ? 100 : 1000
    const user = context.deployment.users[0]!
    await sequentialLatencies(direct(context), 30)
    await sequentialLatencies(gateway(context, user.token), 30)
    const rounds = { directP50: [] as number[], directP99: [] as number[], oursP50: [] as number[], oursP99: [] as number[], addedP50: [] as number[], addedP99: [] as number[] }
    for (let round = 0; round < context.rounds; round++) {
      const base = await sequentialLatencies(direct(context), count)
      const ours = await sequentialLatencies(gateway(context, user.token), count)
      rounds.directP50.push(percentile(base, 50))
      rounds.directP99.push(percentile(base, 99))
      rounds.oursP50.push(percentile(ours, 50))
      rounds.oursP99.push(percentile(ours, 99))
      rounds.addedP50.push(percentile(ours, 50) - percentile(base, 50))
      rounds.addedP99.push(percentile(ours, 99) - percentile(base, 99))
      context.log(`gateway-latency round ${round + 1}: added p50 ${ms(rounds.addedP50.at(-1)!)}, p99 ${ms(rounds.addedP99.at(-1)!)}`)
    }
    const addedP50 = summarize(rounds.addedP50)
    const addedP99 = summarize(rounds.addedP99)
    return [
      {
        scenario: 'gateway-latency',
        metric: `c=1 p50 (${count} calls/round)`,
        baseline: `direct ${formatSummary(summarize(rounds.directP50), 'ms')}`,
        ours: formatSummary(summarize(rounds.oursP50), 'ms'),
        ratio: ms(addedP50.median),
        target: 'added ≤ 1 ms',
        met: addedP50.median <= 1,
        data: { directP50: summarize(rounds.directP50), oursP50: summarize(rounds.oursP50), addedP50 },
      },
      {
        scenario: 'gateway-latency',
        metric: 'c=1 p99',
        baseline: `direct ${formatSummary(summarize(rounds.directP99), 'ms')}`,
        ours: formatSummary(summarize(rounds.oursP99), 'ms'),
        ratio: ms(addedP99.median),
        target: 'added ≤ 3 ms',
        met: addedP99.median <= 3,
        data: { directP99: summarize(rounds.directP99), oursP99: summarize(rounds.oursP99), addedP99 },
      },
    ]
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

async function send(call: HttpCall): Promise<void> {
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
    const headersFor = (index: number) => ({ authorization: `Bearer ${users[index % connections]!.token}` })
    for (let round = 0; round < context.rounds; round++) {
      const base = await load(direct(context), { connections, seconds })
      rounds.directRps.push(base.requestsPerSecond)
      rounds.directP99.push(base.p99)
      if (context.pgbench) {
        const ceiling = await pgbench(context.pgbench, context.databaseUrl, scripts, join(context.infra.root, 'pgbench-gateway'), connections, pgbenchLength(seconds, pgbenchTransactions))
        rounds.pgbenchTps.push(ceiling.tps)
      }
      const ours = await load(gateway(context, captureUser.token), { connections, seconds, headersFor })
      rounds.oursRps.push(ours.requestsPerSecond)
      rounds.oursP99.push(ours.p99)
      rounds.errors += ours.errors + ours.non2xx
      context.log(`gateway-throughput round ${round + 1}: direct ${formatNumber(base.requestsPerSecond)} req/s, pgbench ${formatNumber(rounds.pgbenchTps.at(-1) ?? Number.NaN)} tps, gateway ${formatNumber(ours.requestsPerSecond)} req/s (p99 ${ours.p99} ms, ${ours.errors + ours.non2xx} failed)`)
    }
    const ceiling = summarize(rounds.pgbenchTps)
    const ours = summarize(rounds.oursRps)
    const share = ratio(ours.median, ceiling.median)
    const addedP99 = summarize(rounds.oursP99.map((value, index) => value - rounds.directP99[index]!))
    return [
      {
        scenario: 'gateway-throughput',
        metric: `c=${connections}, ${connections} users, vs pgbench of its SQL`,
        baseline: context.pgbench ? formatSummary(ceiling, 'tps') : 'no pgbench',
        ours: formatSummary(ours, 'req/s'),
        ratio: formatNumber(share),
        target: '≥ 0.60',
        met: Number.isFinite(share) ? share >= 0.6 : null,
        data: { pgbenchTps: ceiling, oursRps: ours, failedCalls: rounds.errors },
      },
      {
        scenario: 'gateway-throughput',
        metric: `c=${connections} vs direct to the fake`,
        baseline: formatSummary(summarize(rounds.directRps), 'req/s'),
        ours: formatSummary(ours, 'req/s'),
        ratio: formatNumber(ratio(ours.median, summarize(rounds.directRps).median)),
        target: '—',
        met: null,
        data: { directRps: summarize(rounds.directRps) },
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
