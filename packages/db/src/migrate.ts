import type { Migration, MigrationProvider, MigrationResult } from 'kysely'
import { Migrator } from 'kysely'

import type { Db } from './pool.ts'
import { migrations } from './migrations/index.ts'

const provider: MigrationProvider = {
  getMigrations: async (): Promise<Record<string, Migration>> => migrations,
}

export class MigrationError extends Error {
  constructor(readonly failed: string | undefined, cause: unknown) {
    super(`Migration ${failed ?? '(unknown)'} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  }
}

/** Applies every pending migration in order; throws when one fails. */
export async function migrateToLatest(db: Db): Promise<MigrationResult[]> {
  const migrator = new Migrator({ db, provider })
  const { error, results = [] } = await migrator.migrateToLatest()
  if (error)
    throw new MigrationError(results.find(result => result.status === 'Error')?.migrationName, error)
  return results
}
