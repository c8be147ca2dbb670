import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'

/** An OpenTelemetry reader that tests ask for a counter's current total. */
export class TestMetricReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE })
  }

  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}

  /** The sum over every attribute set of the counter `name` (0 before it is created). */
  async counter(name: string): Promise<number> {
    const { resourceMetrics } = await this.collect()
    const metric = resourceMetrics.scopeMetrics.flatMap(scope => scope.metrics).find(candidate => candidate.descriptor.name === name)
    return (metric?.dataPoints ?? []).reduce((sum, point) => sum + (point.value as number), 0)
  }
}

/** A meter whose instruments `reader` can read back. */
export function createTestMeter(reader = new TestMetricReader()) {
  return { reader, meter: new MeterProvider({ readers: [reader] }).getMeter('test') }
}
