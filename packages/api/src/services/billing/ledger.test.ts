import { randomUUID } from 'node:crypto'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { cacheBarrier } from '@airi/tooling/test/cache-barrier'
import { createTestMeter } from '@airi/tooling/test/metrics'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'

import { createMemoryAdapters } from '../../adapters/memory.ts'
import type { Adapters } from '../../adapters/ports.ts'
import { createRedisAdapters } from '../../adapters/redis.ts'
import { keys } from '../../adapters/keys.ts'
import { ApiError } from '../../errors.ts'
import { silentLogger } from '../../logger.ts'
import { createMetrics } from '../../metrics.ts'
import { createBillingService, type BillingService, type LedgerEntry } from './ledger.ts'
import { createFluxMeterFactory } from './meter.ts'

const INITIAL = 100

let database: TestDatabase
let redis: Adapters
let billing: BillingService

beforeAll(async () => {
  database = await createTestDatabase()
  redis = await createRedisAdapters({ url: inject('redisUrl'), prefix: testRedisPrefix() })
  billing = createBillingService({ db: database.db, cache: redis.cache, logger: silentLogger, metrics: createMetrics(), initialFlux: async () => INITIAL })
})
afterAll(async () => {
  await redis.close()
  await database.drop()
})

const newUser = () => `user-${randomUUID()}`

async function ledger(userId: string) {
  return database.db.selectFrom('flux_transaction').selectAll().where('user_id', '=', userId).orderBy('seq').execute()
}

async function storedBalance(userId: string): Promise<number> {
  return (await database.db.selectFrom('user_flux').select('flux').where('user_id', '=', userId).executeTakeFirstOrThrow()).flux
}

/** In ledger order, each row starts where the previous one ended, moves exactly its amount, and the last one ends at the balance. */
function expectConsistentChain(rows: Array<{ balance_before: number, balance_after: number, amount: number, type: string }>, finalBalance: number) {
  let balance = 0
  for (const [index, row] of rows.entries()) {
    expect(row.balance_before, `row ${index} starts where row ${index - 1} ended`).toBe(balance)
    // A difference, not a negation: a debit of 0 (served usage on an empty balance) moves nothing, and -0 is no 0 to toBe.
    expect(row.balance_after - row.balance_before + (row.type === 'debit' ? row.amount : -row.amount)).toBe(0)
    expect(row.balance_after).toBeGreaterThanOrEqual(0)
    balance = row.balance_after
  }
  expect(balance).toBe(finalBalance)
}

describe('balance', () => {
  it('creates the account with INITIAL_USER_FLUX and one initial ledger row, exactly once under 50 racing first reads', async () => {
    const { reader, meter } = createTestMeter()
    const counted = createBillingService({ db: database.db, cache: redis.cache, logger: silentLogger, metrics: createMetrics(meter), initialFlux: async () => INITIAL })
    const userId = newUser()
    const balances = await Promise.all(Array.from({ length: 50 }, () => counted.getBalance(userId)))
    expect(new Set(balances)).toEqual(new Set([INITIAL]))
    const rows = await ledger(userId)
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ type: 'initial', amount: INITIAL, balance_before: 0, balance_after: INITIAL })
    expect(await reader.counter('airi.billing.flux.credited')).toBe(INITIAL)
  })

  it('opens the account on a first write too', async () => {
    const userId = newUser()
    const entry = await billing.debit({ userId, amount: 4, requestId: 'first-ever' })
    expect(entry).toMatchObject({ balanceBefore: INITIAL, balanceAfter: INITIAL - 4 })
    expect((await ledger(userId)).map(row => row.type)).toEqual(['initial', 'debit'])
  })

  it('reads through the cache and sees every write at once', async () => {
    const userId = newUser()
    expect(await billing.getBalance(userId)).toBe(INITIAL)
    expect((await redis.cache.read(keys.userFlux(userId))).value).toBe(String(INITIAL))
    await billing.debit({ userId, amount: 30, requestId: 'r1' })
    expect((await redis.cache.read(keys.userFlux(userId))).value).toBeNull()
    expect(await billing.getBalance(userId)).toBe(70)
  })
})

