import { randomUUID } from 'node:crypto'

import { createDb, type Db } from '@airi/db'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'

import { createMemoryAdapters } from '../../adapters/memory.ts'
import { ApiError } from '../../errors.ts'
import { silentLogger } from '../../logger.ts'
import { createMetrics } from '../../metrics.ts'
import { createBillingService, type BillingService, type CompanionKind } from './ledger.ts'

const INITIAL = 100

let database: TestDatabase
/** The ledger's statements (those that write `flux_transaction`), counted on a pool of its own. */
let counted: { db: Db, statements: () => number, reset: () => void }
let billing: BillingService

beforeAll(async () => {
  database = await createTestDatabase()
  let statements = 0
  const db = createDb({ connectionString: database.url, onQuery: (text) => {
    if (text.includes('INSERT INTO flux_transaction ('))
      statements++
  } })
  counted = { db, statements: () => statements, reset: () => { statements = 0 } }
  billing = createBillingService({ db, cache: createMemoryAdapters().cache, logger: silentLogger, metrics: createMetrics(), initialFlux: async () => INITIAL })
})
afterAll(async () => {
  await counted.db.destroy()
  await database.drop()
})

/** Companion rows in the request log, `flux_reserved` being what the write moved. */
const logRows: CompanionKind = {
  name: 'test_log',
  columns: { user_id: 'text', kind: 'text' },
  statement: rows => sql`INSERT INTO llm_request_log (id, user_id, request_id, model, kind, state, flux_reserved)
    SELECT gen_random_uuid()::text, r.user_id, 'group-commit', 'test', r.kind, 'pending', r.moved FROM ${rows} r`,
}

const newUsers = (count: number) => Array.from({ length: count }, () => `user-${randomUUID()}`)

async function balances(userIds: string[]): Promise<Map<string, number>> {
  const rows = await database.db.selectFrom('user_flux').select(['user_id', 'flux']).where('user_id', 'in', userIds).execute()
  return new Map(rows.map(row => [row.user_id, row.flux]))
}

/** Per user: the ledger is an unbroken chain that ends at the balance. */
async function expectChains(userIds: string[]): Promise<void> {
  const { rows } = await sql<{ user_id: string, broken: number, end_matches: boolean }>`
    SELECT f.user_id,
           count(*) FILTER (WHERE t.balance_before IS DISTINCT FROM t.prev_after)::int AS broken,
           (array_agg(t.balance_after ORDER BY t.seq DESC))[1] = f.flux AS end_matches
    FROM user_flux f
    JOIN (SELECT *, coalesce(lag(balance_after) OVER (PARTITION BY user_id ORDER BY seq), 0) AS prev_after FROM flux_transaction) t ON t.user_id = f.user_id
    WHERE f.user_id IN (${sql.join(userIds)})
    GROUP BY f.user_id, f.flux`.execute(database.db)
  expect(rows).toHaveLength(userIds.length)
  for (const row of rows)
    expect(row, row.user_id).toMatchObject({ broken: 0, end_matches: true })
}

