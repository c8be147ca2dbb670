export {
  createDb,
  type CreateDbOptions,
  type Db,
  DEFAULT_CONNECTION_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_IDLE_MS,
  DEFAULT_POOL_MAX,
  DEFAULT_QUERY_TIMEOUT_MS,
  DEFAULT_STATEMENT_TIMEOUT_MS,
} from './pool.ts'
export { findFreePort, startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded.ts'
export { migrateToLatest, MigrationError, withMigrationLock } from './migrate.ts'
export type * from './schema.ts'
