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
  // An idle client that loses its connection emits 'error' on the pool; without a
  // listener that would crash the process. The next query reconnects.
  pool.on('error', () => {})
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
}
