/**
 * Failed client authentication backs off, per source address and per
 * client id (+ address), at /oauth2/token, /oauth2/introspect and
 * /oauth2/revoke, and /ssf/poll: a secret cannot be guessed at line rate, and an attacker
 * failing on purpose does not lock an agent out where it runs. Over real
 * sockets: the broker is served on 127.0.0.1, which the config trusts as a
 * proxy, so X-Forwarded-For names each caller. The clock is injected; blocks
 * end by `advance`, never by sleeping.
 */
import { serve, type ServerType } from '@hono/node-server'
import type { AddressInfo } from 'node:net'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_KEYS, basic, bearer, encodeForm, RESOURCE_SERVERS, RS_SECRET, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { recorder, valueAt, type Recorder } from '../unit/telemetry/support.js'
import { exchange, expectOAuthError, expectToken } from '../unit/http/helpers.js'

interface Served {
  readonly b: TestBroker
  post(path: string, from: string | undefined, form: Record<string, string | string[]>, headers?: Record<string, string>): Promise<Response>
  /** POST /ssf/poll with a JSON body (RFC 8936 §2.4). */
  poll(from: string | undefined, body: unknown, headers: Record<string, string>): Promise<Response>
  close(): Promise<void>
}

async function served(b: TestBroker): Promise<Served> {
  const server: ServerType = serve({ fetch: b.mandate.app.fetch, hostname: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    b,
    post: (path, from, form, headers = {}) =>
      fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...(from === undefined ? {} : { 'x-forwarded-for': from }), ...headers },
        body: encodeForm(form),
      }),
    poll: (from, body, headers) =>
      fetch(`${base}/ssf/poll`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(from === undefined ? {} : { 'x-forwarded-for': from }), ...headers },
        body: JSON.stringify(body),
      }),
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await b.close()
    },
  }
}

let rec: Recorder
let s: Served
let user: string
beforeAll(async () => {
  rec = recorder()
  s = await served(await startTestBroker({ trustedProxies: ['127.0.0.1', '::1'], telemetry: rec.exporters }))
  user = await s.b.userToken()
})
afterAll(async () => {
  await s?.close()
})
afterEach(async () => {
  // Every test starts after every block of the previous one has ended and been forgotten.
  s.b.advance(7_200)
  user = await s.b.userToken()
})

const wrong = basic('secret-agent', 'not-the-secret')
const right = basic('secret-agent', SECRET)
const token = (from: string | undefined, headers: Record<string, string>) => s.post('/oauth2/token', from, exchange(user), headers)

async function expectBackOff(res: Response, retryAfter: string): Promise<void> {
  await expectOAuthError(res, 429, 'temporarily_unavailable')
  expect(res.headers.get('retry-after')).toBe(retryAfter)
}

