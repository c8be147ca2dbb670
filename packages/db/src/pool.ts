import { Kysely, PostgresDialect, type LogEvent } from 'kysely'
import pg from 'pg'

import type { Database } from './schema.ts'

// BIGINT (int8) columns hold Flux amounts and sequence numbers; they stay far below
// 2^53, so parse them as numbers instead of pg's default strings.
pg.types.setTypeParser(pg.types.builtins.INT8, value => Number(value))

export interface CreateDbOptions {
  connectionString: string
  /** Upper bound of pooled connections for this process. */
  maxConnections?: number
  /**
   * How long a query may wait for a connection (a free slot in the pool, or a new
   * connection to be made) before it fails; without it a silent network drop
   * would hang every request instead of answering 503.
   */
  connectionTimeoutMs?: number
  /** Called with every statement sent, transaction control included (tests count round trips with it). */
  onQuery?: (sql: string) => void
}

/** Library default (tests, scripts); the server takes DATABASE_POOL_MAX (default 20, see docs/configuration.md). */
export const DEFAULT_POOL_MAX = 10
export const DEFAULT_CONNECTION_TIMEOUT_MS = 10_000

export type Db = Kysely<Database>

export function createDb({ connectionString, maxConnections = DEFAULT_POOL_MAX, connectionTimeoutMs = DEFAULT_CONNECTION_TIMEOUT_MS, onQuery }: CreateDbOptions): Db {
  const pool = new pg.Pool({ connectionString, max: maxConnections, connectionTimeoutMillis: connectionTimeoutMs })
  // A client that loses its connection emits 'error' (on the pool while idle, on
  // itself while checked out); unheard, that would crash the process. The query in
  // flight still fails, and the pool drops the dead client and reconnects.
  pool.on('error', () => {})
  pool.on('connect', client => client.on('error', () => {}))
  return new Kysely<Database>({
    dialect: new PostgresDialect({ pool }),
    ...(onQuery ? { log: (event: LogEvent) => onQuery(event.query.sql) } : {}),
  })
}
