export { createDb, type CreateDbOptions, type Db, DEFAULT_CONNECTION_TIMEOUT_MS, DEFAULT_POOL_MAX } from './pool.ts'
export { findFreePort, startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded.ts'
export { migrateToLatest, MigrationError, withMigrationLock } from './migrate.ts'
export type * from './schema.ts'