describe('debit', () => {
  it('500 concurrent debits of 1 against a balance of 100: exactly 100 succeed, the rest 402', async () => {
    const userId = newUser()
    await billing.getBalance(userId)
    const outcomes = await Promise.allSettled(Array.from({ length: 500 }, (_, i) => billing.debit({ userId, amount: 1, requestId: `burst-${i}` })))
    const succeeded = outcomes.filter(outcome => outcome.status === 'fulfilled')
    const refused = outcomes.filter(outcome => outcome.status === 'rejected') as PromiseRejectedResult[]
    expect(succeeded).toHaveLength(100)
    expect(refused).toHaveLength(400)
    for (const failure of refused)
      expect(failure.reason).toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX' })

    expect(await storedBalance(userId)).toBe(0)
    const debits = (await ledger(userId)).filter(row => row.type === 'debit')
    expect(debits).toHaveLength(100)
    expect(debits.reduce((sum, row) => sum + row.amount, 0)).toBe(100)
    expectConsistentChain(await ledger(userId), 0)
  })

  it('the same requestId debited 50 times concurrently: one ledger row, one balance change, 50 identical answers', async () => {
    const userId = newUser()
    await billing.getBalance(userId)
    const answers = await Promise.all(Array.from({ length: 50 }, () => billing.debit({ userId, amount: 7, requestId: 'same-request' })))
    for (const answer of answers)
      expect(answer).toEqual(answers[0])
    expect(answers[0]).toMatchObject({ type: 'debit', amount: 7, balanceBefore: INITIAL, balanceAfter: INITIAL - 7, requestId: 'same-request' })
    expect((await ledger(userId)).filter(row => row.type === 'debit')).toHaveLength(1)
    expect(await storedBalance(userId)).toBe(INITIAL - 7)
  })

  it('drains a short balance to 0, recording requestedAmount and unbilled; then refuses with 402', async () => {
    const userId = newUser()
    await billing.getBalance(userId)
    const entry = await billing.debit({ userId, amount: 130, requestId: 'big', metadata: { model: 'm' } })
    expect(entry).toMatchObject({ amount: 100, balanceBefore: 100, balanceAfter: 0, metadata: { model: 'm', requestedAmount: 130, unbilled: 30 } })
    const refused = await billing.debit({ userId, amount: 1, requestId: 'after' }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(ApiError)
    expect(refused).toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX', details: { balance: 0, requested: 1 } })
    expect(await ledger(userId)).toHaveLength(2)
  })

  it('a replay answers the first result even after the balance moved, and writes nothing', async () => {
    const userId = newUser()
    const first = await billing.debit({ userId, amount: 10, requestId: 'once' })
    await billing.credit({ userId, amount: 5, requestId: 'top-up' })
    const replay = await billing.debit({ userId, amount: 10, requestId: 'once' })
    expect(replay).toEqual(first)
    expect(await storedBalance(userId)).toBe(INITIAL - 10 + 5)
  })

  it('refuses amounts that are not positive whole numbers', async () => {
    for (const amount of [0, -1, 1.5, Number.NaN])
      await expect(billing.debit({ userId: newUser(), amount, requestId: 'x' })).rejects.toMatchObject({ status: 400, code: 'INVALID_AMOUNT' })
  })

  it('a hold (atLeast) takes the amount, or the whole balance down to atLeast, owing nothing; below atLeast it is a 402', async () => {
    const userId = newUser()
    await billing.debit({ userId, amount: 60, requestId: 'leave-40' })
    expect(await billing.debit({ userId, amount: 30, atLeast: 10, requestId: 'hold-1' })).toMatchObject({ amount: 30, balanceAfter: 10, metadata: null })
    // 10 left: the whole of it, and no shortfall recorded, since a hold owes nothing.
    expect(await billing.debit({ userId, amount: 30, atLeast: 10, requestId: 'hold-2' })).toMatchObject({ amount: 10, balanceAfter: 0, metadata: null })
    await expect(billing.debit({ userId, amount: 30, atLeast: 1, requestId: 'hold-3' })).rejects.toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX' })
    await billing.credit({ userId, amount: 5, requestId: 'top-up' })
    await expect(billing.debit({ userId, amount: 30, atLeast: 6, requestId: 'hold-4' })).rejects.toMatchObject({ status: 402 })
    expect((await ledger(userId)).map(row => row.unbilled)).toEqual([0, 0, 0, 0, 0])
    await expect(billing.debit({ userId, amount: 30, atLeast: 31, requestId: 'hold-5' })).rejects.toMatchObject({ status: 400, code: 'INVALID_AMOUNT' })
    expectConsistentChain(await ledger(userId), 5)
  })

  it('a debit for served usage is never refused: it drains what is left and writes the rest as unbilled, a row of 0 on an empty balance', async () => {
    const userId = newUser()
    await billing.debit({ userId, amount: 90, requestId: 'leave-10' })
    expect(await billing.debit({ userId, amount: 25, served: true, requestId: 'served-1', metadata: { call: 'c1' } }))
      .toMatchObject({ amount: 10, balanceBefore: 10, balanceAfter: 0, metadata: { call: 'c1', requestedAmount: 25, unbilled: 15 } })
    expect(await billing.debit({ userId, amount: 7, served: true, requestId: 'served-2' }))
      .toMatchObject({ amount: 0, balanceBefore: 0, balanceAfter: 0, metadata: { requestedAmount: 7, unbilled: 7 } })
    // A replay moves nothing more and writes no second row.
    expect(await billing.debit({ userId, amount: 7, served: true, requestId: 'served-2' })).toMatchObject({ amount: 0 })
    const rows = await ledger(userId)
    expect(rows.map(row => [row.request_id, row.amount, row.unbilled])).toEqual([['initial', 100, 0], ['leave-10', 90, 0], ['served-1', 10, 15], ['served-2', 0, 7]])
    expectConsistentChain(rows, 0)
    // What was served is what was charged plus what is recorded unbilled, in one sum.
    const { rows: [audit] } = await sql<{ charged: string, unbilled: string }>`SELECT sum(amount) AS charged, sum(unbilled) AS unbilled FROM flux_transaction WHERE user_id = ${userId} AND request_id LIKE 'served-%'`.execute(database.db)
    expect(Number(audit!.charged) + Number(audit!.unbilled)).toBe(25 + 7)
  })

  it('an ordinary short debit records its shortfall in the unbilled column too', async () => {
    const userId = newUser()
    await billing.debit({ userId, amount: 130, requestId: 'big' })
    expect((await ledger(userId)).at(-1)).toMatchObject({ amount: 100, unbilled: 30 })
  })
})

describe('credit', () => {
  it('mixed concurrent credits and debits: final = initial + credits − debits and the chain is consistent', async () => {
    const userId = newUser()
    await billing.getBalance(userId)
    const operations = Array.from({ length: 200 }, (_, i) => ({ kind: i % 3 === 0 ? 'credit' as const : 'debit' as const, amount: (i % 7) + 1, requestId: `mixed-${i}` }))
    const results = await Promise.allSettled(operations.map(op => op.kind === 'credit'
      ? billing.credit({ userId, amount: op.amount, requestId: op.requestId })
      : billing.debit({ userId, amount: op.amount, requestId: op.requestId })))
    const applied = results.filter(result => result.status === 'fulfilled').map(result => (result as PromiseFulfilledResult<LedgerEntry>).value)
    const credits = applied.filter(entry => entry.type === 'credit').reduce((sum, entry) => sum + entry.amount, 0)
    const debits = applied.filter(entry => entry.type === 'debit').reduce((sum, entry) => sum + entry.amount, 0)
    const final = await storedBalance(userId)
    expect(final).toBe(INITIAL + credits - debits)
    expect(final).toBeGreaterThanOrEqual(0)
    expectConsistentChain(await ledger(userId), final)

    // The audit query from docs/billing.md agrees.
    const { rows: [audit] } = await sql<{ balance: number, broken_links: number, bad_rows: number, ledger_end: number, ledger_sum: number }>`
      SELECT f.user_id, f.flux AS balance,
             count(*) FILTER (WHERE t.balance_before IS DISTINCT FROM t.prev_after)::int AS broken_links,
             count(*) FILTER (WHERE t.balance_after - t.balance_before <> CASE WHEN t.type = 'debit' THEN -t.amount ELSE t.amount END)::int AS bad_rows,
             (array_agg(t.balance_after ORDER BY t.seq DESC))[1] AS ledger_end,
             sum(CASE WHEN t.type = 'debit' THEN -t.amount ELSE t.amount END)::int AS ledger_sum
      FROM user_flux f
      JOIN (SELECT *, coalesce(lag(balance_after) OVER (PARTITION BY user_id ORDER BY seq), 0) AS prev_after
            FROM flux_transaction) t ON t.user_id = f.user_id
      WHERE f.user_id = ${userId}
      GROUP BY f.user_id, f.flux`.execute(database.db)
    expect(audit).toMatchObject({ balance: final, broken_links: 0, bad_rows: 0, ledger_end: final, ledger_sum: final })
  })

  it('records promo and credit types, idempotently', async () => {
    const userId = newUser()
    const promo = await billing.credit({ userId, amount: 50, requestId: 'promo-1', type: 'promo', description: 'Launch' })
    const again = await billing.credit({ userId, amount: 50, requestId: 'promo-1', type: 'promo', description: 'Launch' })
    expect(again).toEqual(promo)
    expect(promo).toMatchObject({ type: 'promo', amount: 50, balanceAfter: INITIAL + 50, description: 'Launch' })
  })
})

describe('a personal API key\'s budget', () => {
  /** A key of `userId` with a budget, and its counter as the key service makes them. */
  async function budgetedKey(userId: string, flux: number, period: 'day' | 'month' | 'total' = 'day') {
    const key = await database.db.insertInto('api_keys').values({ user_id: userId, name: 'k', prefix: 'airi_sk_x', key_hash: randomUUID(), scopes: ['llm'], budget_flux: flux, budget_period: period })
      .returning('id').executeTakeFirstOrThrow()
    await database.db.insertInto('api_key_spend').values({ api_key_id: key.id, period_start: new Date(0) }).execute()
    return key.id
  }
  const counter = async (keyId: string) => (await database.db.selectFrom('api_key_spend').selectAll().where('api_key_id', '=', keyId).executeTakeFirstOrThrow())
  /** The key's rows since `since`: debits less credits. */
  const rowsNet = async (keyId: string) => (await database.db.selectFrom('flux_transaction').select(['type', 'amount']).where('api_key_id', '=', keyId).execute())
    .reduce((sum, row) => sum + (row.type === 'debit' ? row.amount : -row.amount), 0)

  it('60 concurrent holds of 7 (at least 2) on a key with 50 of budget: they take exactly 50, the rest 402 KEY_BUDGET_EXCEEDED, the counter equals the rows', async () => {
    const userId = newUser()
    await billing.credit({ userId, amount: 1000, requestId: 'top-up' })
    const keyId = await budgetedKey(userId, 50)
    const results = await Promise.allSettled(Array.from({ length: 60 }, (_, n) =>
      billing.debit({ userId, amount: 7, atLeast: 2, requestId: `hold-${n}`, apiKeyId: keyId })))
    const taken = results.flatMap(result => (result.status === 'fulfilled' ? [result.value.amount] : []))
    // 7 × 7 = 49, then the 1 left is below atLeast: every later hold is refused.
    expect(taken.reduce((a, b) => a + b, 0)).toBe(49)
    const refusals = results.flatMap(result => (result.status === 'rejected' ? [result.reason] : []))
    expect(refusals).toHaveLength(53)
    for (const reason of refusals)
      expect(reason).toMatchObject({ status: 402, code: 'KEY_BUDGET_EXCEEDED', details: { budget: 50, period: 'day' } })
    expect((await counter(keyId)).flux).toBe(49)
    expect(await rowsNet(keyId)).toBe(49)
    expect(await storedBalance(userId)).toBe(INITIAL + 1000 - 49)
  })

  it('a refund gives budget back, owed usage is counted but never refused, and another key or none is not capped', async () => {
    const userId = newUser()
    const keyId = await budgetedKey(userId, 10, 'total')
    const other = await budgetedKey(userId, 1000, 'month')
    await billing.debit({ userId, amount: 10, atLeast: 1, requestId: 'a', apiKeyId: keyId })
    await expect(billing.debit({ userId, amount: 1, atLeast: 1, requestId: 'b', apiKeyId: keyId })).rejects.toMatchObject({ code: 'KEY_BUDGET_EXCEEDED' })
    await billing.credit({ userId, amount: 4, requestId: 'a-back', apiKeyId: keyId })
    expect((await billing.debit({ userId, amount: 9, atLeast: 1, requestId: 'c', apiKeyId: keyId })).amount).toBe(4)
    // Usage already served (a settlement past its hold) is owed: counted, never refused by the budget.
    expect((await billing.debit({ userId, amount: 3, served: true, requestId: 'd', apiKeyId: keyId })).amount).toBe(3)
    expect((await counter(keyId)).flux).toBe(13)
    expect(await rowsNet(keyId)).toBe(13)
    expect(await billing.keySpend(keyId)).toEqual({ budget: 10, period: 'total', spent: 13 })
    expect((await billing.debit({ userId, amount: 20, atLeast: 1, requestId: 'e', apiKeyId: other })).amount).toBe(20)
    expect((await billing.debit({ userId, amount: 20, atLeast: 1, requestId: 'f' })).amount).toBe(20)
    // A replay moves nothing, so it does not count again.
    await billing.debit({ userId, amount: 20, atLeast: 1, requestId: 'e', apiKeyId: other })
    expect((await billing.keySpend(other))!.spent).toBe(20)
    // The balance refuses first when both would.
    const poor = newUser()
    await billing.debit({ userId: poor, amount: INITIAL, requestId: 'drain' })
    const poorKey = await budgetedKey(poor, 1)
    await billing.debit({ userId: poor, amount: 1, served: true, requestId: 'owed', apiKeyId: poorKey }).catch(() => {})
    await expect(billing.debit({ userId: poor, amount: 1, atLeast: 1, requestId: 'x', apiKeyId: poorKey })).rejects.toMatchObject({ code: 'INSUFFICIENT_FLUX' })
  })

  it('a counter from an earlier period starts again at 0', async () => {
    const userId = newUser()
    const keyId = await budgetedKey(userId, 5, 'day')
    await database.db.updateTable('api_key_spend').set({ period_start: new Date(Date.UTC(2020, 0, 1)), flux: 5 }).where('api_key_id', '=', keyId).execute()
    expect(await billing.keySpend(keyId)).toEqual({ budget: 5, period: 'day', spent: 0 })
    expect((await billing.debit({ userId, amount: 5, atLeast: 5, requestId: 'today', apiKeyId: keyId })).amount).toBe(5)
    const row = await counter(keyId)
    expect(row.flux).toBe(5)
    expect(row.period_start.getTime()).toBe(new Date(new Date().toISOString().slice(0, 10)).getTime())
  })
})

describe('history', () => {
  it('pages the caller\'s ledger newest first, and only the caller\'s', async () => {
    const userId = newUser()
    const other = newUser()
    await billing.getBalance(other)
    for (let i = 1; i <= 7; i++)
      await billing.debit({ userId, amount: 1, requestId: `h-${i}` })
    const seen: string[] = []
    let cursor: string | null = null
    do {
      const page: Awaited<ReturnType<BillingService['history']>> = await billing.history(userId, { cursor, limit: 3 })
      expect(page.items.length).toBeLessThanOrEqual(3)
      for (const item of page.items) {
        expect(item.userId).toBe(userId)
        seen.push(item.requestId!)
      }
      cursor = page.nextCursor
    } while (cursor)
    expect(seen).toEqual(['h-7', 'h-6', 'h-5', 'h-4', 'h-3', 'h-2', 'h-1', 'initial'])
  })

  it('rejects a cursor it did not make', async () => {
    await expect(billing.history(newUser(), { cursor: 'garbage' })).rejects.toMatchObject({ status: 400, code: 'INVALID_CURSOR' })
  })
})

describe('account deletion', () => {
  it('soft-deletes the balance and drops its cache; the ledger stays', async () => {
    const userId = newUser()
    await billing.getBalance(userId)
    await billing.deleteAllForUser(userId)
    await billing.deleteAllForUser(userId) // idempotent
    expect((await redis.cache.read(keys.userFlux(userId))).value).toBeNull()
    const row = await database.db.selectFrom('user_flux').selectAll().where('user_id', '=', userId).executeTakeFirstOrThrow()
    expect(row.deleted_at).toBeInstanceOf(Date)
    expect(await ledger(userId)).toHaveLength(1)
    await expect(billing.debit({ userId, amount: 1, requestId: 'ghost' })).rejects.toMatchObject({ status: 404 })
  })
})

describe.each([
  ['in-process', async () => createMemoryAdapters()],
  ['redis', () => createRedisAdapters({ url: inject('redisUrl'), prefix: testRedisPrefix() })],
] as Array<[string, () => Promise<Adapters>]>)('flux meter (%s)', (_name, create) => {
  let adapters: Adapters
  let meterBilling: BillingService
  beforeAll(async () => {
    adapters = await create()
    meterBilling = createBillingService({ db: database.db, cache: adapters.cache, logger: silentLogger, metrics: createMetrics(), initialFlux: async () => 1_000_000 })
  })
  afterAll(() => adapters.close())

  const meterFor = (unitsPerFlux: number) => createFluxMeterFactory({ billing: meterBilling, counters: adapters.counters, logger: silentLogger })({
    name: 'tts',
    resolveRuntime: async () => ({ unitsPerFlux, debtTtlSeconds: 3600 }),
  })

  it('1 000 parallel accumulations of random small units debit floor(total / unitsPerFlux) and keep the remainder', async () => {
    const userId = newUser()
    const meter = meterFor(1000)
    const units = Array.from({ length: 1000 }, () => 1 + Math.floor(Math.random() * 120))
    const total = units.reduce((sum, u) => sum + u, 0)
    await Promise.all(units.map((u, i) => meter.accumulate({ userId, units: u, callId: `chunk-${i}` })))

    const debited = (await ledger(userId)).filter(row => row.type === 'debit').reduce((sum, row) => sum + row.amount, 0)
    expect(debited).toBe(Math.floor(total / 1000))
    expect(await meter.peekDebt(userId)).toBe(total % 1000)
    expect(await meter.peekDebt(userId)).toBeLessThan(1000)
    expect(await meterBilling.getBalance(userId)).toBe(1_000_000 - debited)
  })

  it('puts the units back when the debit fails', async () => {
    const userId = newUser()
    const meter = meterFor(10)
    await meterBilling.getBalance(userId)
    await database.db.updateTable('user_flux').set({ flux: 0 }).where('user_id', '=', userId).execute()
    await adapters.cache.del(keys.userFlux(userId))
    await expect(meter.accumulate({ userId, units: 25, callId: 'poor' })).rejects.toMatchObject({ status: 402 })
    expect(await meter.peekDebt(userId)).toBe(25)
    await expect(meter.assertCanAfford(userId)).rejects.toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX' })
  })

  it('re-reads its runtime on every call', async () => {
    const userId = newUser()
    let unitsPerFlux = 100
    const meter = createFluxMeterFactory({ billing: meterBilling, counters: adapters.counters, logger: silentLogger })({
      name: 'switchable',
      resolveRuntime: async () => ({ unitsPerFlux, debtTtlSeconds: 60 }),
    })
    expect(await meter.accumulate({ userId, units: 150, callId: 'a' })).toEqual({ settledFlux: 1, debt: 50 })
    unitsPerFlux = 10
    expect(await meter.accumulate({ userId, units: 5, callId: 'b' })).toEqual({ settledFlux: 5, debt: 5 })
    await meter.assertCanAfford(userId, 1000)
  })

  it('a request that meters several times is charged for every call; a reused call id is refused and its units stay owed', async () => {
    const userId = newUser()
    const meter = meterFor(100)
    expect(await meter.accumulate({ userId, units: 150, callId: 'stream-1:0' })).toEqual({ settledFlux: 1, debt: 50 })
    expect(await meter.accumulate({ userId, units: 250, callId: 'stream-1:1' })).toEqual({ settledFlux: 3, debt: 0 })

    // The same id again: before, billing answered the first row and these 2 Flux were lost.
    await expect(meter.accumulate({ userId, units: 200, callId: 'stream-1:1' })).rejects.toMatchObject({ status: 409, code: 'REQUEST_ID_REUSED' })
    expect(await meter.peekDebt(userId)).toBe(200)
    expect(await meter.accumulate({ userId, units: 0, callId: 'stream-1:2' })).toEqual({ settledFlux: 2, debt: 0 })

    const debits = (await ledger(userId)).filter(row => row.type === 'debit')
    expect(debits.map(row => [row.request_id, row.amount])).toEqual([['meter:tts:stream-1:0', 1], ['meter:tts:stream-1:1', 3], ['meter:tts:stream-1:2', 2]])
    expect(await meterBilling.getBalance(userId)).toBe(1_000_000 - 6)
  })
})

describe.each([
  ['in-process', async () => createMemoryAdapters()],
  ['redis', () => createRedisAdapters({ url: inject('redisUrl'), prefix: testRedisPrefix() })],
] as Array<[string, () => Promise<Adapters>]>)('balance cache consistency (%s)', (_name, create) => {
  let adapters: Adapters
  beforeAll(async () => {
    adapters = await create()
  })
  afterAll(() => adapters.close())

  it('a reader that missed the cache and read Postgres before a debit cannot write the old balance back', async () => {
    const barrier = cacheBarrier(adapters.cache)
    const reader = createBillingService({ db: database.db, cache: barrier.cache, logger: silentLogger, metrics: createMetrics(), initialFlux: async () => INITIAL })
    const writer = createBillingService({ db: database.db, cache: adapters.cache, logger: silentLogger, metrics: createMetrics(), initialFlux: async () => INITIAL })
    const userId = newUser()
    await writer.credit({ userId, amount: 1, requestId: 'open' })
    // As after the cached balance expired.
    await adapters.cache.del(keys.userFlux(userId))

    // The reader misses, reads 101 from Postgres, and stops before writing it back…
    const pause = barrier.pauseNextWrite()
    const read = reader.getBalance(userId)
    await pause.reached
    // …while another instance debits…
    await writer.debit({ userId, amount: 30, requestId: 'spend' })
    // …and only then finishes.
    pause.release()
    expect(await read).toBe(INITIAL + 1)

    expect(await writer.getBalance(userId)).toBe(INITIAL + 1 - 30)
  })
})