describe('failed client authentication backs off', () => {
  it('per client at an address: 5 failures free, then 1 s, then 2 s; the right secret waits too; the agent elsewhere does not', async () => {
    for (let i = 0; i < 6; i++) await expectOAuthError(await token('192.0.2.10', wrong), 401, 'invalid_client')
    await expectBackOff(await token('192.0.2.10', right), '1')
    await expectBackOff(await token('192.0.2.10', wrong), '1')
    // Not locked out from elsewhere.
    await expectToken(await token('192.0.2.20', right))
    s.b.advance(1)
    await expectOAuthError(await token('192.0.2.10', wrong), 401, 'invalid_client')
    await expectBackOff(await token('192.0.2.10', right), '2')
    s.b.advance(2)
    // A success clears the client at that address.
    await expectToken(await token('192.0.2.10', right))
    await expectOAuthError(await token('192.0.2.10', wrong), 401, 'invalid_client')
    await expectToken(await token('192.0.2.10', right))
    const metrics = await rec.metrics()
    expect(valueAt(metrics, 'mandate.client_auth.throttled', { endpoint: 'token' })).toBeGreaterThanOrEqual(3)
  })

  it('per address: 20 failures with any client ids, then everything from there waits, other addresses do not', async () => {
    for (let i = 0; i < 21; i++) await expectOAuthError(await token('192.0.2.30', basic(`made-up-${i}`, 'x')), 401, 'invalid_client')
    await expectBackOff(await token('192.0.2.30', right), '1')
    await expectToken(await token('192.0.2.31', right))
  })

  it('per client id from many addresses: far above a working agent’s failures, and never where the agent runs', async () => {
    await expectToken(await token('10.1.2.3', right))
    for (let i = 0; i <= 200; i++) await expectOAuthError(await token(`198.51.100.${i % 250}`, wrong), 401, 'invalid_client')
    await expectBackOff(await token('203.0.113.99', right), '1')
    await expectToken(await token('10.1.2.3', right))
  })

  it('keys IPv6 callers by their /64: rotating addresses within it gains nothing', async () => {
    for (let i = 0; i < 21; i++) await expectOAuthError(await token(`2001:db8:1:2::${(i + 1).toString(16)}`, basic(`made-up-${i}`, 'x')), 401, 'invalid_client')
    await expectBackOff(await token('2001:db8:1:2:ffff:ffff:ffff:ffff', right), '1')
    await expectToken(await token('2001:db8:1:3::1', right))
  })

  it('at /oauth2/introspect and /oauth2/revoke too, admin-key guesses included', async () => {
    for (let i = 0; i < 21; i++)
      await expectOAuthError(await s.post('/oauth2/introspect', '192.0.2.40', { token: 'x' }, bearer(`guess-${i}`)), 401, 'invalid_client')
    await expectBackOff(await s.post('/oauth2/introspect', '192.0.2.40', { token: 'x' }, bearer(ADMIN_KEYS.auditor)), '1')
    await expectBackOff(await s.post('/oauth2/revoke', '192.0.2.40', { token: 'x' }, right), '1')
    await expectBackOff(await token('192.0.2.40', right), '1')
    for (let i = 0; i < 6; i++) await expectOAuthError(await s.post('/oauth2/revoke', '192.0.2.41', { token: 'x' }, wrong), 401, 'invalid_client')
    await expectBackOff(await s.post('/oauth2/introspect', '192.0.2.41', { token: 'x' }, right), '1')
    const metrics = await rec.metrics()
    expect(valueAt(metrics, 'mandate.client_auth.throttled', { endpoint: 'introspect' })).toBeGreaterThanOrEqual(2)
    expect(valueAt(metrics, 'mandate.client_auth.throttled', { endpoint: 'revoke' })).toBeGreaterThanOrEqual(1)
  })

  it('believes X-Forwarded-For only from a trusted proxy: a client cannot name itself someone else', async () => {
    const direct = await served(await startTestBroker())
    try {
      const userToken = await direct.b.userToken()
      // Every request comes from 127.0.0.1, whatever the header says: 21 failures from "21 addresses" are one address's.
      for (let i = 0; i < 21; i++) {
        await expectOAuthError(await direct.post('/oauth2/token', `192.0.2.${i}`, exchange(userToken), basic(`made-up-${i}`, 'x')), 401, 'invalid_client')
      }
      await expectBackOff(await direct.post('/oauth2/token', '192.0.2.200', exchange(userToken), right), '1')
    } finally {
      await direct.close()
    }
    // Through the trusted proxy, only the hop the proxy appended counts, not what the client put left of it.
    for (let i = 0; i < 21; i++) await expectOAuthError(await token(`10.9.9.${i}, 192.0.2.50`, basic(`made-up-${i}`, 'x')), 401, 'invalid_client')
    await expectBackOff(await token('192.0.2.50', right), '1')
  })

  it('logs the refusals once per endpoint per interval, not once each', async () => {
    const b = await startTestBroker({ trustedProxies: ['127.0.0.1'] })
    const one = await served(b)
    const userToken = await b.userToken()
    try {
      for (let i = 0; i < 6; i++) await one.post('/oauth2/token', '192.0.2.60', exchange(userToken), wrong)
      for (let i = 0; i < 10; i++) await expectBackOff(await one.post('/oauth2/token', '192.0.2.60', exchange(userToken), wrong), '1')
    } finally {
      await one.close()
    }
    const summaries = b.logs().filter((l) => l['msg'] === 'requests refused by the failed-authentication back-off')
    expect(summaries).toEqual([expect.objectContaining({ endpoint: 'token', refused: 10, causes: { back_off: 10 } })])
  })
})

