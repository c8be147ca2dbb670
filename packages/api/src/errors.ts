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

export const badRequest = (message: string, details?: Record<string, unknown>) => new ApiError(400, 'BAD_REQUEST', message, details)
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
