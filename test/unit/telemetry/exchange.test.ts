/**
 * Traces and metrics of the token endpoint, with the SDK's in-memory
 * exporters: one exchange is one server span with a child span per step, in
 * the caller's trace; the request log line and the audit record carry that
 * trace id; the counters name only authenticated agents and granted
 * audiences; and nothing a span or a metric carries is a credential.
 */
import { SpanKind, SpanStatusCode } from '@opentelemetry/api'
import type { ReadableSpan } from '@opentelemetry/sdk-trace'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { AgentId, Jti, Subject } from '../../../src/core/claims.js'
import { AUDIENCE, basic, CLIENT_ASSERTION_TYPE_JWT, SECRET } from '../../support/broker.js'
import { exchange, expectOAuthError, expectToken, startTrackedBroker, type TrackedBroker } from '../http/helpers.js'
import { CALLER, labelValues, points, recorder, telemetryStrings, valueAt, type Recorder } from './support.js'

const STEPS = [
  'mandate.client.authenticate',
  'mandate.subject.verify',
  'mandate.policy.evaluate',
  'mandate.revocation.check',
  'mandate.token.mint',
  'mandate.audit.append',
] as const

/** A name no policy has: it must never become a label value. */
const INTRUDER = 'intruder-agent-7f3e'
const FOREIGN_AUDIENCE = 'https://attacker-chosen.example/zz9'

let rec: Recorder
let b: TrackedBroker

beforeAll(async () => {
  rec = recorder()
  b = await startTrackedBroker({ telemetry: rec.exporters })
})
afterAll(async () => {
  await b.close()
})
beforeEach(() => {
  rec.spanExporter.reset()
})

const serverSpans = () => rec.spans().filter((s) => s.kind === SpanKind.SERVER)
const childrenOf = (parent: ReadableSpan) => rec.spans().filter((s) => s.parentSpanContext?.spanId === parent.spanContext().spanId)
const requestLines = () => b.logs().filter((l) => l['msg'] === 'request' && l['path'] === '/oauth2/token')

