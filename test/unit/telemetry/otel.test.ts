/**
 * Switching telemetry on and off: without an endpoint (or injected
 * exporters) no SDK object exists and the request path makes no
 * OpenTelemetry call at all; with `otlp_endpoint`, traces and metrics reach
 * an OTLP/HTTP collector (a local server here) with the configured headers,
 * and `close()` flushes them; with `prometheus`, the same metrics are scraped
 * from `/metrics` on a port of their own. Also the config: the standard
 * OTEL_* variables and MANDATE_PROMETHEUS_*.
 */
import { once } from 'node:events'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import { createServer as createTcpServer, type AddressInfo } from 'node:net'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { context } from '@opentelemetry/api'
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { TracerProvider } from '@opentelemetry/sdk-trace'
import { exportJWK, generateKeyPair } from 'jose'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createMemoryAuditLog } from '../../../src/audit/memory.js'
import { composeMandate } from '../../../src/compose.js'
import { loadConfig } from '../../../src/config/load.js'
import { Config } from '../../../src/config/schema.js'
import { createLogger } from '../../../src/telemetry/log.js'
import { createMetrics } from '../../../src/telemetry/metrics.js'
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE, type Subject } from '../../../src/core/claims.js'
import { createMemoryRevocationLog } from '../../../src/revocation/log-memory.js'
import { parseOtlpHeaders, SHUTDOWN_TIMEOUT_MS, startTelemetry, type TelemetryExporters } from '../../../src/telemetry/otel.js'
import { AUDIENCE, basic, BROKER, encodeForm, SECRET, secretAgentPolicy, startTestBroker, USER_ISSUER } from '../../support/broker.js'
import { captureLogs } from '../../support/log-sink.js'
import { expectToken } from '../http/helpers.js'
import { CALLER, points, recorder, valueAt } from './support.js'
import { userAccessToken } from '../../support/tokens.js'

afterEach(() => {
  vi.restoreAllMocks()
})

describe('telemetry off', () => {
  it('starts nothing without an endpoint or exporters', async () => {
    const config = Config.parse({ issuer: 'https://mandate.test' })
    expect(config.telemetry).toEqual({ service_name: 'mandate', sample_ratio: 1, metrics_interval_ms: 60_000 })
    expect(await startTelemetry(config.telemetry, { instance: 'i', logger: createLogger('silent') })).toBeUndefined()
  })

  it('creates no span, meter or context, exports nothing, and keeps the caller’s trace id in the log', async () => {
    const spies = [
      vi.spyOn(TracerProvider.prototype, 'getTracer'),
      vi.spyOn(MeterProvider.prototype, 'getMeter'),
      vi.spyOn(OTLPTraceExporter.prototype, 'export'),
      vi.spyOn(OTLPMetricExporter.prototype, 'export'),
      vi.spyOn(context, 'with'),
      vi.spyOn(context, 'active'),
    ]
    const b = await startTestBroker()
    try {
      for (let i = 0; i < 3; i++) {
        await expectToken(await b.token(b.exchangeForm(await b.userToken()), { ...basic('secret-agent', SECRET), traceparent: CALLER.traceparent }))
      }
      await b.token(b.exchangeForm(await b.userToken()), basic('nobody', 'nothing'))
      await b.revocations.killUser('mallory' as Subject)
      await b.mandate.app.request('/readyz')
    } finally {
      await b.close()
    }
    for (const spy of spies) expect(spy).not.toHaveBeenCalled()
    const lines = b.logs().filter((l) => l['msg'] === 'request' && l['path'] === '/oauth2/token')
    expect(lines.slice(0, 3).map((l) => l['trace_id'])).toEqual([CALLER.traceId, CALLER.traceId, CALLER.traceId])
    expect(
      b.audit
        .events()
        .filter((e) => e.type === 'token.issued')
        .map((e) => (e as { traceId?: string }).traceId),
    ).toEqual([CALLER.traceId, CALLER.traceId, CALLER.traceId])
  })

  it('a broker with telemetry off beside one with it on records nothing of its own', async () => {
    const rec = recorder()
    const on = await startTestBroker({ telemetry: rec.exporters })
    const off = await startTestBroker()
    try {
      await expectToken(await off.token(off.exchangeForm(await off.userToken()), basic('secret-agent', SECRET)))
      expect(rec.spans()).toEqual([])
      expect(points(await rec.metrics(), 'mandate.tokens.issued')).toEqual([])
      await expectToken(await on.token(on.exchangeForm(await on.userToken()), basic('secret-agent', SECRET)))
      expect(rec.spans().length).toBe(7)
    } finally {
      await off.close()
      await on.close()
    }
  })
})

