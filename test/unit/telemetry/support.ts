/**
 * What the telemetry tests hand the broker instead of OTLP: the SDK's
 * in-memory span exporter, and an in-memory metric exporter behind a reader
 * the test flushes. Plus readers over what they hold, and a scan that lists
 * every string a span or a metric carries, to prove no credential is among
 * them.
 */
import { AggregationTemporality, InMemoryMetricExporter, PeriodicExportingMetricReader, type DataPoint, type MetricData } from '@opentelemetry/sdk-metrics'
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace'
import type { TelemetryExporters } from '../../../src/telemetry/otel.js'

export interface Recorder {
  readonly spanExporter: InMemorySpanExporter
  readonly exporters: TelemetryExporters
  spans(): readonly ReadableSpan[]
  /** The cumulative metrics as of now. */
  metrics(): Promise<readonly MetricData[]>
}

export function recorder(): Recorder {
  const spanExporter = new InMemorySpanExporter()
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  // The interval never fires within a test: every collection is a forceFlush.
  const metricReader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 })
  return {
    spanExporter,
    exporters: { spanExporter, metricReader },
    spans: () => spanExporter.getFinishedSpans(),
    async metrics() {
      metricExporter.reset()
      await metricReader.forceFlush()
      return metricExporter.getMetrics().flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics))
    },
  }
}

/** The data points of one metric, by name (none when it was never recorded). */
export function points(metrics: readonly MetricData[], name: string): readonly DataPoint<unknown>[] {
  return metrics.filter((m) => m.descriptor.name === name).flatMap((m) => m.dataPoints as DataPoint<unknown>[])
}

/** The value of the one data point whose attributes are exactly `attributes`, or undefined. */
export function valueAt(metrics: readonly MetricData[], name: string, attributes: Record<string, string>): unknown {
  const found = points(metrics, name).filter((p) => sameAttributes(p.attributes, attributes))
  return found[0]?.value
}

function sameAttributes(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const ka = Object.keys(a)
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k])
}

/** Every string in spans (names, attributes, events, status, resource) and in metrics (names, labels). */
export function telemetryStrings(spans: readonly ReadableSpan[], metrics: readonly MetricData[]): string[] {
  const out: string[] = []
  const attrs = (a: Record<string, unknown> | undefined) => {
    for (const [k, v] of Object.entries(a ?? {})) out.push(k, String(v))
  }
  for (const s of spans) {
    out.push(s.name, s.status.message ?? '')
    attrs(s.attributes)
    attrs(s.resource.attributes)
    for (const e of s.events) {
      out.push(e.name)
      attrs(e.attributes)
    }
  }
  for (const m of metrics) {
    out.push(m.descriptor.name, m.descriptor.description)
    for (const p of m.dataPoints as DataPoint<unknown>[]) attrs(p.attributes)
  }
  return out
}

/** Every label value a metric was recorded with, across all metrics. */
export function labelValues(metrics: readonly MetricData[]): Set<string> {
  return new Set(metrics.flatMap((m) => (m.dataPoints as DataPoint<unknown>[]).flatMap((p) => Object.values(p.attributes).map(String))))
}

/** A W3C traceparent from the caller: fixed trace and parent span ids, sampled. */
export const CALLER = {
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
  spanId: '00f067aa0ba902b7',
  traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
} as const
