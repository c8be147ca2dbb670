/**
 * The one error the SDK's helpers throw: the HTTP `status` (or the nearest one for
 * a failure that has none, e.g. 502 for a reply whose upstream failed), the domain
 * `code` (`INSUFFICIENT_FLUX`, `REPLY_IN_PROGRESS`, …), a readable message and the
 * server's `details`.
 */
export class AiriError extends Error {
  override readonly name = 'AiriError'
  constructor(readonly status: number, readonly code: string, message: string, readonly details?: unknown) {
    super(message)
  }
}

interface TrpcErrorData { httpStatus?: number, apiCode?: string, code?: string, details?: unknown }

/** An AiriError for any failure: a failed tRPC call keeps its status, domain code and details. */
export function toAiriError(error: unknown): AiriError {
  if (error instanceof AiriError)
    return error
  const data = (error as { data?: TrpcErrorData } | undefined)?.data
  const message = error instanceof Error ? error.message : String(error)
  return new AiriError(data?.httpStatus ?? 500, data?.apiCode ?? data?.code ?? 'UNKNOWN', message, data?.details)
}
