import type { Env } from '../env.ts'
import { printableDatabaseUrl, type Target } from './target.ts'

/** Socket errors: nothing answers where the URL points, or not in time. */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'])

interface Failure {
  message: string
  code?: string
  port?: number
  hostname?: string
  /** Set on errors Postgres itself sent (pg's DatabaseError). */
  severity?: string
}

/** The error, its causes and, for an AggregateError (every address of a host refused), each attempt. */
function chain(error: unknown, depth = 0): Failure[] {
  if (!error || typeof error !== 'object' || depth > 5)
    return []
  const { cause, errors } = error as { cause?: unknown, errors?: unknown[] }
  return [error as Failure, ...chain(cause, depth + 1), ...(Array.isArray(errors) ? errors.flatMap(inner => chain(inner, depth + 1)) : [])]
}

function portOf(url: URL, fallback: number): number {
  return url.port ? Number(url.port) : fallback
}

/**
 * One line for a database or Redis the CLI cannot reach (no stack trace, never a
 * password), or undefined when `error` is something else.
 */
export function cannotReach(error: unknown, env: Pick<Env, 'REDIS_URL' | 'DATABASE_CONNECTION_TIMEOUT_MS'>, target: Target): string | undefined {
  const failures = chain(error)
  if (target.kind === 'embedded') {
    // startEmbeddedPostgres's message: its first line says what to check.
    const start = failures.find(failure => failure.message?.startsWith('embedded PostgreSQL did not start'))
    if (start)
      return `error: ${start.message.split('\n')[0]}`
  }
  const socket = failures.find(failure => failure.code !== undefined && SOCKET_CODES.has(failure.code))
  const cause = socket && (socket.message || socket.code)
  if (socket && env.REDIS_URL) {
    const redis = new URL(env.REDIS_URL)
    const database = target.kind === 'database' ? new URL(target.url) : undefined
    const isRedis = socket.port === portOf(redis, 6379) && !(database && socket.port === portOf(database, 5432))
    if (isRedis)
      return `cannot reach Redis at redis://${redis.hostname}:${portOf(redis, 6379)} (${cause}): is it running? (REDIS_URL)`
  }
  if (target.kind !== 'database')
    return undefined
  // pg gives up with one of its own messages when the connection timeout passes; Postgres refuses with SQLSTATE 08 (connection), 28 (authentication), 3D000 (no such database).
  const timeout = failures.find(failure => /timeout exceeded when trying to connect|Connection terminated unexpectedly|timeout expired/.test(failure.message ?? ''))
  const refused = failures.find(failure => typeof failure.severity === 'string' && /^(?:08|28|3D)/.test(failure.code ?? ''))
  const reason = cause ?? refused?.message ?? (timeout ? `no answer within ${env.DATABASE_CONNECTION_TIMEOUT_MS} ms` : undefined)
  if (!reason)
    return undefined
  return `cannot reach the database at ${printableDatabaseUrl(target.url)} (${reason}): is it running, and is DATABASE_URL right?`
}