describe('group commit', () => {
  it('carries the writes that arrive together in few statements, each write with its own result', async () => {
    const users = newUsers(200)
    await Promise.all(users.map(userId => billing.getBalance(userId)))
    counted.reset()

    const entries = await Promise.all(users.map((userId, index) => billing.debit({ userId, amount: index % 10 + 1, requestId: 'together' })))

    // Four go out at once, alone; the rest queue behind them and go out together.
    expect(counted.statements()).toBeLessThan(50)
    entries.forEach((entry, index) => expect(entry).toMatchObject({ userId: users[index], amount: index % 10 + 1, balanceBefore: INITIAL, balanceAfter: INITIAL - (index % 10 + 1) }))
    const after = await balances(users)
    users.forEach((userId, index) => expect(after.get(userId)).toBe(INITIAL - (index % 10 + 1)))
    await expectChains(users)
  })

  it('gives each write of one statement its own outcome: written, replayed, refused (402), refused replay (409), and a first write that opens its account', async () => {
    const [rich, replayed, poor, meter] = newUsers(4)
    const fresh = newUsers(1)[0]!
    await Promise.all([rich!, replayed!, poor!, meter!].map(userId => billing.getBalance(userId)))
    await billing.debit({ userId: replayed!, amount: 7, requestId: 'once' })
    await billing.debit({ userId: meter!, amount: 2, requestId: 'meter-call' })
    await billing.debit({ userId: poor!, amount: INITIAL, requestId: 'drain' })
    // Fill the statements in flight so the next five queue and go out as one.
    const blockers = newUsers(4)
    await Promise.all(blockers.map(userId => billing.getBalance(userId)))
    counted.reset()

    const outcomes = await Promise.allSettled([
      ...blockers.map(userId => billing.credit({ userId, amount: 1, requestId: 'blocker' })),
      billing.debit({ userId: rich!, amount: 5, requestId: 'spend' }),
      billing.debit({ userId: replayed!, amount: 99, requestId: 'once' }),
      billing.debit({ userId: poor!, amount: 1, requestId: 'more' }),
      billing.debit({ userId: meter!, amount: 2, requestId: 'meter-call', refuseReplay: true }),
      billing.credit({ userId: fresh, amount: 3, requestId: 'gift' }),
    ])
    const [spend, replay, refused, reused, gift] = outcomes.slice(4)
    // The four blockers alone, the five together, and the fresh user's write once more after opening its account.
    expect(counted.statements()).toBe(6)
    expect(spend).toMatchObject({ status: 'fulfilled', value: { amount: 5, balanceAfter: INITIAL - 5 } })
    expect(replay).toMatchObject({ status: 'fulfilled', value: { amount: 7, balanceAfter: INITIAL - 7 } })
    expect(refused).toMatchObject({ status: 'rejected', reason: { status: 402, code: 'INSUFFICIENT_FLUX' } })
    expect(reused).toMatchObject({ status: 'rejected', reason: { status: 409, code: 'REQUEST_ID_REUSED' } })
    expect(gift).toMatchObject({ status: 'fulfilled', value: { amount: 3, balanceBefore: INITIAL, balanceAfter: INITIAL + 3 } })
    await expectChains([rich!, replayed!, poor!, meter!, fresh, ...blockers])
  })

  it('a write whose own part of the statement fails fails alone: the others of its statement are written', async () => {
    const users = newUsers(40)
    await Promise.all(users.map(userId => billing.getBalance(userId)))
    const failing = users[25]!

    const outcomes = await Promise.allSettled(users.map(userId => billing.debit({
      userId,
      amount: 1,
      requestId: 'with-alongside',
      // The failing write's own row breaks a CHECK constraint (an unknown kind).
      alongside: { kind: logRows, row: { user_id: userId, kind: userId === failing ? 'bogus' : 'llm' } },
    })))

    outcomes.forEach((outcome, index) => {
      if (users[index] === failing)
        expect(outcome.status === 'rejected' && !(outcome.reason instanceof ApiError)).toBe(true)
      else
        expect(outcome, users[index]).toMatchObject({ status: 'fulfilled', value: { amount: 1, balanceAfter: INITIAL - 1 } })
    })
    const after = await balances(users)
    expect(after.get(failing)).toBe(INITIAL)
    const logged = await database.db.selectFrom('llm_request_log').select(['user_id', 'flux_reserved']).where('request_id', '=', 'group-commit').execute()
    expect(logged.map(row => row.user_id).sort()).toEqual(users.filter(userId => userId !== failing).sort())
    expect(new Set(logged.map(row => row.flux_reserved))).toEqual(new Set([1]))
    expect(users.filter(userId => after.get(userId) === INITIAL - 1)).toHaveLength(users.length - 1)
    await expectChains(users)
  })

  it('several writes of one user among others apply in order of arrival, together, and the chains stay exact', async () => {
    const users = newUsers(20)
    await Promise.all(users.map(userId => billing.getBalance(userId)))
    const writes = users.flatMap(userId => Array.from({ length: 10 }, (_, index) => ({ userId, index })))
    counted.reset()
    const outcomes = await Promise.allSettled(writes.map(({ userId, index }) => index % 3 === 0
      ? billing.credit({ userId, amount: 2, requestId: `w-${index}` })
      : billing.debit({ userId, amount: 20, requestId: `w-${index}`, allowPartial: false })))

    // A user's next writes wait while one of its writes is in flight, then go out together.
    expect(counted.statements()).toBeLessThan(writes.length / 4)
    const after = await balances(users)
    for (const userId of users) {
      const mine = outcomes.filter((_, k) => writes[k]!.userId === userId)
      const moved = mine.reduce((sum, outcome, index) => outcome.status !== 'fulfilled' ? sum : sum + (index % 3 === 0 ? 2 : -20), 0)
      expect(after.get(userId)).toBe(INITIAL + moved)
      // In arrival order: 100 +2 −20 −20 +2 −20 −20 +2 −20, then −20 on 6 is a 402, then +2.
      expect(mine.map(outcome => outcome.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
    }
    await expectChains(users)
  })
})

describe('the write statement\'s plan', () => {
  it('is planned once per connection (Postgres keeps the generic plan) and finds balances and replays through their indexes', async () => {
    let text = ''
    const db = createDb({ connectionString: database.url, maxConnections: 1, onQuery: (query) => {
      if (query.startsWith('/* prepared */') && query.includes('INSERT INTO flux_transaction ('))
        text = query
    } })
    try {
      const ledger = createBillingService({ db, cache: createMemoryAdapters().cache, logger: silentLogger, metrics: createMetrics(), initialFlux: async () => INITIAL })
      const [userId] = newUsers(1)
      await ledger.getBalance(userId!)
      for (let index = 0; index < 12; index++)
        await ledger.debit({ userId: userId!, amount: 1, requestId: `plan-${index}`, alongside: { kind: logRows, row: { user_id: userId!, kind: 'llm' } } })

      // Planned for its values the first five times; after that only a cached plan as cheap as those is kept.
      const { rows: [statement] } = await sql<{ generic_plans: number, custom_plans: number }>`
        SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%INSERT INTO flux_transaction (%'`.execute(db)
      expect(statement).toMatchObject({ generic_plans: 12 - 5, custom_plans: 5 })

      // The tables of a fresh database are tiny; the lookups must not become scans that grow with them.
      const { rows } = await sql.raw<{ 'QUERY PLAN': string }>(`EXPLAIN (GENERIC_PLAN) ${text}`).execute(db)
      const plan = rows.map(row => row['QUERY PLAN']).join('\n')
      expect(plan).toMatch(/Index Scan using user_flux_pkey on user_flux/)
      expect(plan).toMatch(/Index Scan using flux_transaction_user_request_uidx on flux_transaction/)
      expect(plan).not.toMatch(/Seq Scan on flux_transaction/)
    }
    finally {
      await db.destroy()
    }
  })
})
