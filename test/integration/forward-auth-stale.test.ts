/**
 * GET /forward-auth while the revocation state is unknown (the broker's
 * Redis cut, through a TCP proxy, and its clock moved past
 * `revocation.max_staleness_ms`): a token that would be allowed gets 503
 * `temporarily_unavailable` with Retry-After, never 200 (fail closed); a
 * token that would be refused anyway (another audience, a missing scope, no
 * token) is refused as such. Once Redis is back and heard from, 200 again.
 *
 * Redis: `REDIS_URL` (default redis://127.0.0.1:6379); the test owns a key
 * prefix and deletes its keys.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AUDIENCE, basic, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'
import { startTcpProxy, type TcpProxy } from '../support/proxy.js'
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'

const reachable = await redisAvailable('forward-auth-stale')

describe.runIf(reachable)('forward auth with the revocation state unknown', () => {
  const prefix = `test:forward-auth-stale:${randomUUID()}:`
  let proxy: TcpProxy
  let b: TestBroker
  beforeAll(async () => {
    proxy = await startTcpProxy(REDIS_URL)
    b = await startTestBroker({ storage: { redis_url: proxy.url, key_prefix: prefix }, logLevel: 'warn' })
  })
  afterAll(async () => {
    await b?.close()
    await proxy?.close()
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1, connectTimeout: 2000 })
    await deletePrefix(redis, prefix).finally(() => redis.disconnect())
  })

  const ask = (query: string, token?: string) =>
    Promise.resolve(b.mandate.app.request(`/forward-auth${query}`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } }))
  const aud = `?audience=${encodeURIComponent(AUDIENCE)}`

  it('503 with Retry-After instead of 200; refusals that need no revocation state stay refusals', async () => {
    const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))
    expect(res.status).toBe(200)
    const token = ((await res.json()) as { access_token: string }).access_token
    expect((await ask(aud, token)).status).toBe(200)

    proxy.cut()
    b.advance(2) // past revocation.max_staleness_ms (1 s), with nothing heard from Redis
    expect(b.mandate.revocations.fresh()).toBe(false)

    const stale = await ask(aud, token)
    expect(stale.status).toBe(503)
    expect(stale.headers.get('retry-after')).toBe('1')
    expect(stale.headers.get('cache-control')).toMatch(/no-store/)
    expect(stale.headers.get('x-mandate-subject')).toBeNull()
    expect(((await stale.json()) as { error: string }).error).toBe('temporarily_unavailable')

    expect((await ask(`?audience=${encodeURIComponent('https://elsewhere.test')}`, token)).status).toBe(401)
    expect((await ask(`${aud}&scope=write`, token)).status).toBe(403)
    expect((await ask(aud)).status).toBe(401)
    expect((await ask(aud, 'a.b.c')).status).toBe(401)

    proxy.restore()
    // Heard from Redis again (the feed reconnects on its own): polled, bounded.
    const deadline = Date.now() + 10_000
    while (!b.mandate.revocations.fresh() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(b.mandate.revocations.fresh()).toBe(true)
    expect((await ask(aud, token)).status).toBe(200)
  })
})
