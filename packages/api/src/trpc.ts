import { SpanKind } from '@opentelemetry/api'
import { initTRPC, TRPCError } from '@trpc/server'
import type { TRPC_ERROR_CODE_KEY } from '@trpc/server'
import { TRPC_ERROR_CODES_BY_KEY } from '@trpc/server/rpc'

import type { Context } from './context.ts'
import { ApiError, outageError, unauthorized } from './errors.ts'
import { guardedTransformer, sentAsPlainJson } from './input-guard.ts'
import type { Logger } from './logger.ts'
import { recordFailure, tracer } from './tracing.ts'

const codeByStatus: Record<number, TRPC_ERROR_CODE_KEY> = {
  400: 'BAD_REQUEST',
  401: 'UNAUTHORIZED',
  402: 'PAYMENT_REQUIRED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'METHOD_NOT_SUPPORTED',
  408: 'TIMEOUT',
  409: 'CONFLICT',
  412: 'PRECONDITION_FAILED',
  413: 'PAYLOAD_TOO_LARGE',
  422: 'UNPROCESSABLE_CONTENT',
  429: 'TOO_MANY_REQUESTS',
  499: 'CLIENT_CLOSED_REQUEST',
  501: 'NOT_IMPLEMENTED',
  502: 'BAD_GATEWAY',
  503: 'SERVICE_UNAVAILABLE',
  504: 'GATEWAY_TIMEOUT',
}

/** The one mapping of the domain error to tRPC. */
export function toTRPCError(error: ApiError): TRPCError {
  return new TRPCError({ code: codeByStatus[error.status] ?? 'INTERNAL_SERVER_ERROR', message: error.message, cause: error })
}

interface Issue { path: PropertyKey[], message: string }

function isIssueList(cause: unknown): cause is { issues: Issue[] } {
  return typeof cause === 'object' && cause !== null && Array.isArray((cause as { issues?: unknown }).issues)
}

/**
 * Field errors keyed by dotted path ('' for the whole input), as forms want them.
 * A path is the client's own key, even `__proto__` or `constructor`: the object has
 * no prototype for them to reach, and is sent without superjson, which refuses them.
 */
function fieldErrors(issues: Issue[]): Record<string, string[]> {
  const fields = Object.create(null) as Record<string, string[]>
  for (const issue of issues) {
    const path = issue.path.map(String).join('.')
    ;(fields[path] ??= []).push(issue.message)
  }
  return sentAsPlainJson(fields)
}

/**
 * A plain message for input that could not be read, in place of the parser's or
 * runtime's own words ("Unexpected token … in JSON", "Maximum call stack size exceeded").
 */
function plainInputMessage(error: TRPCError): string | undefined {
  const { cause } = error
  if ((error.code !== 'BAD_REQUEST' && error.code !== 'PARSE_ERROR') || !cause || isIssueList(cause) || cause.message !== error.message)
    return undefined
  return cause instanceof SyntaxError ? 'Input is not valid JSON' : 'Input could not be read'
}

/** Who may call a procedure; read by the API reference generator. */
export interface ProcedureMeta {
  access: 'public' | 'user' | 'admin'
}

const t = initTRPC.context<Context>().meta<ProcedureMeta>().create({
  transformer: guardedTransformer,
  errorFormatter({ shape, error }) {
    const domain = error.cause instanceof ApiError ? error.cause : undefined
    // A domain error thrown where no middleware maps it (inside a subscription's generator) is mapped here.
    const code = domain ? codeByStatus[domain.status] ?? 'INTERNAL_SERVER_ERROR' : error.code
    const internal = code === 'INTERNAL_SERVER_ERROR' && !domain
    return {
      ...shape,
      code: TRPC_ERROR_CODES_BY_KEY[code],
      // Never leak what an unexpected failure says about our internals.
      message: domain?.message ?? (internal ? 'Internal server error' : plainInputMessage(error) ?? shape.message),
      data: {
        code,
        httpStatus: domain?.status ?? shape.data.httpStatus,
        path: shape.data.path,
        /** The stable domain code (`INSUFFICIENT_FLUX`, `CONFIG_NOT_SET`, …). */
        apiCode: domain?.code ?? code,
        details: domain?.details,
        fieldErrors: code === 'BAD_REQUEST' && isIssueList(error.cause) ? fieldErrors(error.cause.issues) : undefined,
      },
    }
  },
})

