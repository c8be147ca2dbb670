import { createServer, type Socket } from 'node:net'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createDb, withMigrationLock, type Db } from '@airi/db'
import { startTcpProxy, type TcpProxy } from '@airi/tooling/test/tcp-proxy'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { outageError } from './errors.ts'

/** What a promise rejected with; fails the test if it resolved. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  const outcome = await promise.then(() => ({ resolved: true as const }), (error: unknown) => ({ resolved: false as const, error }))
  expect(outcome.resolved).toBe(false)
  return outcome.resolved ? undefined : outcome.error
}

const OUTAGE = { status: 503, code: 'SERVICE_UNAVAILABLE' }
/** The lock `withMigrationLock` takes (Kysely's migrator's). */
const MIGRATION_LOCK_ID = BigInt('3853314791062309107')

describe('the Postgres pool', () => {
  let database: TestDatabase
  beforeAll(async () => {
    database = await createTestDatabase()
  })
  afterAll(() => database.drop())

  it('answers 503 when Postgres silently stops answering, instead of hanging', async () => {
    // A peer that accepts connections and never says a word: a network that dropped packets.
    const sockets = new Set<Socket>()
    const silent = createServer(socket => sockets.add(socket))
    await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
    const port = (silent.address() as { port: number }).port
    const db = createDb({ connectionString: `postgres://nobody@127.0.0.1:${port}/nothing`, connectionTimeoutMs: 300 })
    try {
      const error = await sql`select 1`.execute(db).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(Error)
      expect(outageError(error)).toMatchObject({ status: 503, code: 'SERVICE_UNAVAILABLE' })
    }
    finally {
      await db.destroy()
      for (const socket of sockets)
        socket.destroy()
      await new Promise(resolve => silent.close(resolve))
    }
  })

  describe('on a connection that goes silent (a paused or partitioned server)', () => {
    let proxy: TcpProxy
    let db: Db
    beforeAll(async () => {
      proxy = await startTcpProxy(Number(new URL(database.url).port))
      const proxied = new URL(database.url)
      proxied.port = String(proxy.port)
      db = createDb({ connectionString: proxied.toString(), maxConnections: 2, connectionTimeoutMs: 500, queryTimeoutMs: 500 })
    })
    afterAll(async () => {
      await db.destroy()
      await proxy.close()
    })

    it('fails a statement sent into the silence with 503 after the query timeout, without waiting out its ROLLBACK too; then serves again', async () => {
      // Both connections open and idle, so the statements below go out on them rather than waiting to connect.
      await Promise.all([1, 2].map(() => db.transaction().execute(trx => sql`select pg_sleep(0.05)`.execute(trx))))
      try {
        let statement: unknown
        const transaction = await rejection(db.transaction().execute(async (trx) => {
          await sql`select 1`.execute(trx)
          proxy.silence()
          statement = await rejection(sql`select 2`.execute(trx))
          throw statement
        }))
        expect(statement).toMatchObject({ message: 'Query read timeout' })
        expect(outageError(statement)).toMatchObject(OUTAGE)
        // Its ROLLBACK, queued behind an answer that never comes, would fail with a timeout of its own.
        expect(transaction).toBe(statement)
        // Outside a transaction too.
        expect(outageError(await rejection(sql`select 3`.execute(db)))).toMatchObject(OUTAGE)
      }
      finally {
        proxy.resume()
      }
      // The timed-out connections were dropped, and new ones serve.
      for (let i = 0; i < 4; i++)
        expect((await sql<{ n: number }>`select ${i}::int as n`.execute(db)).rows).toEqual([{ n: i }])
    })
  })

  it('cancels a statement that runs past the statement timeout (57014, 503) and keeps the connection usable', async () => {
    const db = createDb({ connectionString: database.url, maxConnections: 1, statementTimeoutMs: 200 })
    try {
      const cancelled = await rejection(sql`select pg_sleep(30)`.execute(db))
      expect(cancelled).toMatchObject({ code: '57014' })
      expect(outageError(cancelled)).toMatchObject(OUTAGE)
      expect((await sql<{ ok: number }>`select 1 as ok`.execute(db)).rows).toEqual([{ ok: 1 }])
    }
    finally {
      await db.destroy()
    }
  })

  it('runs migrations and seeding under the migration lock without the statement and query timeouts', async () => {
    const db = createDb({ connectionString: database.url, statementTimeoutMs: 200, queryTimeoutMs: 400 })
    const holder = database.db
    // Another instance holds the lock (migrating) for longer than both timeouts.
    let release!: () => void
    const released = new Promise<void>(resolve => release = resolve)
    let locked!: () => void
    const holdingLock = new Promise<void>(resolve => locked = resolve)
    const holding = holder.connection().execute(async (conn) => {
      await sql`select pg_advisory_lock(${sql.lit(MIGRATION_LOCK_ID)})`.execute(conn)
      locked()
      await released
      await sql`select pg_advisory_unlock(${sql.lit(MIGRATION_LOCK_ID)})`.execute(conn)
    })
    try {
      await holdingLock
      const waiting = withMigrationLock(db, async locked => (await sql<{ ok: number }>`select 1 as ok`.execute(locked)).rows[0])
      const waiter = () => sql<{ waited: boolean }>`
        select now() - query_start > interval '1 second' as waited from pg_stat_activity
        where wait_event_type = 'Lock' and wait_event = 'advisory' and datname = current_database()`.execute(holder)
      await until(async () => (await waiter()).rows.some(row => row.waited), 'the migration to wait on the lock for longer than the timeouts')
      release()
      expect(await waiting).toEqual({ ok: 1 })
    }
    finally {
      release()
      await holding
      await db.destroy()
    }
  })
})
