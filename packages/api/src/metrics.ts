import { metrics as otel, type Meter } from '@opentelemetry/api'

/** Bucket boundaries the semantic conventions advise, so dashboards line up across services. */
const HTTP_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
const GEN_AI_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
const GEN_AI_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]

/**
 * The service's instruments (the catalogue of SPEC §4.9 and docs/operations.md),
 * created once from a Meter. Without an OpenTelemetry SDK registered the global
 * meter is a no-op; tests pass a meter of their own to read the numbers back.
 */
export function createMetrics(meter: Meter = otel.getMeter('airi-server')) {
  const counters = {
    fluxConsumed: meter.createCounter('airi.billing.flux.consumed', { description: 'Flux debited from users', unit: '{flux}' }),
    fluxCredited: meter.createCounter('airi.billing.flux.credited', { description: 'Flux credited to users', unit: '{flux}' }),
    fluxUnbilled: meter.createCounter('airi.billing.flux.unbilled', { description: 'Flux owed but not charged because the balance ran out', unit: '{flux}' }),
    /** By `currency`; counted once per credited purchase. */
    stripeRevenue: meter.createCounter('airi.stripe.revenue', { description: 'Money received for credited Flux purchases, in minor units of the currency', unit: '{minor_unit}' }),
    /** By `type` and `outcome` (handled, ignored, unknown, account_deleted, failed, invalid_signature, invalid_event). */
    stripeEvents: meter.createCounter('stripe.events', { description: 'Stripe webhook events received', unit: '{event}' }),
    ttsChars: meter.createCounter('airi.billing.tts.chars', { description: 'TTS characters billed on the streaming socket', unit: '{character}' }),
    ttsPreflightRejections: meter.createCounter('airi.billing.tts.preflight_rejections', { description: 'Streaming speech sessions refused before dialling for lack of Flux', unit: '{session}' }),
    /** By `airi.stt.transport` (`rest`, `stream`). */
    sttSeconds: meter.createCounter('airi.billing.stt.seconds', { description: 'Seconds of audio billed on the stt meter', unit: 's' }),
    /** By `airi.stt.transport` (`rest`, `stream`). */
    sttPreflightRejections: meter.createCounter('airi.billing.stt.preflight_rejections', { description: 'Transcriptions refused before any upstream call for lack of Flux', unit: '{request}' }),
    userRegistered: meter.createCounter('user.registered', { description: 'Accounts created', unit: '{user}' }),
    /** By `airi.rate_limit.route`. */
    rateLimitBlocked: meter.createCounter('airi.rate_limit.blocked', { description: 'Requests refused by a per-user rate limit', unit: '{request}' }),
    /** By `gen_ai.request.model` (the alias); one per move to the next key or upstream. */
    gatewayFallbacks: meter.createCounter('airi.gen_ai.gateway.fallback.count', { description: 'LLM gateway attempts that failed over to the next key or upstream', unit: '{fallback}' }),
    /** By `gen_ai.request.model`, `airi.upstream.id` and `error.type` (the status code, `timeout` or `connection`). */
    gatewayUpstreamErrors: meter.createCounter('airi.gen_ai.gateway.upstream.errors', { description: 'Failed LLM upstream attempts', unit: '{error}' }),
    /** By `airi.email.kind`. */
    emailSent: meter.createCounter('airi.email.send', { description: 'E-mails handed to the transport', unit: '{email}' }),
    /** By `airi.email.kind`. */
    emailFailures: meter.createCounter('airi.email.failures', { description: 'E-mails the transport refused or could not send', unit: '{email}' }),
  }
  // Primed at 0 so dashboards show the series before the first event.
  for (const counter of Object.values(counters))
    counter.add(0)

  return {
    ...counters,
    /** By `http.request.method`, `http.route` (the route pattern, absent when no route matched) and `http.response.status_code`; probes are not measured. */
    httpDuration: meter.createHistogram('http.server.request.duration', { description: 'Duration of HTTP server requests', unit: 's', advice: { explicitBucketBoundaries: HTTP_DURATION_BUCKETS } }),
    /** By `http.request.method`. */
    httpActive: meter.createUpDownCounter('http.server.active_requests', { description: 'HTTP requests being served', unit: '{request}' }),
    /** By `airi.ws.endpoint` (`trpc`, `speech`). */
    wsConnections: meter.createUpDownCounter('ws.connections.active', { description: 'Open WebSocket connections', unit: '{connection}' }),
    /** By `gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model` and `error.type` on failure. */
    genAiDuration: meter.createHistogram('gen_ai.client.operation.duration', { description: 'Duration of LLM gateway calls, to the last relayed byte', unit: 's', advice: { explicitBucketBoundaries: GEN_AI_DURATION_BUCKETS } }),
    /** By `gen_ai.token.type` (`input`, `output`) and the models. */
    genAiTokens: meter.createHistogram('gen_ai.client.token.usage', { description: 'Tokens per LLM gateway call', unit: '{token}', advice: { explicitBucketBoundaries: GEN_AI_TOKEN_BUCKETS } }),
    /** Streamed calls only: from the call's start to the first chunk relayed. */
    genAiFirstToken: meter.createHistogram('gen_ai.client.first_token.duration', { description: 'Time to the first streamed chunk of an LLM gateway call', unit: 's', advice: { explicitBucketBoundaries: GEN_AI_DURATION_BUCKETS } }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
