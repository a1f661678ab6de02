/**
 * OpenTelemetry for one broker: a tracer provider and a meter provider, with
 * OTLP/HTTP exporters when `telemetry.otlp_endpoint` is set, or the exporters
 * a test hands in, and the metrics also (or only) served for Prometheus to
 * scrape when `telemetry.prometheus` is set: one meter provider, so the same
 * instruments reach every reader. Without any of these, nothing is created:
 * no SDK object, no timer, no context manager, and the broker's hot path
 * skips every telemetry call (callers hold `undefined`, not a no-op object).
 *
 * The providers belong to the broker, not to the process: they are not
 * registered as the API's globals, so several brokers in one process (tests)
 * each export their own. What is process-wide by nature is shared and
 * reference-counted: the context manager (the active span follows async
 * work through AsyncLocalStorage) and the API's diagnostic logger.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { isMainThread } from 'node:worker_threads'
import { context, diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { defaultResource, resourceFromAttributes, type Resource } from '@opentelemetry/resources'
import { MeterProvider, PeriodicExportingMetricReader, type MetricReader } from '@opentelemetry/sdk-metrics'
import {
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace'
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions'
import type { Config } from '../config/schema.js'
import type { Logger } from './log.js'
import { createMetrics, type MandateMetrics } from './metrics.js'
import { createTracing, type Tracing } from './tracing.js'

/** Exporters chosen by the caller instead of OTLP (tests: the SDK's in-memory ones). */
export interface TelemetryExporters {
  /** Gets every finished span at once (a simple, unbatched processor). */
  readonly spanExporter?: SpanExporter
  /** Reads the metrics: an in-memory exporter behind a periodic reader, or a reader the test collects from. */
  readonly metricReader?: MetricReader
}

export interface Telemetry {
  /** Undefined when no spans are exported. */
  readonly tracing: Tracing | undefined
  /** Undefined when no metrics are exported. */
  readonly metrics: MandateMetrics | undefined
  /** Where `/metrics` is served for Prometheus (the bound port when the config said 0), or undefined. */
  readonly prometheus: { readonly host: string; readonly port: number } | undefined
  /** Exports what is buffered and stops, within {@link SHUTDOWN_TIMEOUT_MS}. Idempotent. */
  shutdown(): Promise<void>
}

export interface TelemetryOptions {
  /** `service.instance.id`: the name this instance has in audit records. */
  readonly instance: string
  readonly logger: Logger
  readonly exporters?: TelemetryExporters
}

/** Longest `shutdown` waits for a collector: the process must still stop when it is down. */
export const SHUTDOWN_TIMEOUT_MS = 5_000
/** Per export request. */
const EXPORT_TIMEOUT_MS = 10_000

/** A scrape that has not sent its request by then is dropped. */
const SCRAPE_TIMEOUT_MS = 10_000
/** Scrapers connected at once: a handful of Prometheus servers, not a crowd. */
const SCRAPE_MAX_CONNECTIONS = 32

/**
 * Starts what the config asks for, or nothing (resolves undefined); resolves
 * once `/metrics` listens. Throws `TypeError` when `otlp_headers` cannot be
 * parsed, and `Error` naming `telemetry.prometheus` when its port cannot be
 * bound (then nothing is left running).
 */
