import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { manualClock } from '@airi/api'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { startTestServer } from './harness.ts'
import { startChildServer, type ChildServer } from './server-process.ts'

/**
 * The durability contract of docs/billing.md: a server killed (SIGKILL) while its
 * ledger writes are grouped into shared statements loses nothing. Every call is
 * either settled or left pending and settled by reconciliation, every call's log
 * row agrees with its ledger rows, and every balance is the end of its chain.
 */

const USERS = 4
/** Calls each user keeps in flight: several of one user, and of several users, share statements. */
const PER_USER = 12
const FLUX = 1_000_000

let database: TestDatabase
let upstream: FakeUpstream
let server: ChildServer | undefined

beforeAll(async () => {
  database = await createTestDatabase()
  upstream = await startFakeOpenAIUpstream({ name: 'crash' })
  // Answers trickle out, so calls are at every stage (reserving, streaming, settling) when the process dies.
  upstream.behave(() => ({ kind: 'complete', content: 'one two three four five six', chunkDelayMs: 3 }))
  await database.db.insertInto('config_entries').values({ key: 'INITIAL_USER_FLUX', value: JSON.stringify(FLUX) }).execute()
  server = await startChildServer(database, {
    OPENAI_API_KEY: 'sk-crash',
    OPENAI_BASE_URL: upstream.url,
    OPENAI_MODEL: 'gpt-4o-mini',
    LLM_RATE_LIMIT_PER_MINUTE: '1000000',
  })
}, 240_000)
afterAll(async () => {
  await server?.stop()
  await upstream?.close()
  await database?.drop()
})

describe('a server killed in the middle of grouped ledger writes', () => {
  it('leaves every call billed or reconciled: log rows agree with the ledger and every balance is exact', async () => {
    const live = server!
    const users = await Promise.all(Array.from({ length: USERS }, () => live.createUser()))
    let killed = false
    let answered = 0
    async function keepCalling(token: string, stream: boolean): Promise<void> {
      while (!killed) {
        try {
          const response = await fetch(`${live.baseUrl}/api/v1/openai/chat/completions`, {
            method: 'POST',
            headers: { 'authorization': `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'chat', stream, messages: [{ role: 'user', content: 'hi' }] }),
          })
          const text = await response.text()
          if (response.status === 200 && (stream ? text.includes('[DONE]') : text.includes('"choices"')))
            answered++
        }
        catch {
          // The connection died with the server.
        }
      }
    }
    const callers = users.flatMap(user => Array.from({ length: PER_USER }, (_, index) => keepCalling(user.token, index % 2 === 0)))

    // Killed once plenty of calls have settled, while the others are under way.
    const settled = () => database.db.selectFrom('llm_request_log').select(sql<number>`count(*)::int`.as('n')).where('state', '=', 'completed').executeTakeFirstOrThrow()
    await until(async () => (await settled()).n >= 150, 'calls to settle before the crash', 120_000)
    await live.stop()
    killed = true
    await Promise.all(callers)
    server = undefined
    expect(answered).toBeGreaterThan(0)

    // Calls were under way: their rows are pending, their reservations taken.
    const { rows: [before] } = await sql<{ pending: number }>`SELECT count(*)::int AS pending FROM llm_request_log WHERE state = 'pending'`.execute(database.db)
    expect(before!.pending).toBeGreaterThan(0)

    // Reconciliation, as the next instance runs it once the calls' deadlines have passed.
    const clock = manualClock()
    clock.advance(60 * 60_000)
    const next = await startTestServer({ database, clock, redisUrl: false })
    try {
      await until(async () => (await next.api.services.llmGateway.reconcilePending({ olderThanMs: 0 })).rows.length === 0, 'reconciliation to settle every pending row', 60_000)
    }
    finally {
      await next.close()
    }

    // Every call is settled, and what its row says it cost is what the ledger moved for it.
    const { rows: calls } = await sql<{ request_id: string, state: string, upstream: string | null, flux_consumed: number, reserved: number | null, settled: number | null, refunded: number | null, error: string | null }>`
      SELECT l.request_id, l.state, l.upstream, l.flux_consumed, r.amount AS reserved, s.amount AS settled, f.amount AS refunded, l.error
      FROM llm_request_log l
      LEFT JOIN flux_transaction r ON r.user_id = l.user_id AND r.request_id = 'llm:' || l.request_id || ':reserve'
      LEFT JOIN flux_transaction s ON s.user_id = l.user_id AND s.request_id = 'llm:' || l.request_id || ':settle'
      LEFT JOIN flux_transaction f ON f.user_id = l.user_id AND f.request_id = 'llm:' || l.request_id || ':refund'`.execute(database.db)
    expect(calls.length).toBeGreaterThan(150)
    const counts = new Map<string, number>()
    for (const call of calls) {
      const outcome = call.error?.startsWith('reconciled') ? call.error : call.state
      counts.set(outcome, (counts.get(outcome) ?? 0) + 1)
    }
    const outcomes = [...counts].map(([outcome, count]) => `${outcome} ${count}`)
    console.warn(`crash: ${answered} answers delivered, ${before!.pending} calls pending at the crash; rows: ${outcomes.join(', ')}`)
    for (const call of calls) {
      expect(call.state, call.request_id).not.toBe('pending')
      expect(call.flux_consumed, call.request_id).toBe((call.reserved ?? 0) + (call.settled ?? 0) - (call.refunded ?? 0))
      // Reconciliation gives back a whole reservation only when nothing had been delivered.
      if (call.error === 'reconciled: refunded')
        expect(call.upstream, call.request_id).toBeNull()
    }
    // No Flux was taken without a row to account for it.
    const { rows: [orphans] } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM flux_transaction t
      WHERE t.request_id LIKE 'llm:%' AND NOT EXISTS (
        SELECT 1 FROM llm_request_log l WHERE l.user_id = t.user_id AND t.request_id LIKE 'llm:' || l.request_id || ':%')`.execute(database.db)
    expect(orphans!.n).toBe(0)

    // Each balance is the end of an unbroken chain, and what the calls cost is what it lost.
    const { rows: audit } = await sql<{ user_id: string, broken: number, end_matches: boolean, spent: number, logged: number }>`
      SELECT f.user_id,
             count(*) FILTER (WHERE t.balance_before IS DISTINCT FROM t.prev_after)::int AS broken,
             (array_agg(t.balance_after ORDER BY t.seq DESC))[1] = f.flux AS end_matches,
             (${FLUX} - f.flux)::int AS spent,
             (SELECT coalesce(sum(flux_consumed), 0)::int FROM llm_request_log l WHERE l.user_id = f.user_id) AS logged
      FROM user_flux f
      JOIN (SELECT *, coalesce(lag(balance_after) OVER (PARTITION BY user_id ORDER BY seq), 0) AS prev_after FROM flux_transaction) t ON t.user_id = f.user_id
      GROUP BY f.user_id, f.flux`.execute(database.db)
    expect(audit).toHaveLength(USERS)
    for (const user of audit)
      expect(user, user.user_id).toMatchObject({ broken: 0, end_matches: true, spent: user.logged })
  }, 300_000)
})
