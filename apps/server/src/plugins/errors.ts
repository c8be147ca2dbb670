import type { TRPCError } from '@trpc/server'
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify'

import { ApiError, outageError, retryAfterSeconds, toHttpErrorBody } from '@airi/api'

/** Sends a domain error as HTTP JSON, with `retry-after` when it says when to come back. */
function sendApiError(reply: FastifyReply, error: ApiError): FastifyReply {
  const retryAfter = retryAfterSeconds(error)
  if (retryAfter !== undefined)
    reply.header('retry-after', retryAfter)
  return reply.status(error.status).send(toHttpErrorBody(error))
}

/**
 * `responseMeta` for tRPC over HTTP: headers cannot travel in the JSON body, so an
 * error that says when to retry (an outage's 503) sets `retry-after` here.
 */
export function trpcRetryAfter({ errors }: { errors: TRPCError[] }): { headers?: Headers } {
  const waits = errors.flatMap(error => error.cause instanceof ApiError ? retryAfterSeconds(error.cause) ?? [] : [])
  return waits.length > 0 ? { headers: new Headers({ 'retry-after': String(Math.max(...waits)) }) } : {}
}

/**
 * The one mapping of errors to HTTP JSON `{ error: { code, message } }` for every
 * non-tRPC route. Postgres or Redis out of reach answers 503 with `retry-after`;
 * other unexpected errors are logged and answered without details.
 */
export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError | ApiError | Error, request, reply) => {
    if (error instanceof ApiError)
      return sendApiError(reply, error)

    const fastifyError = error as FastifyError
    if (fastifyError.validation) {
      return reply.status(400).send(toHttpErrorBody(new ApiError(400, 'BAD_REQUEST', error.message, {
        fieldErrors: Object.fromEntries(fastifyError.validation.map(issue => [issue.instancePath.replace(/^\//, '').replaceAll('/', '.'), [issue.message ?? 'invalid']])),
      })))
    }
    // Fastify's own client errors (malformed JSON, body too large, …) carry a 4xx status.
    if (fastifyError.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500)
      return reply.status(fastifyError.statusCode).send(toHttpErrorBody(new ApiError(fastifyError.statusCode, fastifyError.code ?? 'BAD_REQUEST', error.message)))

    const outage = outageError(error)
    if (outage) {
      request.log.warn({ err: error }, 'dependency unavailable')
      return sendApiError(reply, outage)
    }
    request.log.error({ err: error }, 'unhandled error')
    return reply.status(500).send(toHttpErrorBody(new ApiError(500, 'INTERNAL_ERROR', 'Internal server error')))
  })

  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(toHttpErrorBody(new ApiError(404, 'NOT_FOUND', `Route ${request.method} ${request.url.split('?')[0]} not found`)))
  })
}
