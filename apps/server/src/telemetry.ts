import { context, diag, DiagLogLevel, metrics, propagation, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources'
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
import { BatchSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace'
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions'

import type { Logger } from '@airi/api'

import type { Env } from './env.ts'

export interface Telemetry {
  /** True when an SDK is registered and exporting. */
  enabled: boolean
  /** Exports what is still buffered and stops the SDK, giving up after `timeoutMs`. */
  shutdown: (timeoutMs: number) => Promise<void>
}

/**
 * Starts the OpenTelemetry SDK when OTEL_EXPORTER_OTLP_ENDPOINT is set: metrics
 * and traces over OTLP/HTTP, with the service's name and version on every export.
 * Otherwise nothing is registered and the API stays a no-op (no overhead).
 *
 * Must run before the API is composed: a meter taken from the global provider
 * before an SDK is registered stays a no-op for good.
 */
export function startTelemetry(env: Env, service: { name: string, version: string }, logger: Logger): Telemetry {
  if (!env.OTEL_EXPORTER_OTLP_ENDPOINT)
    return { enabled: false, shutdown: async () => {} }

  // The SDK reports its own trouble (a collector that is down) through diag; it is a warning, never fatal.
  const warn = (message: string, ...args: unknown[]) => logger.warn({ otel: args.length > 0 ? args.map(String) : undefined }, `opentelemetry: ${message}`)
  diag.setLogger({ error: warn, warn, info: () => {}, debug: () => {}, verbose: () => {} }, DiagLogLevel.WARN)

  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over ours.
  const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: service.name, [ATTR_SERVICE_VERSION]: service.version })
    .merge(detectResources({ detectors: [envDetector] }))

  // The exporters read the endpoint (and OTEL_EXPORTER_OTLP_HEADERS, …) themselves.
  const meterProvider = new MeterProvider({
    resource,
    readers: [new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter(), exportIntervalMillis: env.OTEL_METRIC_EXPORT_INTERVAL })],
  })
  const tracerProvider = new TracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter(), scheduledDelayMillis: env.OTEL_BSP_SCHEDULE_DELAY })],
  })
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  metrics.setGlobalMeterProvider(meterProvider)
  trace.setGlobalTracerProvider(tracerProvider)
  logger.info({ endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT, metricIntervalMs: env.OTEL_METRIC_EXPORT_INTERVAL }, 'exporting OpenTelemetry metrics and traces')

  return {
    enabled: true,
    async shutdown(timeoutMs) {
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs)
      })
      const flushed = Promise.allSettled([meterProvider.shutdown({ timeoutMillis: timeoutMs }), tracerProvider.shutdown()])
      const outcome = await Promise.race([flushed, deadline])
      clearTimeout(timer)
      if (outcome === 'timeout')
        logger.warn({ timeoutMs }, 'OpenTelemetry did not flush in time; the last metrics and spans are lost')
      else if (outcome.some(result => result.status === 'rejected'))
        logger.warn({ errors: outcome.flatMap(result => result.status === 'rejected' ? [String(result.reason)] : []) }, 'OpenTelemetry could not flush the last metrics and spans')
    },
  }
}