export async function startTelemetry(config: Config['telemetry'], options: TelemetryOptions): Promise<Telemetry | undefined> {
  const endpoint = config.otlp_endpoint
  const injected = options.exporters
  const spanExporter =
    injected?.spanExporter ?? (endpoint === undefined ? undefined : new OTLPTraceExporter(otlpOptions(endpoint, 'v1/traces', config.otlp_headers)))
  const metricReader =
    injected?.metricReader ??
    (endpoint === undefined
      ? undefined
      : new PeriodicExportingMetricReader({
          exporter: new OTLPMetricExporter(otlpOptions(endpoint, 'v1/metrics', config.otlp_headers)),
          exportIntervalMillis: config.metrics_interval_ms,
          exportTimeoutMillis: Math.min(EXPORT_TIMEOUT_MS, config.metrics_interval_ms),
        }))
  // The admin thread (listen.admin_port) composes a broker of its own from the same config: the
  // port belongs to the process's main broker, and a second bind would fail the thread's start.
  const scrape = isMainThread ? config.prometheus : undefined
  // Its own server is not started: ours below can bind port 0, fails the start when the port is
  // taken (the exporter's would only log it), and bounds its connections.
  const prometheus = scrape === undefined ? undefined : new PrometheusExporter({ preventServerStart: true })
  const metricReaders = [metricReader, prometheus].filter((r): r is MetricReader => r !== undefined)
  if (spanExporter === undefined && metricReaders.length === 0) return undefined

  const resource = defaultResource().merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.service_name, 'service.instance.id': options.instance }))
  const release = retainProcessWide(options.logger)

  const tracerProvider = spanExporter === undefined ? undefined : createTracerProvider(config, resource, spanExporter, injected?.spanExporter !== undefined)
  const tracing = tracerProvider === undefined ? undefined : createTracing(tracerProvider.getTracer('mandate'))

  let meterProvider: MeterProvider | undefined
  let metrics: MandateMetrics | undefined
  if (metricReaders.length > 0) {
    meterProvider = new MeterProvider({ resource, readers: metricReaders })
    metrics = createMetrics(meterProvider.getMeter('mandate'))
  }

  if (endpoint !== undefined && (injected?.spanExporter === undefined || injected.metricReader === undefined)) {
    logOtlpExport(options.logger, endpoint, config, { traces: spanExporter !== undefined, metrics: metricReader !== undefined })
  }

  let server: Server | undefined
  let stopped: Promise<void> | undefined
  const shutdown = () => {
    stopped ??= (async () => {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, SHUTDOWN_TIMEOUT_MS)
        timer.unref()
      })
      const flush = Promise.allSettled([tracerProvider?.shutdown(), meterProvider?.shutdown(), server === undefined ? undefined : closeServer(server)])
      await Promise.race([flush.then(() => undefined), timeout])
      clearTimeout(timer)
      release()
    })()
    return stopped
  }

  let served: Telemetry['prometheus']
  if (prometheus !== undefined && scrape !== undefined) {
    try {
      server = await serveMetrics(prometheus, scrape.host, scrape.port)
    } catch (err) {
      await shutdown()
      const code = (err as NodeJS.ErrnoException).code ?? 'error'
      throw new Error(`telemetry.prometheus: cannot listen on ${hostPort(scrape.host, scrape.port)} (${code})`)
    }
    const log = options.logger.child({ module: 'telemetry' })
    server.on('error', (err: NodeJS.ErrnoException) => log.warn({ code: err.code }, 'prometheus endpoint: server error'))
    served = { host: scrape.host, port: (server.address() as AddressInfo).port }
    log.info({ prometheus: `http://${hostPort(served.host, served.port)}/metrics` }, 'serving metrics for Prometheus')
  }

  return { tracing, metrics, prometheus: served, shutdown }
}

/** Sampler, limits and batching are all set here: the OTEL_* variables the SDK reads for them change nothing (config/load.ts is where Mandate reads its environment). */
function createTracerProvider(config: Config['telemetry'], resource: Resource, exporter: SpanExporter, injected: boolean): TracerProvider {
  const processor: SpanProcessor = injected
    ? new SimpleSpanProcessor({ exporter })
    : new BatchSpanProcessor({
        exporter,
        maxQueueSize: 8192,
        maxExportBatchSize: 512,
        scheduledDelayMillis: 5000,
        exportTimeoutMillis: EXPORT_TIMEOUT_MS,
      })
  return new TracerProvider({
    resource,
    sampler: new ParentBasedSampler({ root: config.sample_ratio >= 1 ? new AlwaysOnSampler() : new TraceIdRatioBasedSampler(config.sample_ratio) }),
    spanLimits: {
      attributeValueLengthLimit: 512,
      attributeCountLimit: 64,
      eventCountLimit: 32,
      linkCountLimit: 8,
      attributePerEventCountLimit: 16,
      attributePerLinkCountLimit: 16,
    },
    spanProcessors: [processor],
  })
}

function logOtlpExport(logger: Logger, endpoint: string, config: Config['telemetry'], signals: { traces: boolean; metrics: boolean }): void {
  const shown = new URL(endpoint)
  // A URL may carry credentials; the log gets where, not who.
  shown.username = ''
  shown.password = ''
  shown.search = ''
  logger
    .child({ module: 'telemetry' })
    .info({ otlp_endpoint: shown.href, service_name: config.service_name, sample_ratio: config.sample_ratio, ...signals }, 'exporting telemetry over OTLP/HTTP')
}

