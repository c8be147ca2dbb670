import type { FastifyError, FastifyInstance } from 'fastify'

import { ApiError, toHttpErrorBody } from '@airi/api'

/**
 * The one mapping of errors to HTTP JSON `{ error: { code, message } }` for every
 * non-tRPC route. Unexpected errors are logged and answered without details.
 */
export function registerErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError | ApiError | Error, request, reply) => {
    if (error instanceof ApiError)
      return reply.status(error.status).send(toHttpErrorBody(error))

    const fastifyError = error as FastifyError
    if (fastifyError.validation) {
      return reply.status(400).send(toHttpErrorBody(new ApiError(400, 'BAD_REQUEST', error.message, {
        fieldErrors: Object.fromEntries(fastifyError.validation.map(issue => [issue.instancePath.replace(/^\//, '').replaceAll('/', '.'), [issue.message ?? 'invalid']])),
      })))
    }
    // Fastify's own client errors (malformed JSON, body too large, …) carry a 4xx status.
    if (fastifyError.statusCode && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500)
      return reply.status(fastifyError.statusCode).send(toHttpErrorBody(new ApiError(fastifyError.statusCode, fastifyError.code ?? 'BAD_REQUEST', error.message)))

    request.log.error({ err: error }, 'unhandled error')
    return reply.status(500).send(toHttpErrorBody(new ApiError(500, 'INTERNAL_ERROR', 'Internal server error')))
  })

  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(toHttpErrorBody(new ApiError(404, 'NOT_FOUND', `Route ${request.method} ${request.url.split('?')[0]} not found`)))
  })
}
