import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'

import { ApiError, outageError, retryAfterSeconds } from '@airi/api'

const openAiTypes: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'invalid_request_error',
  402: 'insufficient_quota',
  403: 'permission_error',
  404: 'invalid_request_error',
  429: 'rate_limit_error',
}

/** OpenAI's error shape, so the official clients surface message, code and status. */
export function openAiError(error: ApiError) {
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

/**
 * The error handler of the OpenAI-shaped REST plugins (LLM gateway, speech):
 * ours as they are, Postgres/Redis out of reach as 503 with retry-after, Fastify's
 * own client errors as 400-class, anything else logged (as `failure`) and answered
 * as a bare 500.
 */
export function openAiErrorHandler(failure: string) {
  return (error: FastifyError | ApiError | Error, request: FastifyRequest, reply: FastifyReply) => {
    const domain = error instanceof ApiError ? error : outageError(error)
    if (domain) {
      if (domain !== error)
        request.log.warn({ err: error }, 'dependency unavailable')
      const retryAfter = retryAfterSeconds(domain)
      if (retryAfter !== undefined)
        reply.header('retry-after', retryAfter)
      return reply.status(domain.status).send(openAiError(domain))
    }
    const statusCode = (error as FastifyError).statusCode
    if (statusCode && statusCode < 500)
      return reply.status(statusCode).send(openAiError(new ApiError(statusCode, 'BAD_REQUEST', error.message)))
    request.log.error({ err: error }, failure)
    return reply.status(500).send(openAiError(new ApiError(500, 'INTERNAL_ERROR', 'Internal server error')))
  }
}
