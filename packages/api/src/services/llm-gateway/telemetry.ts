import type { Clock } from '../../clock.ts'
import type { Metrics } from '../../metrics.ts'
import { recordFailure, tracer } from '../../tracing.ts'
import type { Operation, Upstream } from './router.ts'
import type { MeasuredUsage } from './usage.ts'

export interface ObservedOutcome {
  upstream: string | null
  status: number
  usage?: MeasuredUsage['usage']
  error?: string
}

/**
 * One call's span and metrics. The span lives until the call settles (a stream's
 * last chunk), with one child per upstream attempt.
 */
export function startCallTelemetry({ metrics, clock, alias, upstreams, callId, stream, operation = 'chat' }: { metrics: Metrics, clock: Clock, alias: string, upstreams: Upstream[], callId: string, stream: boolean, operation?: Operation }) {
  const startedAt = clock.now()
  const span = tracer.startSpan(`${operation} ${alias}`, { attributes: { 'gen_ai.operation.name': operation, 'gen_ai.request.model': alias, 'airi.llm.call_id': callId, 'airi.llm.stream': stream } })
  let observed = false
  return {
    startedAt,
    span,

    /** Records the call's duration, tokens and outcome once, whichever path ends it. */
    observe(outcome: ObservedOutcome): void {
      if (observed)
        return
      observed = true
      const responseModel = upstreams.find(upstream => upstream.id === outcome.upstream)?.model
      const attributes = {
        'gen_ai.operation.name': operation,
        'gen_ai.request.model': alias,
        ...(responseModel ? { 'gen_ai.response.model': responseModel } : {}),
        ...(outcome.error ? { 'error.type': String(outcome.status) } : {}),
      }
      metrics.genAiDuration.record((clock.now() - startedAt) / 1000, attributes)
      if (outcome.usage?.prompt_tokens !== undefined)
        metrics.genAiTokens.record(outcome.usage.prompt_tokens, { ...attributes, 'gen_ai.token.type': 'input' })
      if (outcome.usage?.completion_tokens !== undefined)
        metrics.genAiTokens.record(outcome.usage.completion_tokens, { ...attributes, 'gen_ai.token.type': 'output' })
      span.setAttributes({ 'http.response.status_code': outcome.status, ...(responseModel ? { 'gen_ai.response.model': responseModel } : {}) })
      if (outcome.usage?.prompt_tokens !== undefined)
        span.setAttribute('gen_ai.usage.input_tokens', outcome.usage.prompt_tokens)
      if (outcome.usage?.completion_tokens !== undefined)
        span.setAttribute('gen_ai.usage.output_tokens', outcome.usage.completion_tokens)
      if (outcome.error)
        recordFailure(span, new Error(outcome.error), outcome.status)
      span.end()
    },

    /** The time to the first chunk a stream hands out. */
    firstToken(upstreamModel: string): void {
      metrics.genAiFirstToken.record((clock.now() - startedAt) / 1000, { 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': alias, 'gen_ai.response.model': upstreamModel })
    },
  }
}

export type CallTelemetry = ReturnType<typeof startCallTelemetry>