interface Received {
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: string
}

describe('OTLP export', () => {
  it('sends traces and metrics to <endpoint>/v1/traces and /v1/metrics with the configured headers, flushed on close', async () => {
    const received: Received[] = []
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        received.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      })
    })
    collector.listen(0, '127.0.0.1')
    await once(collector, 'listening')
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}/otlp`
    const broker = await startOtlpBroker({ otlp_endpoint: endpoint, otlp_headers: 'X-Collector-Key=k3y%20value', service_name: 'mandate-otlp-test' })
    try {
      const user = await broker.userToken()
      const res = await broker.token(user, { ...basic('otlp-agent', SECRET), traceparent: CALLER.traceparent })
      const token = ((await expectToken(res)) as { access_token: string }).access_token
      await broker.token(user, basic('intruder-name', 'not-the-secret'))
      expect(received).toEqual([]) // batched: nothing leaves before the flush
      const closing = Date.now()
      await broker.close()
      expect(Date.now() - closing).toBeLessThan(5_000)

      const traces = received.filter((r) => r.path === '/otlp/v1/traces')
      const metrics = received.filter((r) => r.path === '/otlp/v1/metrics')
      expect(traces.length).toBeGreaterThan(0)
      expect(metrics.length).toBeGreaterThan(0)
      for (const r of received) {
        expect(r.headers['x-collector-key']).toBe('k3y value')
        expect(r.headers['content-type']).toMatch(/^application\/json/)
      }
      const traceText = traces.map((r) => r.body).join('\n')
      for (const name of ['POST /oauth2/token', 'mandate.subject.verify', 'mandate.audit.append', 'mandate-otlp-test']) expect(traceText).toContain(name)
      const metricText = metrics.map((r) => r.body).join('\n')
      for (const name of ['mandate.tokens.issued', 'mandate.tokens.denied', 'mandate.exchange.duration', 'mandate.revocation.mirror.lag'])
        expect(metricText).toContain(name)
      const all = received.map((r) => r.body).join('\n')
      const secrets = [SECRET, 'not-the-secret', user, user.split('.')[2]!, token, token.split('.')[2]!]
      expect(secrets.filter((s) => all.includes(s))).toEqual([])
      expect(all).not.toContain('intruder-name')
    } finally {
      await broker.close()
      collector.close()
    }
  })

  it(
    'a collector that is down neither fails requests nor holds close() past its bound',
    async () => {
      const broker = await startOtlpBroker({ otlp_endpoint: 'http://127.0.0.1:9/otlp' })
      const res = await broker.token(await broker.userToken(), basic('otlp-agent', SECRET))
      await expectToken(res)
      const closing = Date.now()
      await broker.close()
      expect(Date.now() - closing).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 1_000)
    },
    SHUTDOWN_TIMEOUT_MS + 5_000,
  )
})

/**
 * A broker composed from a config with a `telemetry` section (the test
 * broker builds its own config): one client_secret_basic agent, a user
 * issuer whose key is in memory, memory logs.
 */
async function startOtlpBroker(telemetry: Record<string, unknown>, exporters?: TelemetryExporters) {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-otlp-'))
  await mkdir(join(dir, 'policies'))
  await writeFile(join(dir, 'policies', 'otlp-agent.yaml'), secretAgentPolicy('otlp-agent', USER_ISSUER))
  const keys = await generateKeyPair('ES256', { extractable: true })
  const jwk = { ...(await exportJWK(keys.publicKey)), kid: 'u1', alg: 'ES256' }
  const config = Config.parse({
    issuer: BROKER,
    policies_dir: join(dir, 'policies'),
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    telemetry,
  })
  const audit = createMemoryAuditLog()
  const { lines, stream: sink } = captureLogs('telemetry otlp broker')
  const mandate = await composeMandate(config, {
    dev: false,
    logger: createLogger('info', sink),
    audit,
    // A busy test machine must not shed these requests.
    loadSignals: { eventLoopLag: () => 0 },
    ...(exporters === undefined ? {} : { telemetry: exporters }),
    revocationLog: createMemoryRevocationLog(),
    localSubjectIssuers: [
      { trusted: { issuer: USER_ISSUER, jwksUri: undefined, algorithms: ['ES256'], audience: BROKER, typ: ['at+jwt'] }, jwks: { keys: [jwk] } },
    ],
  })
  let closed: Promise<void> | undefined
  return {
    audit,
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    userToken: () => userAccessToken({ privateKey: keys.privateKey, alg: 'ES256', kid: 'u1' }, { iss: USER_ISSUER, sub: 'dave', aud: BROKER }),
    token: (subjectToken: string, headers: Record<string, string>) =>
      Promise.resolve(
        mandate.app.request('/oauth2/token', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
          body: encodeForm({
            grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
            subject_token: subjectToken,
            subject_token_type: TOKEN_TYPE.accessToken,
            audience: AUDIENCE,
          }),
        }),
      ),
    close: () =>
      (closed ??= (async () => {
        await mandate.close()
        await rm(dir, { recursive: true, force: true })
      })()),
  }
}

describe('sampling', () => {
  it('sample_ratio 0 records no new trace, yet the log line and the audit record share a trace id; a sampled caller is traced', async () => {
    const rec = recorder()
    const broker = await startOtlpBroker({ sample_ratio: 0 }, rec.exporters)
    try {
      await expectToken(await broker.token(await broker.userToken(), basic('otlp-agent', SECRET)))
      expect(rec.spans()).toEqual([])
      const line = broker.logs().find((l) => l['msg'] === 'request')
      expect(line?.['trace_id']).toMatch(/^[0-9a-f]{32}$/)
      expect((broker.audit.events().find((e) => e.type === 'token.issued') as { traceId?: string }).traceId).toBe(line?.['trace_id'])
      // Metrics count every exchange, sampled or not.
      expect(points(await rec.metrics(), 'mandate.tokens.issued').map((p) => p.value)).toEqual([1])

      await expectToken(await broker.token(await broker.userToken(), { ...basic('otlp-agent', SECRET), traceparent: CALLER.traceparent }))
      expect(rec.spans().map((s) => s.spanContext().traceId)).toEqual(Array(7).fill(CALLER.traceId))
      // A caller that did not sample is followed too: nothing recorded, its trace id kept.
      rec.spanExporter.reset()
      await expectToken(
        await broker.token(await broker.userToken(), { ...basic('otlp-agent', SECRET), traceparent: CALLER.traceparent.replace(/-01$/, '-00') }),
      )
      expect(rec.spans()).toEqual([])
      expect(
        broker
          .logs()
          .filter((l) => l['msg'] === 'request')
          .at(-1)?.['trace_id'],
      ).toBe(CALLER.traceId)
    } finally {
      await broker.close()
    }
  })
})

/** The `/metrics` URL the broker logged (it listens on port 0: a free port). */
function metricsUrl(logs: readonly Record<string, unknown>[]): string {
  const line = logs.find((l) => l['msg'] === 'serving metrics for Prometheus')
  expect(line?.['prometheus']).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)
  return line!['prometheus'] as string
}

/** Samples of one metric family in a Prometheus text exposition: labels (without the scope's) and value. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .map((line) => {
      const labels: Record<string, string> = {}
      for (const [, key, value] of line.matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)) if (!key!.startsWith('otel_scope_')) labels[key!] = value!
      return { labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) }
    })
}

describe('Prometheus endpoint', () => {
  it('serves the metrics OTLP exports at /metrics on a port of its own, with the same values; closed with the broker', async () => {
    const rec = recorder()
    const broker = await startOtlpBroker({ prometheus: { port: 0 } }, rec.exporters)
    let url: string
    try {
      url = metricsUrl(broker.logs())
      const user = await broker.userToken()
      await expectToken(await broker.token(user, basic('otlp-agent', SECRET)))
      await expectToken(await broker.token(user, basic('otlp-agent', SECRET)))
      const refused = await broker.token(user, basic('intruder-name', 'not-the-secret'))
      expect(refused.status).toBe(401)

      const res = await fetch(url)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
      const text = await res.text()
      expect(samples(text, 'mandate_tokens_issued_total')).toEqual([{ labels: { agent: 'otlp-agent', audience: AUDIENCE }, value: 2 }])
      expect(samples(text, 'mandate_tokens_denied_total')).toEqual([
        { labels: { agent: 'unauthenticated', audience: 'other', error: 'invalid_client' }, value: 1 },
      ])
      expect(text).toContain('# TYPE mandate_tokens_issued_total counter')
      expect(text).toContain('# TYPE mandate_exchange_duration histogram')
      expect(
        samples(text, 'mandate_exchange_duration_count')
          .map((s) => s.value)
          .reduce((a, b) => a + b),
      ).toBe(3)
      // The very instruments the OTLP reader sees, with the same counts.
      const otlp = await rec.metrics()
      expect(valueAt(otlp, 'mandate.tokens.issued', { agent: 'otlp-agent', audience: AUDIENCE })).toBe(2)
      expect(valueAt(otlp, 'mandate.tokens.denied', { agent: 'unauthenticated', audience: 'other', error: 'invalid_client' })).toBe(1)
      expect(text).not.toContain('intruder-name')
      expect(text).not.toContain(SECRET)

      // Only GET (and HEAD) /metrics.
      expect((await fetch(new URL('/', url))).status).toBe(404)
      expect((await fetch(new URL('/metrics/x', url))).status).toBe(404)
      const post = await fetch(url, { method: 'POST', body: 'x' })
      expect(post.status).toBe(405)
      expect(post.headers.get('allow')).toBe('GET, HEAD')
    } finally {
      await broker.close()
    }
    await expect(fetch(url, { signal: AbortSignal.timeout(5_000) })).rejects.toThrow()
  })

  it('alone (no OTLP endpoint): every instrument is served, and no tracer is made', async () => {
    const getTracer = vi.spyOn(TracerProvider.prototype, 'getTracer')
    const broker = await startOtlpBroker({ prometheus: { port: 0 } })
    try {
      await expectToken(await broker.token(await broker.userToken(), basic('otlp-agent', SECRET)))
      const text = await (await fetch(metricsUrl(broker.logs()))).text()
      expect(samples(text, 'mandate_tokens_issued_total')).toEqual([{ labels: { agent: 'otlp-agent', audience: AUDIENCE }, value: 1 }])
      expect(samples(text, 'mandate_revocation_mirror_lag')).toEqual([{ labels: {}, value: 0 }])
      const families = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map(([, name, type]) => `${name!} ${type!}`)
      // Those recorded so far (this broker's audit log is in memory: no group commits), and the resource.
      expect(families.sort()).toEqual([
        'mandate_exchange_duration histogram',
        'mandate_revocation_mirror_lag gauge',
        'mandate_tokens_issued_total counter',
        'target_info gauge',
      ])
      expect(getTracer).not.toHaveBeenCalled()
    } finally {
      await broker.close()
    }
  })

  it('is off by default: no endpoint is served beside OTLP', async () => {
    const rec = recorder()
    const { lines, stream } = captureLogs('telemetry prometheus off')
    const config = Config.parse({ issuer: BROKER })
    expect(config.telemetry.prometheus).toBeUndefined()
    const telemetry = await startTelemetry(config.telemetry, { instance: 'i', logger: createLogger('info', stream), exporters: rec.exporters })
    try {
      expect(telemetry?.metrics).toBeDefined()
      expect(telemetry?.prometheus).toBeUndefined()
      expect(lines.map((l) => (JSON.parse(l) as Record<string, unknown>)['msg'])).not.toContain('serving metrics for Prometheus')
    } finally {
      await telemetry?.shutdown()
    }
  })

  it('a port in use fails the start, naming the setting and the address, and stops what it had started', async () => {
    const taken = createTcpServer()
    taken.listen(0, '127.0.0.1')
    await once(taken, 'listening')
    const port = (taken.address() as AddressInfo).port
    try {
      const config = Config.parse({ issuer: BROKER, telemetry: { prometheus: { port } } })
      const started = startTelemetry(config.telemetry, { instance: 'i', logger: createLogger('silent') })
      await expect(started).rejects.toThrow(`telemetry.prometheus: cannot listen on 127.0.0.1:${String(port)} (EADDRINUSE)`)
      // Nothing left holding the process-wide state: the next start and stop work.
      const next = await startTelemetry(Config.parse({ issuer: BROKER, telemetry: { prometheus: { port: 0 } } }).telemetry, {
        instance: 'i',
        logger: createLogger('silent'),
      })
      expect(next?.prometheus?.port).toBeGreaterThan(0)
      await next?.shutdown()
    } finally {
      taken.close()
    }
  })
})

describe('config', () => {
  let dir: string | undefined
  afterEach(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
    dir = undefined
  })

  it('reads OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS and OTEL_SERVICE_NAME', async () => {
    const r = await loadConfig(
      undefined,
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector:4318', OTEL_EXPORTER_OTLP_HEADERS: 'api-key=abc', OTEL_SERVICE_NAME: 'mandate-eu' },
      { dev: true },
    )
    expect(r.ok && r.config.telemetry).toEqual({
      otlp_endpoint: 'http://otel-collector:4318',
      otlp_headers: 'api-key=abc',
      service_name: 'mandate-eu',
      sample_ratio: 1,
      metrics_interval_ms: 60_000,
    })
  })

  it('reads MANDATE_PROMETHEUS_PORT and MANDATE_PROMETHEUS_HOST; refuses a bad port, one of the broker’s, or a host alone', async () => {
    const prometheus = async (env: Record<string, string>) => {
      const r = await loadConfig(undefined, env, { dev: true })
      return r.ok ? r.config.telemetry.prometheus : r.issues
    }
    expect(await prometheus({})).toBeUndefined()
    expect(await prometheus({ MANDATE_PROMETHEUS_PORT: '9464' })).toEqual({ port: 9464, host: '127.0.0.1' })
    expect(await prometheus({ MANDATE_PROMETHEUS_PORT: '9464', MANDATE_PROMETHEUS_HOST: '0.0.0.0' })).toEqual({ port: 9464, host: '0.0.0.0' })
    expect(await prometheus({ MANDATE_PROMETHEUS_PORT: '0' })).toEqual({ port: 0, host: '127.0.0.1' })
    for (const bad of ['x', '-1', '65536', '94.64']) {
      expect(await prometheus({ MANDATE_PROMETHEUS_PORT: bad }), bad).toEqual(expect.arrayContaining([expect.stringMatching(/^telemetry\.prometheus\.port: /)]))
    }
    expect(await prometheus({ PORT: '9464', MANDATE_PROMETHEUS_PORT: '9464' })).toEqual([
      'telemetry.prometheus.port: must differ from listen.port and listen.admin_port',
    ])
    expect(await prometheus({ MANDATE_ADMIN_PORT: '9464', MANDATE_PROMETHEUS_PORT: '9464' })).toEqual([
      'telemetry.prometheus.port: must differ from listen.port and listen.admin_port',
    ])
    expect(await prometheus({ MANDATE_PROMETHEUS_HOST: '0.0.0.0' })).toEqual([expect.stringMatching(/^telemetry\.prometheus\.port: /)])
  })

  it('refuses headers in the file (they hold collector credentials) and names a bad endpoint', async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-otel-config-'))
    const file = join(dir, 'mandate.yaml')
    await writeFile(file, 'telemetry:\n  otlp_endpoint: ftp://collector\n  otlp_headers: api-key=secret-in-file\n  sample_ratio: 2\n')
    const r = await loadConfig(file, {}, { dev: true })
    expect(r.ok).toBe(false)
    const issues = r.ok ? [] : r.issues
    expect(issues.map((i) => i.slice(0, i.indexOf(':')))).toEqual(['telemetry.otlp_headers', 'telemetry.otlp_endpoint', 'telemetry.sample_ratio'])
    expect(issues.join('\n')).not.toContain('secret-in-file')
  })

  it('parses OTLP headers: percent-decoded values, lower-case names; a bad entry named by position only', () => {
    expect(parseOtlpHeaders('Api-Key=a%2Cb%3D, x-tenant = blue ')).toEqual({ 'api-key': 'a,b=', 'x-tenant': 'blue' })
    expect(() => parseOtlpHeaders('good=1,=secret')).toThrow(/entry 2 is not key=value/)
    expect(() => parseOtlpHeaders('k=%E0%A4%A')).toThrow(/entry 1/)
    expect(() => parseOtlpHeaders('k=%E0%A4%A')).not.toThrow(/E0/)
  })
})

describe('metrics module', () => {
  it('observes the mirror lag in seconds at each collection', async () => {
    const rec = recorder()
    const provider = new MeterProvider({ readers: [rec.exporters.metricReader!] })
    let lagMs = 1500
    createMetrics(provider.getMeter('test')).watchMirrorLag(() => lagMs)
    expect(points(await rec.metrics(), 'mandate.revocation.mirror.lag').map((p) => p.value)).toEqual([1.5])
    lagMs = 20
    expect(points(await rec.metrics(), 'mandate.revocation.mirror.lag').map((p) => p.value)).toEqual([0.02])
    await provider.shutdown()
  })
})