describe('traces', () => {
  it('one exchange is a server span with the six step spans as children, in the trace of the incoming traceparent', async () => {
    const user = await b.userToken()
    const res = await b.token(exchange(user, { scope: 'read' }), {
      ...basic('secret-agent', SECRET),
      traceparent: CALLER.traceparent,
      tracestate: 'vendor=abc',
    })
    const token = await expectToken(res)
    const jti = JSON.parse(Buffer.from(token.access_token.split('.')[1]!, 'base64url').toString()) as { jti: string }

    const [server, ...others] = serverSpans()
    expect(others).toEqual([])
    expect(server!.name).toBe('POST /oauth2/token')
    expect(server!.spanContext().traceId).toBe(CALLER.traceId)
    expect(server!.parentSpanContext?.spanId).toBe(CALLER.spanId)
    expect(server!.parentSpanContext?.isRemote).toBe(true)
    expect(server!.spanContext().traceState?.get('vendor')).toBe('abc')
    expect(server!.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/oauth2/token',
      'url.path': '/oauth2/token',
      'http.response.status_code': 200,
      'mandate.agent': 'secret-agent',
      'mandate.token.jti': jti.jti,
    })
    expect(server!.status.code).toBe(SpanStatusCode.UNSET)

    const steps = childrenOf(server!)
    expect(steps.map((s) => s.name).sort()).toEqual([...STEPS].sort())
    for (const s of steps) {
      expect(s.spanContext().traceId).toBe(CALLER.traceId)
      expect(s.kind).toBe(SpanKind.INTERNAL)
      expect(s.status.code, s.name).toBe(SpanStatusCode.UNSET)
      // Each step ends within its request.
      expect(s.endTime[0] * 1e9 + s.endTime[1]).toBeLessThanOrEqual(server!.endTime[0] * 1e9 + server!.endTime[1])
    }
    // Nothing else was traced for this request.
    expect(rec.spans()).toHaveLength(1 + STEPS.length)

    // The same trace id in the request log line and in the audit record.
    expect(requestLines().at(-1)?.['trace_id']).toBe(CALLER.traceId)
    const issued = b.audit
      .events()
      .filter((e) => e.type === 'token.issued')
      .at(-1)
    expect(issued).toMatchObject({ jti: jti.jti, traceId: CALLER.traceId })
  })

  it('without a traceparent the server span starts a trace, and the log line and audit record carry its id', async () => {
    const res = await b.token(exchange(await b.userToken()), basic('secret-agent', SECRET))
    await expectToken(res)
    const [server] = serverSpans()
    expect(server!.parentSpanContext).toBeUndefined()
    const traceId = server!.spanContext().traceId
    expect(traceId).toMatch(/^[0-9a-f]{32}$/)
    expect(traceId).not.toBe(CALLER.traceId)
    expect(requestLines().at(-1)?.['trace_id']).toBe(traceId)
    expect(
      b.audit
        .events()
        .filter((e) => e.type === 'token.issued')
        .at(-1),
    ).toMatchObject({ traceId })
  })

  it('concurrent exchanges each keep their own step spans under their own server span', async () => {
    const traceIds = Array.from({ length: 6 }, (_, i) => `${String(i + 1).repeat(2)}${'ab'.repeat(15)}`)
    const users = await Promise.all(traceIds.map(() => b.userToken()))
    await Promise.all(
      traceIds.map(async (t, i) =>
        expectToken(await b.token(exchange(users[i]!), { ...basic('secret-agent', SECRET), traceparent: `00-${t}-${'1'.repeat(16)}-01` })),
      ),
    )
    const servers = serverSpans()
    expect(servers.map((s) => s.spanContext().traceId).sort()).toEqual([...traceIds].sort())
    for (const server of servers) {
      const steps = childrenOf(server)
      expect(steps.map((s) => s.name).sort()).toEqual([...STEPS].sort())
      for (const s of steps) expect(s.spanContext().traceId).toBe(server.spanContext().traceId)
    }
    // Each audit record and log line names its own request's trace.
    const audited = b.audit
      .events()
      .filter((e) => e.type === 'token.issued')
      .slice(-6)
      .map((e) => (e as { traceId?: string }).traceId)
    expect([...audited].sort()).toEqual([...traceIds].sort())
  })

  it('a malformed traceparent is ignored: a new trace, as without one', async () => {
    const res = await b.token(exchange(await b.userToken()), { ...basic('secret-agent', SECRET), traceparent: '00-zz-not-a-trace' })
    await expectToken(res)
    const [server] = serverSpans()
    expect(server!.parentSpanContext).toBeUndefined()
    expect(requestLines().at(-1)?.['trace_id']).toBe(server!.spanContext().traceId)
  })

  it('the failing step is marked with its OAuth code and nothing else; the server span with the answer', async () => {
    const res = await b.token(exchange(await b.userToken(), { scope: 'admin' }), { ...basic('jwt-agent', 'x'), traceparent: CALLER.traceparent })
    await expectOAuthError(res, 401, 'invalid_client')
    const [server] = serverSpans()
    expect(server!.attributes).toMatchObject({ 'http.response.status_code': 401, 'error.type': 'invalid_client' })
    expect(server!.attributes['mandate.agent']).toBeUndefined()
    // A 4xx is the client's doing: not an error of the server span.
    expect(server!.status.code).toBe(SpanStatusCode.UNSET)
    const [auth, ...rest] = childrenOf(server!)
    expect(rest).toEqual([])
    expect(auth!.name).toBe('mandate.client.authenticate')
    expect(auth!.status).toEqual({ code: SpanStatusCode.ERROR, message: 'invalid_client' })
    expect(auth!.attributes).toEqual({ 'error.type': 'invalid_client' })
    expect(auth!.events.map((e) => [e.name, e.attributes])).toEqual([['exception', { 'exception.type': 'OAuthError', 'exception.message': 'invalid_client' }]])

    rec.spanExporter.reset()
    await expectOAuthError(await b.token(exchange(await b.userToken(), { scope: 'admin' }), basic('secret-agent', SECRET)), 400, 'invalid_scope')
    const policy = rec.spans().find((s) => s.name === 'mandate.policy.evaluate')
    expect(policy?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'invalid_scope' })
    expect(rec.spans().map((s) => s.name)).not.toContain('mandate.token.mint')
  })

  it('admin routes are named by their pattern, not their path; health probes get no span', async () => {
    await b.mandate.app.request('/admin/revocations/0b6e3f9c-6e7a-4d0f-9d7c-1c2b3a4d5e6f', { headers: { authorization: 'Bearer nope' } })
    await b.mandate.app.request('/healthz')
    await b.mandate.app.request('/readyz')
    await b.mandate.app.request('/no/such/route')
    expect(serverSpans().map((s) => [s.name, s.attributes['http.route'] ?? null])).toEqual([
      ['GET /admin/revocations/:id', '/admin/revocations/:id'],
      ['GET', null],
    ])
  })
})

