/**
 * Load shedding, on the real app:
 *
 * - while the event loop lags past its bound, or the delegation log's queue
 *   is past its bound, or too many token/introspection requests are in
 *   flight, a new token or introspection request is answered 503
 *   temporarily_unavailable with Retry-After before its body is read (no
 *   audit record, no signature check), and counted (metric, refusal log);
 * - the kill switch (admin API, /oauth2/revoke), the health probes and the
 *   metadata keep answering meanwhile;
 * - a shed request is counted in the aggregated refusal line, keeps its
 *   request line (at info, naming the reason), and is never an error line.
 *
 * The lag and the backlog are set by hand (the composition root's test seam),
 * except in the last test, which blocks the real event loop.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { AuditEvent } from '../../../src/audit/port.js'
import { ADMIN_KEYS, basic, bearer, encodeForm, SECRET, startTestBroker, type TestBroker } from '../../support/broker.js'
import { recorder, valueAt } from '../telemetry/support.js'
import { exchange, expectOAuthError, expectToken } from './helpers.js'

const brokers: TestBroker[] = []
afterEach(async () => {
  for (const b of brokers.splice(0)) await b.close()
})

async function broker(options: Parameters<typeof startTestBroker>[0]): Promise<TestBroker> {
  const b = await startTestBroker({ logLevel: 'debug', ...options })
  brokers.push(b)
  return b
}

const secretAgent = () => basic('secret-agent', SECRET)

/** A POST whose form body is a stream that records whether anyone read it. */
function streamedPost(b: TestBroker, path: string, body: string, headers: Record<string, string>) {
  let pulled = false
  const stream = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        pulled = true
        controller.enqueue(new TextEncoder().encode(body))
        controller.close()
      },
    },
    // Nothing is pulled until someone reads.
    { highWaterMark: 0 },
  )
  const request = new Request(`http://localhost${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: stream,
    duplex: 'half',
  })
  return { response: Promise.resolve(b.mandate.app.request(request)), pulled: () => pulled }
}

const form = (b: TestBroker, path: string, fields: Record<string, string>, headers: Record<string, string>) =>
  Promise.resolve(
    b.mandate.app.request(path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: encodeForm(fields) }),
  )

const issuedOrDenied = (b: TestBroker) => b.audit.events().filter((e: AuditEvent) => e.type === 'token.issued' || e.type === 'token.denied').length
const refusedLines = (b: TestBroker) => b.logs().filter((l) => l['msg'] === 'requests refused')
const errorLines = (b: TestBroker) => b.logs().filter((l) => l['level'] === 'error')

async function expectShed(res: Response): Promise<void> {
  const body = await expectOAuthError(res, 503, 'temporarily_unavailable')
  expect(body.error_description).toBe('the broker is overloaded; try again')
  expect(res.headers.get('retry-after')).toBe('1')
}

describe('load shedding', () => {
  it('while the event loop lags: token and introspection requests are shed before their body is read; the kill switch, health and metadata answer', async () => {
    let lag = 0
    const telemetry = recorder()
    // Below 4, a lagging loop sheds even with no request in flight.
    const b = await broker({ loadSignals: { eventLoopLag: () => lag }, telemetry: telemetry.exporters, overload: { max_concurrent_requests: 3 } })
    const user = await b.userToken()
    const token = (await expectToken(await b.token(exchange(user), secretAgent()))).access_token

    // Control: without lag the same streamed request is read and answered.
    const read = streamedPost(b, '/oauth2/token', encodeForm(exchange(user)), secretAgent())
    await expectToken(await read.response)
    expect(read.pulled()).toBe(true)

    lag = 150
    const records = issuedOrDenied(b)
    const shed = streamedPost(b, '/oauth2/token', encodeForm(exchange(user)), secretAgent())
    await expectShed(await shed.response)
    expect(shed.pulled()).toBe(false)
    await expectShed(await form(b, '/oauth2/introspect', { token }, secretAgent()))
    // Nothing was authenticated, verified or recorded.
    expect(issuedOrDenied(b)).toBe(records)

    // Never shed: the kill switch, the probes, the metadata.
    const created = await b.mandate.app.request('/admin/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(ADMIN_KEYS.responder) },
      body: JSON.stringify({ agent: 'sub-agent', reason: 'overload test' }),
    })
    expect(created.status).toBe(201)
    expect((await form(b, '/oauth2/revoke', { token }, secretAgent())).status).toBe(200)
    for (const path of ['/healthz', '/readyz', '/.well-known/jwks.json', '/.well-known/oauth-authorization-server']) {
      expect((await b.mandate.app.request(path)).status, path).toBe(200)
    }
    expect((await b.mandate.app.request('/admin/revocations', { headers: bearer(ADMIN_KEYS.auditor) })).status).toBe(200)

    lag = 0
    await expectToken(await b.token(exchange(user), secretAgent()))

    expect(valueAt(await telemetry.metrics(), 'mandate.requests.shed', { reason: 'event_loop_lag' })).toBe(2)
    // Logged as refusals (the first at once); each keeps its request line, at info, naming the reason; no error line.
    expect(refusedLines(b)[0]).toMatchObject({ level: 'warn', causes: { 'overloaded: event_loop_lag': 1 } })
    const shedLines = b.logs().filter((l) => l['msg'] === 'request' && l['shed'] === 'event_loop_lag')
    expect(shedLines.map((l) => [l['level'], l['status']])).toEqual([
      ['info', 503],
      ['info', 503],
    ])
    expect(errorLines(b)).toEqual([])
  })

  it('not for a lagging loop while fewer than a quarter of max_concurrent_requests are in flight (a loop lagging for another reason)', async () => {
    const b = await broker({ loadSignals: { eventLoopLag: () => 500 } })
    await expectToken(await b.token(exchange(await b.userToken()), secretAgent()))
    expect(refusedLines(b)).toEqual([])
  })

  it('while the delegation log has more records waiting than its bound', async () => {
    let pending = 0
    const b = await broker({ loadSignals: { eventLoopLag: () => 0, auditPending: () => pending }, overload: { max_audit_pending: 100 } })
    const user = await b.userToken()
    pending = 100
    await expectToken(await b.token(exchange(user), secretAgent()))
    pending = 101
    await expectShed(await b.token(exchange(user), secretAgent()))
    expect(refusedLines(b)[0]).toMatchObject({ causes: { 'overloaded: audit_backlog': 1 } })
  })

  it('while max_concurrent_requests token requests are in flight; the kill switch is not held up by them', async () => {
    const b = await broker({ overload: { max_concurrent_requests: 2 } })
    const user = await b.userToken()
    // The two requests in flight wait for their token.issued record.
    let release = () => {}
    const gate = new Promise<void>((r) => (release = r))
    let waiting = 0
    const append = b.audit.append
    b.audit.append = async (event) => {
      if (event.type === 'token.issued') {
        waiting++
        await gate
      }
      return append(event)
    }
    const held = [b.token(exchange(user), secretAgent()), b.token(exchange(user), secretAgent())]
    await vi.waitFor(() => expect(waiting).toBe(2))
    await expectShed(await b.token(exchange(user), secretAgent()))
    const created = await b.mandate.app.request('/admin/revocations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(ADMIN_KEYS.responder) },
      body: JSON.stringify({ sub: 'mallory', reason: 'overload test' }),
    })
    expect(created.status).toBe(201)
    release()
    for (const res of held) await expectToken(await res)
    // Both done: room again.
    await expectToken(await b.token(exchange(user), secretAgent()))
    expect(refusedLines(b)[0]).toMatchObject({ causes: { 'overloaded: concurrency': 1 } })
  })

  it('on the real event loop: a loop blocked for half a second sheds the next token request, and the broker serves again once it runs freely', async () => {
    const b = await broker({ loadSignals: {}, overload: { max_concurrent_requests: 3 } })
    const user = await b.userToken()
    await expectToken(await b.token(exchange(user), secretAgent()))
    const until = performance.now() + 500
    while (performance.now() < until) {
      // the loop is blocked
    }
    // One timer tick notes how late it ran.
    await new Promise((r) => setTimeout(r, 30))
    await expectShed(await b.token(exchange(user), secretAgent()))
    expect((await b.mandate.app.request('/healthz')).status).toBe(200)
    await vi.waitFor(async () => expect((await b.token(exchange(user), secretAgent())).status).toBe(200), { timeout: 10_000, interval: 50 })
  })
})
