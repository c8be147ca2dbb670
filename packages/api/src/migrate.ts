import { migrateToLatest, withMigrationLock, type Db } from '@airi/db'

export interface MigrationReport {
  /** Our ordered migrations applied by this run (better-auth's tables among them, 0016). */
  applied: string[]
}

/**
 * Brings the database to the current schema with our ordered migrations. Safe to
 * run on every start, and on several instances at once: it runs under the
 * migration lock, on the connection holding it.
 */
export async function migrateDatabase(db: Db): Promise<MigrationReport> {
  return withMigrationLock(db, async (locked) => {
    const results = await migrateToLatest(locked)
    return { applied: results.map(result => result.migrationName) }
  })
}
