import { metrics as otel, type Meter } from '@opentelemetry/api'

/**
 * The service's own instruments (`airi.*`), created once from a Meter. Without an
 * OpenTelemetry SDK registered the global meter is a no-op; tests pass a meter of
 * their own to read the numbers back.
 */
export function createMetrics(meter: Meter = otel.getMeter('airi-server')) {
  const counters = {
    fluxConsumed: meter.createCounter('airi.billing.flux.consumed', { description: 'Flux debited from users', unit: '{flux}' }),
    fluxCredited: meter.createCounter('airi.billing.flux.credited', { description: 'Flux credited to users', unit: '{flux}' }),
    fluxUnbilled: meter.createCounter('airi.billing.flux.unbilled', { description: 'Flux owed but not charged because the balance ran out', unit: '{flux}' }),
    /** By `currency`; counted once per credited purchase. */
    stripeRevenue: meter.createCounter('airi.stripe.revenue', { description: 'Money received for credited Flux purchases, in minor units of the currency', unit: '{minor_unit}' }),
    /** By `type` and `outcome` (handled, ignored, unknown, failed, invalid_signature). */
    stripeEvents: meter.createCounter('stripe.events', { description: 'Stripe webhook events received', unit: '{event}' }),
    ttsChars: meter.createCounter('airi.billing.tts.chars', { description: 'TTS characters billed on the streaming socket', unit: '{character}' }),
    ttsPreflightRejections: meter.createCounter('airi.billing.tts.preflight_rejections', { description: 'Streaming speech sessions refused before dialling for lack of Flux', unit: '{session}' }),
    userRegistered: meter.createCounter('user.registered', { description: 'Accounts created', unit: '{user}' }),
    /** By `airi.rate_limit.route`. */
    rateLimitBlocked: meter.createCounter('airi.rate_limit.blocked', { description: 'Requests refused by a per-user rate limit', unit: '{request}' }),
  }
  // Primed at 0 so dashboards show the series before the first event.
  for (const counter of Object.values(counters))
    counter.add(0)
  return counters
}

export type Metrics = ReturnType<typeof createMetrics>
