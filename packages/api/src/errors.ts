/**
 * The one error type of the domain. Services throw it; the transports map it once
 * (to a tRPC error in `trpc.ts`, to HTTP JSON in the host's error handler).
 */
export class ApiError extends Error {
  override readonly name = 'ApiError'

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message)
  }
}

export const unauthorized = (message = 'Authentication required') => new ApiError(401, 'UNAUTHORIZED', message)
export const forbidden = (message = 'Forbidden') => new ApiError(403, 'FORBIDDEN', message)
export const notFound = (code: string, message: string) => new ApiError(404, code, message)

/** The JSON body every HTTP route answers with on error. */
export interface HttpErrorBody {
  error: { code: string, message: string, details?: Record<string, unknown> }
}

export function toHttpErrorBody(error: ApiError): HttpErrorBody {
  return { error: { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) } }
}

/** Postgres's SQLSTATE for a row that breaks a unique constraint or index. */
const UNIQUE_VIOLATION = '23505'

/** Whether `error` is Postgres refusing a duplicate (of the named constraint or index, when one is given). */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  const { code, constraint: violated } = (error ?? {}) as { code?: unknown, constraint?: unknown }
  return code === UNIQUE_VIOLATION && (constraint === undefined || violated === constraint)
}

/** How long clients are told to wait (`retry-after`) before trying again during an outage. */
const OUTAGE_RETRY_AFTER_SECONDS = 5

const serviceUnavailable = (retryAfterSeconds = OUTAGE_RETRY_AFTER_SECONDS) =>
  new ApiError(503, 'SERVICE_UNAVAILABLE', 'The service is temporarily unavailable; try again shortly', { retryAfterSeconds })

/** Seconds the client should wait before retrying, when the error says so. */
export function retryAfterSeconds(error: ApiError): number | undefined {
  const seconds = error.details?.retryAfterSeconds
  return typeof seconds === 'number' ? seconds : undefined
}

/** Socket errors: the peer is gone, unreachable or not answering. */
const socketErrorCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'])

/**
 * Postgres SQLSTATEs that say the server cannot serve us right now: class 08
 * (connection exception), 57P01–57P03 (shutting down, crashed, starting up), 53300
 * (too many connections), 57014 (cancelled: our pool's statement timeout).
 */
function isUnavailableSqlState(code: string): boolean {
  return /^08[0-9A-Z]{3}$/.test(code) || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300' || code === '57014'
}

/** What pg, pg-pool and ioredis say when the connection, not the query, failed. */
const connectionMessages = [
  /^Connection terminated/, // pg: the server closed the socket, or the pool's connection timeout
  /^timeout exceeded when trying to connect$/, // pg-pool: no connection within connectionTimeoutMillis
  /^timeout expired$/, // pg: connect timeout
  /^Query read timeout$/, // pg: no answer within the pool's query timeout (a silent server or network)
  /^Client has encountered a connection error and is not queryable$/,
  /^Connection is closed\.$/, // ioredis
  /^Stream isn't writeable and enableOfflineQueue options is false$/, // ioredis, failing fast while disconnected
  /^LOADING /, // Redis still loading its dataset after a restart
]

function isConnectionFailure(error: unknown, depth: number): boolean {
  if (typeof error !== 'object' || error === null || depth > 5)
    return false
  const { code, name, message, cause, errors } = error as { code?: unknown, name?: unknown, message?: unknown, cause?: unknown, errors?: unknown }
  if (typeof code === 'string' && (socketErrorCodes.has(code) || isUnavailableSqlState(code)))
    return true
  if (name === 'MaxRetriesPerRequestError' || (typeof message === 'string' && connectionMessages.some(pattern => pattern.test(message))))
    return true
  // Wrappers keep the socket's error as `cause`; a failed connect to several addresses is an AggregateError.
  return isConnectionFailure(cause, depth + 1) || (Array.isArray(errors) && errors.some(inner => isConnectionFailure(inner, depth + 1)))
}

/**
 * The 503 for a failure of the connection to Postgres or Redis (refused, reset,
 * closed, server shutting down, too many connections), or undefined for anything
 * else: a failed query is a bug and stays a 500.
 */
export function outageError(error: unknown): ApiError | undefined {
  return !(error instanceof ApiError) && isConnectionFailure(error, 0) ? serviceUnavailable() : undefined
}

/**
 * The 503 when `probe` (a trivial query) fails because its dependency is down. For
 * libraries that hide the cause of a failure (better-auth answers a failed database
 * read with its own generic 500), asking the dependency is the only way to tell.
 */
export async function probeOutage(probe: () => Promise<unknown>): Promise<ApiError | undefined> {
  try {
    await probe()
    return undefined
  }
  catch (error) {
    return outageError(error)
  }
}
