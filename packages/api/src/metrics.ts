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
  }
  // Primed at 0 so dashboards show the series before the first event.
  for (const counter of Object.values(counters))
    counter.add(0)
  return counters
}

export type Metrics = ReturnType<typeof createMetrics>
