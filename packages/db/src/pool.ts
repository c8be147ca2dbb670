import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'

import type { Database } from './schema.ts'

// BIGINT (int8) columns hold Flux amounts and sequence numbers; they stay far below
// 2^53, so parse them as numbers instead of pg's default strings.
pg.types.setTypeParser(pg.types.builtins.INT8, value => Number(value))

export interface CreateDbOptions {
  connectionString: string
  /** Upper bound of pooled connections for this process. */
  maxConnections?: number
}

export type Db = Kysely<Database>

export function createDb({ connectionString, maxConnections = 10 }: CreateDbOptions): Db {
  const pool = new pg.Pool({ connectionString, max: maxConnections })
  // A client that loses its connection emits 'error' (on the pool while idle, on
  // itself while checked out); unheard, that would crash the process. The query in
  // flight still fails, and the pool drops the dead client and reconnects.
  pool.on('error', () => {})
  pool.on('connect', client => client.on('error', () => {}))
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
}