/**
 * `GET /metrics` in the Prometheus text format, read from the meter provider
 * at each scrape (cumulative, as Prometheus expects); 404 elsewhere, 405 for
 * another method. Resolves once listening; rejects with the listen error.
 */
async function serveMetrics(exporter: PrometheusExporter, host: string, port: number): Promise<Server> {
  const server = createServer({ requestTimeout: SCRAPE_TIMEOUT_MS, headersTimeout: SCRAPE_TIMEOUT_MS }, (req, res) => {
    const path = (req.url ?? '').split('?', 1)[0]
    if (path !== '/metrics') {
      res.writeHead(404).end()
    } else if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
    } else {
      exporter.getMetricsRequestHandler(req, res)
    }
  })
  server.maxConnections = SCRAPE_MAX_CONNECTIONS
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    // exclusive: in a `serve --workers` worker the port is not shared through the primary, where
    // each scrape would reach another worker's counts; the second worker fails to start instead.
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return server
}

/** Stops listening and drops the scrapers' kept-alive connections. */
function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${String(port)}`
}

/**
 * OTLP/HTTP exporter options: the signal's path under the base URL (as
 * OTEL_EXPORTER_OTLP_ENDPOINT is defined), and the headers, given explicitly
 * so that the exporter's own reading of the environment changes nothing.
 */
function otlpOptions(endpoint: string, signalPath: string, headers: string | undefined) {
  return {
    url: new URL(signalPath, endpoint.endsWith('/') ? endpoint : `${endpoint}/`).href,
    headers: headers === undefined ? {} : parseOtlpHeaders(headers),
    timeoutMillis: EXPORT_TIMEOUT_MS,
  }
}

/**
 * `key=value,key2=value2` with percent-encoded values, as the OpenTelemetry
 * spec defines OTEL_EXPORTER_OTLP_HEADERS. Throws `TypeError` naming the
 * position, never the value (it is often an API key).
 */
export function parseOtlpHeaders(text: string): Record<string, string> {
  const headers: Record<string, string> = {}
  text.split(',').forEach((pair, i) => {
    const at = pair.indexOf('=')
    const key = pair.slice(0, at).trim()
    if (at < 1 || key === '') throw new TypeError(`telemetry.otlp_headers: entry ${i + 1} is not key=value`)
    try {
      headers[key.toLowerCase()] = decodeURIComponent(pair.slice(at + 1).trim())
    } catch {
      throw new TypeError(`telemetry.otlp_headers: entry ${i + 1} has a malformed percent-encoding`)
    }
  })
  return headers
}

let processWideUsers = 0
let ownContextManager: AsyncLocalStorageContextManager | undefined

/**
 * Registers the async context manager and the diagnostic logger while at
 * least one broker runs telemetry; returns the release function (idempotent).
 * A context manager some embedding application registered first is used
 * as it is.
 */
function retainProcessWide(logger: Logger): () => void {
  if (processWideUsers++ === 0) {
    const manager = new AsyncLocalStorageContextManager().enable()
    if (context.setGlobalContextManager(manager)) ownContextManager = manager
    else manager.disable()
    // Exporter failures (a collector down) reach the log; diag's default logger says nothing.
    diag.setLogger(diagLogger(logger.child({ module: 'telemetry' })), { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true })
  }
  let released = false
  return () => {
    if (released) return
    released = true
    if (--processWideUsers > 0) return
    if (ownContextManager !== undefined) {
      context.disable()
      ownContextManager = undefined
    }
    diag.disable()
  }
}

/** The SDK's diagnostics as warnings: its message, and an error argument by class and a bounded message. */
function diagLogger(log: Logger): DiagLogger {
  const write = (message: string, args: unknown[]) => {
    const cause = args.find((a): a is Error => a instanceof Error)
    log.warn({ cause: cause === undefined ? undefined : `${cause.name}: ${cause.message.slice(0, 200)}` }, `opentelemetry: ${message.slice(0, 300)}`)
  }
  return {
    error: (message, ...args) => write(message, args),
    warn: (message, ...args) => write(message, args),
    info: () => {},
    debug: () => {},
    verbose: () => {},
  }
}
