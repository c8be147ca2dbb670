import { context, SpanStatusCode, trace, type Span } from '@opentelemetry/api'

import { ApiError } from './errors.ts'

/**
 * The service's tracer. A proxy of the global one: spans are no-ops until the host
 * registers an SDK (apps/server/src/telemetry.ts), and nothing here depends on it.
 */
export const tracer = trace.getTracer('airi-server')

/**
 * Records a failure on `span`: the exception as an event and `error.type`. The
 * span's status turns to error only for faults of ours or of an upstream (5xx), so
 * a refused sign-in or an empty balance does not look like an incident.
 */
export function recordFailure(span: Span, error: unknown, status = error instanceof ApiError ? error.status : 500, errorType?: string): void {
  span.recordException(error instanceof Error ? error : String(error))
  span.setAttribute('error.type', errorType ?? (error instanceof ApiError ? error.code : error instanceof Error ? error.name : 'unknown'))
  if (status >= 500)
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) })
}

/** Runs `fn` with `span` as the active span, so spans started inside are its children. */
export function withSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn)
}
