export { createDb, prepared, type Db } from './pool.ts'
export { findFreePort, startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded.ts'
export { migrateToLatest, withMigrationLock } from './migrate.ts'
export type * from './schema.ts'
