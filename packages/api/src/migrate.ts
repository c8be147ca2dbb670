import { getMigrations } from 'better-auth/db/migration'

import { migrateToLatest, withMigrationLock, type Db } from '@airi/db'

import { createAuthOptions } from './auth/options.ts'

export interface MigrationReport {
  /** Our ordered migrations applied by this run. */
  applied: string[]
  /** better-auth tables created or extended by this run. */
  authTables: string[]
}

/**
 * Brings the database to the current schema: our ordered migrations, then the
 * tables better-auth and its plugins need (derived from the same options the
 * server runs with). Safe to run on every start, and on several instances at
 * once: all of it runs under the migration lock, on the connection holding it.
 */
export async function migrateDatabase(db: Db): Promise<MigrationReport> {
  return withMigrationLock(db, async (locked) => {
    const results = await migrateToLatest(locked)
    // The schema does not depend on secrets or URLs, only on the plugins.
    const options = createAuthOptions({ db: locked, settings: { secret: 'schema-only-secret-0123456789abcdef', baseUrl: 'http://localhost' } })
    const plan = await getMigrations(options)
    await plan.runMigrations()
    return {
      applied: results.map(result => result.migrationName),
      authTables: [...new Set([...plan.toBeCreated, ...plan.toBeAdded].map(change => change.table))],
    }
  })
}
