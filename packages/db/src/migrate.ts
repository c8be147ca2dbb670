import type { Migration, MigrationProvider, MigrationResult } from 'kysely'
import { Migrator, sql } from 'kysely'

import { createUnboundedDb, type Db } from './pool.ts'
import { migrations } from './migrations/index.ts'

const provider: MigrationProvider = {
  getMigrations: async (): Promise<Record<string, Migration>> => migrations,
}

class MigrationError extends Error {
  constructor(readonly failed: string | undefined, cause: unknown) {
    super(`Migration ${failed ?? '(unknown)'} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  }
}

/** Applies every pending migration in order; throws when one fails. */
export async function migrateToLatest(db: Db): Promise<MigrationResult[]> {
  if (await upToDate(db))
    return []
  const migrator = new Migrator({ db, provider })
  const { error, results = [] } = await migrator.migrateToLatest()
  if (error)
    throw new MigrationError(results.find(result => result.status === 'Error')?.migrationName, error)
  return results
}

/**
 * Whether the database records exactly our migrations as applied: every start but the
 * first after a new migration asks this (two short statements) instead of the
 * migrator's dozen. Anything else (a fresh database, a pending or an unknown
 * migration) goes to the migrator, which applies or reports it.
 */
async function upToDate(db: Db): Promise<boolean> {
  const { rows: [table] } = await sql<{ present: boolean }>`select to_regclass('kysely_migration') is not null as present`.execute(db)
  if (!table?.present)
    return false
  const { rows } = await sql<{ name: string }>`select name from kysely_migration`.execute(db)
  const applied = new Set(rows.map(row => row.name))
  return applied.size === Object.keys(migrations).length && Object.keys(migrations).every(name => applied.has(name))
}

/**
 * The session-level advisory lock Kysely's migrator takes on Postgres (its
 * `PostgresAdapter` lock id). Holding the same lock, the rest of start-up's schema
 * and seed work queues behind any instance that is migrating, and vice versa.
 */
const MIGRATION_LOCK_ID = BigInt('3853314791062309107')

/**
 * Runs `work` while holding the migration lock, on the one connection that holds
 * it (`locked`). Instances starting together take turns. Advisory locks are
 * re-entrant per session, so `migrateToLatest(locked)` inside does not wait on us.
 * Waiting for another instance's migration, or a migration itself, may take longer
 * than a request's statement may: this runs on a connection without `db`'s
 * statement and query timeouts.
 */
export async function withMigrationLock<T>(db: Db, work: (locked: Db) => Promise<T>): Promise<T> {
  const unbounded = createUnboundedDb(db)
  try {
    return await (unbounded ?? db).connection().execute(async (locked) => {
      await sql`select pg_advisory_lock(${sql.lit(MIGRATION_LOCK_ID)})`.execute(locked)
      try {
        return await work(locked)
      }
      finally {
        await sql`select pg_advisory_unlock(${sql.lit(MIGRATION_LOCK_ID)})`.execute(locked)
      }
    })
  }
  finally {
    await unbounded?.destroy()
  }
}
