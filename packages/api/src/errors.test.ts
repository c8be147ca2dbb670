import { randomUUID } from 'node:crypto'

import { Redis } from 'ioredis'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createDb, findFreePort } from '@airi/db'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { ApiError, isUniqueViolation, outageError, probeOutage } from './errors.ts'

/** What a promise rejected with; fails the test if it resolved. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  const outcome = await promise.then(() => ({ resolved: true as const }), (error: unknown) => ({ resolved: false as const, error }))
  expect(outcome.resolved).toBe(false)
  return outcome.resolved ? undefined : outcome.error
}

const OUTAGE = { status: 503, code: 'SERVICE_UNAVAILABLE', details: { retryAfterSeconds: 5 } }

/** A Postgres URL nothing listens on. */
async function closedPostgresUrl(): Promise<string> {
  return `postgres://nobody@127.0.0.1:${await findFreePort()}/none`
}

describe('outageError', () => {
  let database: TestDatabase
  beforeAll(async () => {
    database = await createTestDatabase()
  })
  afterAll(() => database.drop())

  it('takes a backend terminated by the server (57P01) for an outage, and a failed query for a bug', async () => {
    const broken = await rejection(sql`select * from no_such_table`.execute(database.db))
    expect(broken).toMatchObject({ code: '42P01' })
    expect(outageError(broken)).toBeUndefined()

    const victim = createDb({ connectionString: database.url, maxConnections: 1 })
    try {
      const marker = `victim_${randomUUID().replaceAll('-', '')}`
      const sleeping = rejection(sql`select pg_sleep(60) as ${sql.ref(marker)}`.execute(victim))
      const backends = () => sql<{ pid: number }>`select pid from pg_stat_activity where query like ${`%${marker}%`} and pid <> pg_backend_pid()`.execute(database.db)
      await until(async () => (await backends()).rows.length === 1, 'the sleeping query to start')
      await sql`select pg_terminate_backend(${(await backends()).rows[0]!.pid})`.execute(database.db)
      const terminated = await sleeping
      expect(terminated).toMatchObject({ code: '57P01' })
      expect(outageError(terminated)).toMatchObject(OUTAGE)
    }
    finally {
      await victim.destroy()
    }
  })

  it('takes a refused Postgres connection and a Redis that is not there for outages', async () => {
    const unreachable = createDb({ connectionString: await closedPostgresUrl() })
    try {
      const refused = await rejection(sql`select 1`.execute(unreachable))
      expect(refused).toMatchObject({ code: 'ECONNREFUSED' })
      expect(outageError(refused)).toMatchObject(OUTAGE)
    }
    finally {
      await unreachable.destroy()
    }

    const url = `redis://127.0.0.1:${await findFreePort()}`
    // As our Redis adapter's command connection: failing fast while disconnected.
    const failFast = new Redis(url, { lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null })
    // As its subscriber connection: queueing, then giving up after a retry.
    const queueing = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 10 })
    for (const client of [failFast, queueing])
      client.on('error', () => {})
    try {
      expect(outageError(await rejection(failFast.get('key')))).toMatchObject(OUTAGE)
      queueing.connect().catch(() => {})
      const gaveUp = await rejection(queueing.get('key'))
      expect(gaveUp).toMatchObject({ name: 'MaxRetriesPerRequestError' })
      expect(outageError(gaveUp)).toMatchObject(OUTAGE)
    }
    finally {
      failFast.disconnect()
      queueing.disconnect()
    }
  })

  it('leaves domain errors and other failures alone', () => {
    expect(outageError(new ApiError(404, 'CHAT_NOT_FOUND', 'Chat not found'))).toBeUndefined()
    expect(outageError(new TypeError('Cannot read properties of undefined'))).toBeUndefined()
    expect(outageError(undefined)).toBeUndefined()
  })
})

describe('probeOutage', () => {
  it('answers 503 only when the probe cannot reach its dependency', async () => {
    const unreachable = createDb({ connectionString: await closedPostgresUrl() })
    const database = await createTestDatabase()
    try {
      expect(await probeOutage(() => sql`select 1`.execute(unreachable))).toMatchObject(OUTAGE)
      expect(await probeOutage(() => sql`select 1`.execute(database.db))).toBeUndefined()
      // A probe that fails for another reason does not make an outage.
      expect(await probeOutage(() => sql`select * from no_such_table`.execute(database.db))).toBeUndefined()
    }
    finally {
      await unreachable.destroy()
      await database.drop()
    }
  })
})

describe('isUniqueViolation', () => {
  it('tells a duplicate from other failures, and one constraint from another', async () => {
    const database = await createTestDatabase()
    try {
      // A temporary table lives on one connection: the duplicate must go through the same one.
      await database.db.connection().execute(async (db) => {
        await sql`create temporary table pairs (a int constraint pairs_a_key unique)`.execute(db)
        await sql`insert into pairs (a) values (1)`.execute(db)
        const duplicate = await rejection(sql`insert into pairs (a) values (1)`.execute(db))
        expect(isUniqueViolation(duplicate)).toBe(true)
        expect(isUniqueViolation(duplicate, 'pairs_a_key')).toBe(true)
        expect(isUniqueViolation(duplicate, 'another_key')).toBe(false)
      })
      expect(isUniqueViolation(await rejection(sql`select * from no_such_table`.execute(database.db)))).toBe(false)
      expect(isUniqueViolation(undefined)).toBe(false)
    }
    finally {
      await database.drop()
    }
  })
})