export const createRouter = t.router
/** Joins routers; tests serve their own procedures beside the app's with it. */
export const mergeRouters = t.mergeRouters

/** The tRPC error for a domain error or an outage (Postgres or Redis unreachable); undefined for anything else. */
function mappedError(error: unknown, logger: Logger): TRPCError | undefined {
  const cause = error instanceof TRPCError ? error.cause : error
  if (cause instanceof ApiError)
    return toTRPCError(cause)
  const outage = outageError(cause)
  if (outage)
    logger.warn({ err: cause }, 'dependency unavailable')
  return outage && toTRPCError(outage)
}

/**
 * A subscription's stream as tRPC reads it: the source's values (through `map`),
 * what it throws after it started mapped like a resolver's errors, and on a
 * WebSocket a failure with UNAUTHORIZED once its session ends (`end`). One plain
 * iterator for all of it, not an async generator per concern: an idle
 * subscription holds one small object here, and an event costs one promise.
 */
class Relay<S, T = S> implements AsyncIterableIterator<T> {
  /** Set by `end`: the read in progress and every later one fail with it. */
  private failure: TRPCError | undefined
  private interrupt: ((error: unknown) => void) | undefined
  private finished = false
  /** Runs once when the stream finishes, however it does. */
  onFinish: (() => void) | undefined

  constructor(private readonly source: AsyncIterator<S>, private readonly logger: Logger, private readonly map?: (value: S) => T) {}

  [Symbol.asyncIterator](): this {
    return this
  }

  next(): Promise<IteratorResult<T>> {
    if (this.failure)
      return Promise.reject(this.failure)
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      this.interrupt = reject
      this.source.next().then((result) => {
        try {
          resolve(this.resultOf(result))
        }
        catch (error) {
          this.fail(error, reject)
        }
      }, (error: unknown) => this.fail(error, reject))
    })
  }

  private resultOf(result: IteratorResult<S>): IteratorResult<T> {
    if (result.done) {
      this.finish()
      return result
    }
    return { done: false, value: this.map ? this.map(result.value) : result.value as unknown as T }
  }

  private fail(error: unknown, reject: (error: unknown) => void): void {
    this.finish()
    reject(mappedError(error, this.logger) ?? error)
  }

  return(value?: unknown): Promise<IteratorResult<T>> {
    this.finish()
    return Promise.resolve({ done: true, value: value as T })
  }

  /** How tRPC disposes of a stream; without it, it would add a disposer (two closures) to each. */
  [Symbol.asyncDispose](): Promise<void> {
    this.finish()
    return Promise.resolve()
  }

  /** Fails the stream with `error`, also a read waiting for the next event. */
  end(error: TRPCError): void {
    if (this.finished)
      return
    this.failure = error
    this.interrupt?.(error)
    this.finish()
  }

  /**
   * Tells the source to stop without waiting for it: a generator parked on its
   * next event finishes when tRPC aborts the call's signal, right after.
   */
  private finish(): void {
    if (this.finished)
      return
    this.finished = true
    this.onFinish?.()
    this.source.return?.().catch(() => {})
  }
}

/** `source`'s values through `map`, as a subscription's stream: for a procedure that reshapes a service's events. */
export function relayed<S, T>(source: AsyncIterable<S>, map: (value: S) => T, logger: Logger): AsyncIterableIterator<T> {
  return new Relay(source[Symbol.asyncIterator](), logger, map)
}

