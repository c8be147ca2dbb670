import { ApiError } from '../../errors.ts'

/** How a call ended, for the log and for an error event on a stream already under way. */
export interface Failure {
  status: number
  code: string
  message: string
}

/** An SSE event in OpenAI's error shape: the official clients raise it as an APIError. */
export function errorEvent(failure: Failure): string {
  const type = failure.status === 502 ? 'upstream_error' : 'server_error'
  return `data: ${JSON.stringify({ error: { message: failure.message, type, code: failure.code } })}\n\n`
}

export interface CallEnds {
  /** Aborted when the gateway ends the call to shut down. */
  shutdown: AbortSignal
  clientSignal: AbortSignal
  deadline: { readonly timedOut: boolean }
  /** True once the host stopped taking calls. */
  closing: () => boolean
}

/** Why a call stopped early, checked in the order that names the real cause. */
export function failureOf(error: unknown, { shutdown, clientSignal, deadline, closing }: CallEnds): Failure {
  // During shutdown the host cuts the connections still open at its deadline.
  if (shutdown.aborted || (closing() && clientSignal.aborted))
    return { status: 503, code: 'SHUTTING_DOWN', message: 'The server is shutting down' }
  if (clientSignal.aborted)
    return { status: 499, code: 'CLIENT_CLOSED', message: 'client went away' }
  if (deadline.timedOut)
    return { status: 504, code: 'DEADLINE_EXCEEDED', message: 'The upstreams did not answer in time' }
  if (error instanceof ApiError)
    return { status: error.status, code: error.code, message: error.message }
  return { status: 502, code: 'UPSTREAM_UNAVAILABLE', message: `The upstream stream failed: ${(error as Error).message}` }
}
