import { randomUUID } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { createTestMeter } from '@airi/tooling/test/metrics'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'

import type { Adapters } from '../../adapters/ports.ts'
import { createRedisAdapters } from '../../adapters/redis.ts'
import { ApiError } from '../../errors.ts'
import { silentLogger } from '../../logger.ts'
import { createMetrics } from '../../metrics.ts'
import { createBillingService, type BillingService } from './ledger.ts'

const INITIAL = 100

let database: TestDatabase
let redis: Adapters
let billing: BillingService
const { reader, meter } = createTestMeter()

beforeAll(async () => {
  database = await createTestDatabase()
  redis = await createRedisAdapters({ url: inject('redisUrl'), prefix: testRedisPrefix() })
  billing = createBillingService({ db: database.db, cache: redis.cache, logger: silentLogger, metrics: createMetrics(meter), initialFlux: async () => INITIAL })
})
afterAll(async () => {
  await redis.close()
  await database.drop()
})

const newUser = () => `user-${randomUUID()}`

async function ledger(userId: string) {
  return database.db.selectFrom('flux_transaction').select(['type', 'amount', 'balance_after', 'request_id']).where('user_id', '=', userId).orderBy('seq').execute()
}

/** A row the caller owns, written in the same transaction as the Flux. */
async function mirrorRows(userId: string) {
  return database.db.selectFrom('stripe_checkout_session').select('stripe_session_id').where('user_id', '=', userId).execute()
}

function insertMirror(trx: Parameters<Parameters<BillingService['transaction']>[0]>[0]['trx'], userId: string, sessionId: string) {
  return trx.insertInto('stripe_checkout_session').values({ user_id: userId, stripe_session_id: sessionId, mode: 'payment', status: 'complete' }).execute()
}

describe('billing.transaction', () => {
  it('commits the caller\'s writes and the credit together, and the cached balance shows it at once', async () => {
    const userId = newUser()
    expect(await billing.getBalance(userId)).toBe(INITIAL)
    const creditedBefore = await reader.counter('airi.billing.flux.credited')

    const entry = await billing.transaction(async ({ trx, credit }) => {
      await insertMirror(trx, userId, `cs-${userId}`)
      return credit({ userId, amount: 40, requestId: 'purchase-1' })
    })

    expect(entry).toMatchObject({ type: 'credit', amount: 40, balanceBefore: INITIAL, balanceAfter: INITIAL + 40 })
    expect(await billing.getBalance(userId)).toBe(INITIAL + 40)
    expect(await mirrorRows(userId)).toEqual([{ stripe_session_id: `cs-${userId}` }])
    expect(await reader.counter('airi.billing.flux.credited') - creditedBefore).toBe(40)
  })

  it('rolls the credit back with the caller\'s transaction: no ledger row, no balance change, nothing counted', async () => {
    const userId = newUser()
    expect(await billing.getBalance(userId)).toBe(INITIAL)
    const creditedBefore = await reader.counter('airi.billing.flux.credited')

    const failed = billing.transaction(async ({ trx, credit }) => {
      await insertMirror(trx, userId, `cs-${userId}`)
      await credit({ userId, amount: 40, requestId: 'purchase-1' })
      throw new Error('the caller changed its mind')
    })
    await expect(failed).rejects.toThrow('the caller changed its mind')

    expect(await ledger(userId)).toEqual([{ type: 'initial', amount: INITIAL, balance_after: INITIAL, request_id: 'initial' }])
    expect(await billing.getBalance(userId)).toBe(INITIAL)
    expect(await mirrorRows(userId)).toEqual([])
    expect(await reader.counter('airi.billing.flux.credited') - creditedBefore).toBe(0)
  })

  it('opens the account of a user\'s first write inside the transaction, and answers a replay with the first row', async () => {
    const userId = newUser()
    const first = await billing.transaction(({ credit }) => credit({ userId, amount: 5, requestId: 'once' }))
    const again = await billing.transaction(({ credit }) => credit({ userId, amount: 5, requestId: 'once' }))
    expect(again).toEqual(first)
    expect(await ledger(userId)).toEqual([
      { type: 'initial', amount: INITIAL, balance_after: INITIAL, request_id: 'initial' },
      { type: 'credit', amount: 5, balance_after: INITIAL + 5, request_id: 'once' },
    ])
    expect(await billing.getBalance(userId)).toBe(INITIAL + 5)
  })

  it('a refused debit writes nothing, and the caller may catch it and still commit its own rows', async () => {
    const userId = newUser()
    await billing.debit({ userId, amount: INITIAL, requestId: 'spend-all' })
    await billing.transaction(async ({ trx, debit }) => {
      const refused = await debit({ userId, amount: 10, requestId: 'refund-1' }).catch((error: unknown) => error)
      expect(refused).toBeInstanceOf(ApiError)
      expect((refused as ApiError).code).toBe('INSUFFICIENT_FLUX')
      await insertMirror(trx, userId, `cs-${userId}`)
    })
    expect(await mirrorRows(userId)).toEqual([{ stripe_session_id: `cs-${userId}` }])
    expect((await ledger(userId)).map(row => row.request_id)).toEqual(['initial', 'spend-all'])
    expect(await billing.getBalance(userId)).toBe(0)
  })

  it('20 concurrent transactions crediting one request id credit it once', async () => {
    const userId = newUser()
    await billing.getBalance(userId)
    const entries = await Promise.all(Array.from({ length: 20 }, () =>
      billing.transaction(({ credit }) => credit({ userId, amount: 7, requestId: 'stripe:checkout:same' }))))
    expect(new Set(entries.map(entry => entry.id)).size).toBe(1)
    expect((await ledger(userId)).filter(row => row.request_id === 'stripe:checkout:same')).toHaveLength(1)
    expect(await billing.getBalance(userId)).toBe(INITIAL + 7)
  })
})