describe('metrics', () => {
  it('counts issued tokens by agent and granted audience, and the exchange latency by outcome', async () => {
    const before = await rec.metrics()
    const issuedBefore = (valueAt(before, 'mandate.tokens.issued', { agent: 'secret-agent', audience: AUDIENCE }) as number | undefined) ?? 0
    await expectToken(await b.token(exchange(await b.userToken()), basic('secret-agent', SECRET)))
    const jwt = await b.token(
      exchange(await b.userToken({ groups: ['sre'] }), { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: await b.assertion() }),
    )
    await expectToken(jwt)

    const m = await rec.metrics()
    expect(valueAt(m, 'mandate.tokens.issued', { agent: 'secret-agent', audience: AUDIENCE })).toBe(issuedBefore + 1)
    expect(valueAt(m, 'mandate.tokens.issued', { agent: 'jwt-agent', audience: AUDIENCE })).toBe(1)
    const issued = valueAt(m, 'mandate.exchange.duration', { outcome: 'issued' }) as { count: number; sum: number; buckets: { boundaries: number[] } }
    expect(issued.count).toBeGreaterThanOrEqual(2)
    expect(issued.sum).toBeGreaterThan(0)
    expect(issued.sum / issued.count).toBeLessThan(5) // seconds, not milliseconds
    expect(issued.buckets.boundaries).toEqual([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])
    const descriptor = m.find((x) => x.descriptor.name === 'mandate.exchange.duration')!.descriptor
    expect(descriptor.unit).toBe('s')
  })

  it('counts denials before authentication as unauthenticated, never by the name the client sent', async () => {
    const user = await b.userToken()
    const denied = async () => new Map(points(await rec.metrics(), 'mandate.tokens.denied').map((p) => [JSON.stringify(p.attributes), p.value as number]))
    const before = await denied()
    const key = (agent: string, audience: string, error: string) => JSON.stringify({ agent, audience, error })
    const delta = (after: Map<string, number>, k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0)

    // Unknown agent, and a known agent with a wrong secret: alike.
    await expectOAuthError(await b.token(exchange(user, { audience: FOREIGN_AUDIENCE }), basic(INTRUDER, 'whatever-secret')), 401, 'invalid_client')
    await expectOAuthError(await b.token(exchange(user), basic('secret-agent', 'wrong-secret-value')), 401, 'invalid_client')
    // A parse failure: no grant_type.
    const { grant_type: _g, ...noGrant } = exchange(user)
    await expectOAuthError(await b.token(noGrant, basic(INTRUDER, SECRET)), 400, 'invalid_request')
    // Not a form.
    const notForm = await b.mandate.app.request('/oauth2/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    await expectOAuthError(notForm, 400, 'invalid_request')
    // Over the body limit (413).
    const big = await b.mandate.app.request('/oauth2/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `subject_token=${'a'.repeat(70 * 1024)}`,
    })
    expect(big.status).toBe(413)
    // Authenticated, then refused: the agent and the granted audience are named.
    await expectOAuthError(await b.token(exchange(user, { scope: 'admin' }), basic('secret-agent', SECRET)), 400, 'invalid_scope')
    // Authenticated, asking for an audience its policy does not grant: the audience is not a label.
    await expectOAuthError(await b.token(exchange(user, { audience: FOREIGN_AUDIENCE }), basic('secret-agent', SECRET)), 400, 'invalid_target')

    const after = await denied()
    expect(delta(after, key('unauthenticated', 'other', 'invalid_client'))).toBe(2)
    expect(delta(after, key('unauthenticated', 'other', 'invalid_request'))).toBe(3)
    expect(delta(after, key('secret-agent', AUDIENCE, 'invalid_scope'))).toBe(1)
    expect(delta(after, key('secret-agent', 'other', 'invalid_target'))).toBe(1)

    const m = await rec.metrics()
    const values = labelValues(m)
    expect(values.has(INTRUDER)).toBe(false)
    expect(values.has(FOREIGN_AUDIENCE)).toBe(false)
    for (const agent of points(m, 'mandate.tokens.denied').map((p) => p.attributes['agent'])) {
      expect(['unauthenticated', 'secret-agent', 'jwt-agent', 'sub-agent', 'workload-agent', 'expired-agent']).toContain(agent)
    }
    expect((valueAt(m, 'mandate.exchange.duration', { outcome: 'denied' }) as { count: number }).count).toBeGreaterThanOrEqual(7)
  })

  it('counts a refusal by the revocation check under the authenticated agent', async () => {
    const user = await b.userToken()
    const before =
      (valueAt(await rec.metrics(), 'mandate.tokens.denied', { agent: 'secret-agent', audience: AUDIENCE, error: 'unauthorized_client' }) as
        number | undefined) ?? 0
    await b.revocations.killAgent('secret-agent' as AgentId)
    await expectOAuthError(await b.token(exchange(user), basic('secret-agent', SECRET)), 400, 'unauthorized_client')
    await b.revocations.liftAgent('secret-agent' as AgentId)
    const m = await rec.metrics()
    expect(valueAt(m, 'mandate.tokens.denied', { agent: 'secret-agent', audience: AUDIENCE, error: 'unauthorized_client' })).toBe(before + 1)
  })

  it('counts revocations by kind and action', async () => {
    const m0 = await rec.metrics()
    const count = (m: typeof m0, kind: string, action: string) => (valueAt(m, 'mandate.revocations', { kind, action }) as number | undefined) ?? 0
    await b.revocations.killUser('mallory' as Subject)
    await b.revocations.liftUser('mallory' as Subject)
    await b.revocations.revokeToken('a-jti-to-revoke' as Jti)
    // Lifting again changes nothing and is not counted again.
    const m1 = await rec.metrics()
    expect(count(m1, 'sub', 'created') - count(m0, 'sub', 'created')).toBe(1)
    expect(count(m1, 'sub', 'lifted') - count(m0, 'sub', 'lifted')).toBe(1)
    expect(count(m1, 'jti', 'created') - count(m0, 'jti', 'created')).toBe(1)
  })

  it('reports the revocation mirror lag (0 s without a shared store)', async () => {
    const m = await rec.metrics()
    const lag = m.find((x) => x.descriptor.name === 'mandate.revocation.mirror.lag')
    expect(lag?.descriptor.unit).toBe('s')
    expect(lag?.dataPoints.map((p) => p.value)).toEqual([0])
  })
})

describe('no credential in telemetry', () => {
  it('no span name, attribute, event, status or metric label holds a token or secret this file used', async () => {
    // One more request of each kind, so that every credential form was seen with tracing on.
    await b.token(exchange(await b.userToken()), basic('secret-agent', SECRET))
    await b.token(exchange(await b.userToken({ groups: ['sre'] }), { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: await b.assertion() }))
    await b.token(exchange(await b.userToken(), { actor_token: await b.workloads.sign({}), actor_token_type: 'urn:ietf:params:oauth:token-type:jwt' }))
    b.secret(SECRET)
    const strings = telemetryStrings(rec.spans(), await rec.metrics())
    expect(strings.length).toBeGreaterThan(20)
    const text = strings.join('\n')
    const leaked = b.secrets().filter((s) => text.includes(s))
    expect(leaked).toEqual([])
    expect(b.secrets().length).toBeGreaterThan(3)
  })
})
