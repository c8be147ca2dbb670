import type { TRPCError } from '@trpc/server'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

import { ApiError, outageError, retryAfterSeconds, toHttpErrorBody } from '@airi/api'

/**
 * The one mapping of errors to HTTP for every REST route and the tRPC socket's
 * refusals: our `ApiError`s as they are, Fastify's own client errors (bad JSON,
 * body too large, schema validation) as 4xx, Postgres or Redis out of reach as 503
 * with `retry-after`, anything else logged and answered as a bare 500. Only the
 * body's shape differs by surface.
 */

/** Our `{ error: { code, message, details? } }`, or OpenAI's shape (on /api/v1/openai and /api/v1/audio), which the official clients read. */
type ErrorShape = 'airi' | 'openai'

const openAiTypes: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'invalid_request_error',
  402: 'insufficient_quota',
  403: 'permission_error',
  404: 'invalid_request_error',
  429: 'rate_limit_error',
}

function openAiBody(error: ApiError) {
  return {
    error: {
      message: error.message,
      type: openAiTypes[error.status] ?? (error.status >= 500 ? 'api_error' : 'invalid_request_error'),
      code: error.code,
      param: (error.details?.param as string | undefined) ?? null,
      ...(error.details ? { details: error.details } : {}),
    },
  }
}

const bodies: Record<ErrorShape, (error: ApiError) => unknown> = { airi: toHttpErrorBody, openai: openAiBody }

/** Sends `error` in the surface's shape, with `retry-after` when it says when to come back. */
function sendError(reply: FastifyReply, error: ApiError, shape: ErrorShape = 'airi'): FastifyReply {
  const retryAfter = retryAfterSeconds(error)
  if (retryAfter !== undefined)
    reply.header('retry-after', retryAfter)
  return reply.status(error.status).send(bodies[shape](error))
}

export interface ErrorSurface {
  shape: ErrorShape
  /** Which of our own errors the client is shown as they are (default: all); the others are answered as unexpected. */
  shows?: (error: ApiError) => boolean
  /** The line an unexpected error is logged with. */
  failure?: string
  /** What an unexpected error answers (default: a bare 500 `INTERNAL_ERROR`). */
  unexpected?: ApiError
}

const internalError = new ApiError(500, 'INTERNAL_ERROR', 'Internal server error')

/** The `ApiError` a client sees for anything thrown on `surface`, logging what needs a look. */
function toApiError(error: unknown, request: FastifyRequest, { shows = () => true, failure = 'unhandled error', unexpected = internalError }: ErrorSurface): ApiError {
  if (error instanceof ApiError && shows(error))
    return error
  if (!(error instanceof ApiError)) {
    const { validation, statusCode, code, message } = error as Partial<FastifyError>
    if (validation) {
      return new ApiError(400, 'BAD_REQUEST', message ?? 'Invalid request', {
        fieldErrors: Object.fromEntries(validation.map(issue => [issue.instancePath.replace(/^\//, '').replaceAll('/', '.'), [issue.message ?? 'invalid']])),
      })
    }
    // Fastify's own client errors (malformed JSON, body too large, …) carry a 4xx status.
    if (statusCode && statusCode >= 400 && statusCode < 500)
      return new ApiError(statusCode, code ?? 'BAD_REQUEST', message ?? 'Bad request')
    const outage = outageError(error)
    if (outage) {
      request.log.warn({ err: error }, 'dependency unavailable')
      return outage
    }
  }
  request.log.error({ err: error }, failure)
  return unexpected
}

/** A Fastify error handler for a plugin whose routes answer on `surface`. */
export function errorHandler(surface: ErrorSurface) {
  return (error: unknown, request: FastifyRequest, reply: FastifyReply) => sendError(reply, toApiError(error, request, surface), surface.shape)
}

/** The root's error and not-found handlers: our shape, for every route whose plugin sets no other. */
export const errorsPlugin = fp(async (app) => {
  app.setErrorHandler(errorHandler({ shape: 'airi' }))
  app.setNotFoundHandler((request, reply) => {
    sendError(reply, new ApiError(404, 'NOT_FOUND', `Route ${request.method} ${request.url.split('?')[0]} not found`))
  })
}, { name: 'errors' })

/**
 * `responseMeta` for tRPC over HTTP: headers cannot travel in the JSON body, so an
 * error that says when to retry (an outage's 503, a 429) sets `retry-after` here.
 */
export function trpcRetryAfter({ errors }: { errors: TRPCError[] }): { headers?: Headers } {
  const waits = errors.flatMap(error => error.cause instanceof ApiError ? retryAfterSeconds(error.cause) ?? [] : [])
  return waits.length > 0 ? { headers: new Headers({ 'retry-after': String(Math.max(...waits)) }) } : {}
}
