import { createHash } from 'node:crypto'

import { Kysely, PostgresDialect, sql, type LogEvent, type PostgresPool, type PostgresPoolClient } from 'kysely'
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
  /**
   * Postgres cancels a statement that runs longer (`statement_timeout`, SQLSTATE
   * 57014), so a slow or blocked statement frees its connection and locks. 0 leaves
   * it to the server's own setting (for a pooler that refuses startup parameters).
   */
  statementTimeoutMs?: number
  /**
   * How long the client waits for a statement's answer before failing it and
   * dropping the connection: the bound when the server or the network goes silent,
   * where `statement_timeout` cannot act. Above `statementTimeoutMs`, so a live
   * server cancels first. 0 turns it off.
   */
  queryTimeoutMs?: number
  /** Idle time before TCP keepalive probes start, so a peer that vanished is noticed on an idle connection. */
  keepAliveIdleMs?: number
  /** Called with every statement sent, transaction control included (tests count round trips with it). */
  onQuery?: (sql: string) => void
}

/** Library default (tests, scripts); the server takes DATABASE_POOL_MAX (default 20, see docs/configuration.md). */
const DEFAULT_POOL_MAX = 10
const DEFAULT_CONNECTION_TIMEOUT_MS = 10_000
const DEFAULT_STATEMENT_TIMEOUT_MS = 8_000
const DEFAULT_QUERY_TIMEOUT_MS = 10_000
const DEFAULT_KEEPALIVE_IDLE_MS = 10_000

export type Db = Kysely<Database>

/** What each pool was made with, so work that must not be cut short can get a pool of its own. */
const made = new WeakMap<Db, CreateDbOptions>()

export function createDb(options: CreateDbOptions): Db {
  const {
    connectionString,
    maxConnections = DEFAULT_POOL_MAX,
    connectionTimeoutMs = DEFAULT_CONNECTION_TIMEOUT_MS,
    statementTimeoutMs = DEFAULT_STATEMENT_TIMEOUT_MS,
    queryTimeoutMs = DEFAULT_QUERY_TIMEOUT_MS,
    keepAliveIdleMs = DEFAULT_KEEPALIVE_IDLE_MS,
    onQuery,
  } = options
  const pool = new pg.Pool({
    connectionString,
    max: maxConnections,
    connectionTimeoutMillis: connectionTimeoutMs,
    // pg leaves both out when 0.
    statement_timeout: statementTimeoutMs,
    query_timeout: queryTimeoutMs,
    keepAlive: true,
    keepAliveInitialDelayMillis: keepAliveIdleMs,
  })
  // A client that loses its connection emits 'error' (on the pool while idle, on
  // itself while checked out); unheard, that would crash the process. The query in
  // flight still fails, and the pool drops the dead client and reconnects.
  pool.on('error', () => {})
  pool.on('connect', client => client.on('error', () => {}))
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: dropTimedOutConnections(pool) }),
    ...(onQuery ? { log: (event: LogEvent) => onQuery(event.query.sql) } : {}),
  })
  made.set(db, options)
  return db
}

const PREPARED_MARK = '/* prepared */'

/**
 * Put first in a hot statement's text (`sql\`${prepared} WITH …\``): each
 * connection then parses and plans it once (a named prepared statement) instead of
 * on every run. Only for statements whose text comes in a few shapes (values are
 * parameters), since every shape stays prepared on every connection.
 */
export const prepared = sql.raw(PREPARED_MARK)

/** A marked statement's name: the same text gets the same name on every connection. */
const statementNames = new Map<string, string>()
function statementName(text: string): string {
  let name = statementNames.get(text)
  if (name === undefined) {
    name = `airi_${createHash('sha256').update(text).digest('base64url').slice(0, 32)}`
    statementNames.set(text, name)
  }
  return name
}

/**
 * pg's `query_timeout` fails the statement but leaves the connection waiting for
 * the answer: a transaction's ROLLBACK would queue behind it for another timeout,
 * and the pool would hand the connection to the next caller. After a timeout,
 * later statements on that connection fail at once, and releasing it drops it.
 */
function dropTimedOutConnections(pool: pg.Pool): PostgresPool {
  return {
    async connect() {
      const client = await pool.connect()
      let timedOut: Error | undefined
      const query = async (text: string, values: readonly unknown[]) => {
        if (timedOut)
          throw timedOut
        try {
          return text.startsWith(PREPARED_MARK)
            ? await client.query({ name: statementName(text), text, values: [...values] })
            : await client.query(text, [...values])
        }
        catch (error) {
          if (error instanceof Error && error.message === 'Query read timeout')
            timedOut = error
          throw error
        }
      }
      // Only Kysely's plain statements come here: no cursor is configured, so no streaming.
      return { query: query as unknown as PostgresPoolClient['query'], release: () => client.release(timedOut) }
    },
    end: () => pool.end(),
  }
}

/**
 * A one-connection pool to `db`'s database without its statement and query
 * timeouts, for work that may rightly wait or run long (a migration, waiting on
 * another instance's migration lock); undefined when `db` has no such timeouts.
 * The caller destroys it.
 */
export function createUnboundedDb(db: Db): Db | undefined {
  const options = made.get(db)
  if (!options || (options.statementTimeoutMs === 0 && options.queryTimeoutMs === 0))
    return undefined
  return createDb({ ...options, maxConnections: 1, statementTimeoutMs: 0, queryTimeoutMs: 0 })
}
