export { createDb, type CreateDbOptions, type Db } from './pool.ts'
export { findFreePort, startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded.ts'
export { migrateToLatest, MigrationError, withMigrationLock } from './migrate.ts'
export type * from './schema.ts'