/** Turns a domain error or an outage thrown by a resolver (or a subscription's stream) into its tRPC error. */
const mapDomainErrors = t.middleware(async ({ ctx, type, next }) => {
  const result = await next()
  const mapped = result.ok ? undefined : mappedError(result.error, ctx.logger)
  if (mapped)
    throw mapped
  // A relay (the procedure's or the live-connection middleware's) maps errors already.
  if (result.ok && type === 'subscription' && isAsyncIterable(result.data) && !(result.data instanceof Relay))
    return { ...result, data: new Relay(result.data[Symbol.asyncIterator](), ctx.logger) }
  return result
})

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value
}

/**
 * A WebSocket's context outlives many calls, so each call re-checks the session
 * (sign-out, revocation, expiry), subscriptions per connection are capped, and a
 * live subscription ends with UNAUTHORIZED when its session does.
 */
const liveConnection = t.middleware(async ({ ctx, type, next }) => {
  const { connection } = ctx
  if (!connection)
    return next()
  // Resolved when the socket connected (memoised), so this costs nothing.
  const auth = await ctx.getAuth()
  if (auth && !(await ctx.services.sessionGuard.isActive(auth.session)))
    throw unauthorized('Your session has ended; sign in again')
  if (type !== 'subscription')
    return next()

  if (connection.subscriptions >= connection.maxSubscriptions)
    throw new ApiError(429, 'SUBSCRIPTION_LIMIT', `At most ${connection.maxSubscriptions} subscriptions may be open on one connection`)
  connection.subscriptions++
  const result = await next().catch((error: unknown) => {
    connection.subscriptions--
    throw error
  })
  if (!result.ok || !isAsyncIterable(result.data)) {
    connection.subscriptions--
    return result
  }
  // tRPC returns (disposes) every stream it was handed, also one it never read: that counts it out.
  const relay = result.data instanceof Relay ? result.data : new Relay(result.data[Symbol.asyncIterator](), ctx.logger)
  const stopWatching = auth ? ctx.services.sessionGuard.watch(auth.session, () => relay.end(toTRPCError(unauthorized('Your session has ended; sign in again')))) : undefined
  relay.onFinish = () => {
    stopWatching?.()
    connection.subscriptions--
  }
  return { ...result, data: relay }
})

/** A span per procedure call (a child of the HTTP request's span over HTTP), failures recorded on it. */
const traceProcedure = t.middleware(({ ctx, path, type, next }) => tracer.startActiveSpan(`trpc ${path}`, {
  kind: SpanKind.SERVER,
  attributes: { 'rpc.system': 'trpc', 'rpc.method': path, 'airi.trpc.type': type, 'airi.request_id': ctx.requestId },
}, async (span) => {
  try {
    const result = await next()
    if (!result.ok) {
      const domain = result.error.cause instanceof ApiError ? result.error.cause : undefined
      recordFailure(span, domain ?? result.error, domain?.status ?? (result.error.code === 'INTERNAL_SERVER_ERROR' ? 500 : 400))
    }
    return result
  }
  catch (error) {
    recordFailure(span, error)
    throw error
  }
  finally {
    span.end()
  }
}))

export const publicProcedure = t.procedure.use(traceProcedure).use(mapDomainErrors).use(liveConnection).meta({ access: 'public' })

/** Resolves the caller (public procedures never do) and requires one. */
export const protectedProcedure = publicProcedure.use(async ({ ctx, next }) => {
  const auth = await ctx.getAuth()
  if (!auth)
    throw new TRPCError({ code: 'UNAUTHORIZED', message: 'Authentication required' })
  return next({ ctx: { ...ctx, auth, user: auth.user } })
}).meta({ access: 'user' })

/** An administrator (ADMIN_EMAILS or added by an operator), and only with a verified e-mail. */
export const adminProcedure = protectedProcedure.use(async ({ ctx, next }) => {
  if (!ctx.user.emailVerified || !(await ctx.services.operator.admins.isAdmin(ctx.user.email)))
    throw new TRPCError({ code: 'FORBIDDEN', message: 'Administrator access required' })
  return next()
}).meta({ access: 'admin' })