describePostgres('failed client authentication backs off at /ssf/poll (RFC 8936)', () => {
  let db: TestDatabase
  let p: Served
  let pollRec: Recorder
  const receiver = basic(RESOURCE_SERVERS.api, RS_SECRET)
  const guess = basic(RESOURCE_SERVERS.api, 'not-the-secret')
  const poll = (from: string, headers: Record<string, string>) => p.poll(from, { returnImmediately: true, maxEvents: 0 }, headers)

  async function expectSetError(res: Response, status: number, err: string): Promise<void> {
    expect(res.status).toBe(status)
    expect(res.headers.get('cache-control')).toContain('no-store')
    expect(((await res.json()) as { err?: unknown }).err).toBe(err)
  }

  beforeAll(async () => {
    db = await createTestDatabase()
    pollRec = recorder()
    const b = await startTestBroker({
      database: db.url,
      trustedProxies: ['127.0.0.1', '::1'],
      telemetry: pollRec.exporters,
      ssf: { receivers: [{ name: 'rs-api', audience: 'https://rs.test/events', delivery: { method: 'poll', resource_server: RESOURCE_SERVERS.api } }] },
    })
    p = await served(b)
  })
  afterAll(async () => {
    await p?.close()
    await db?.drop()
  })

  it('per receiver at an address: 5 wrong secrets free, then 429 with Retry-After even for the right one; the receiver elsewhere polls', async () => {
    await expectSetError(await poll('192.0.2.70', guess), 401, 'authentication_failed')
    for (let i = 0; i < 5; i++) await expectSetError(await poll('192.0.2.70', guess), 401, 'authentication_failed')
    const waited = await poll('192.0.2.70', receiver)
    expect(waited.headers.get('retry-after')).toBe('1')
    await expectSetError(waited, 429, 'temporarily_unavailable')
    expect((await poll('192.0.2.71', receiver)).status).toBe(200)
    p.b.advance(1)
    expect((await poll('192.0.2.70', receiver)).status).toBe(200)
    // The success cleared the receiver at that address: five more guesses are free again.
    for (let i = 0; i < 5; i++) await expectSetError(await poll('192.0.2.70', guess), 401, 'authentication_failed')
    expect((await poll('192.0.2.70', receiver)).status).toBe(200)
    const metrics = await pollRec.metrics()
    expect(valueAt(metrics, 'mandate.client_auth.throttled', { endpoint: 'ssf_poll' })).toBeGreaterThanOrEqual(1)
  })

  it('per address: 20 failures with made-up ids or malformed credentials, then the receiver waits there too, and at the token endpoint', async () => {
    for (let i = 0; i < 21; i++) {
      const headers = i % 3 === 0 ? { authorization: 'Basic !!!' } : i % 3 === 1 ? basic(`made-up-${i}`, 'x') : {}
      await expectSetError(await poll('192.0.2.80', headers), 401, 'authentication_failed')
    }
    await expectSetError(await poll('192.0.2.80', receiver), 429, 'temporarily_unavailable')
    await expectBackOff(await p.post('/oauth2/introspect', '192.0.2.80', { token: 'x' }, receiver), '1')
    expect((await poll('192.0.2.81', receiver)).status).toBe(200)
  })
})
