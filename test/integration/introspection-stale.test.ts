/**
 * Introspection while the revocation state is unknown (the broker's Redis
 * cut, through a TCP proxy, and the broker's clock moved past
 * `revocation.max_staleness_ms`): a caller that may see the token gets 503,
 * never `active: true`; a caller that may not see it gets `{"active": false}`,
 * as it would any other time, so that even a 503 tells it nothing about a
 * token that is not its own.
 *
 * Redis: `REDIS_URL` (default redis://127.0.0.1:6379); the test owns a key
 * prefix and deletes its keys.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ADMIN_KEYS, basic, bearer, encodeForm, RESOURCE_SERVERS, RS_SECRET, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'
import { startTcpProxy, type TcpProxy } from '../support/proxy.js'
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'

const reachable = await redisAvailable('introspection-stale')

describe.runIf(reachable)('introspection with the revocation state unknown', () => {
  const prefix = `test:introspect-stale:${randomUUID()}:`
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

  const introspect = (token: string, headers: Record<string, string>) =>
    Promise.resolve(
      b.mandate.app.request('/oauth2/introspect', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: encodeForm({ token }),
      }),
    )

  it('503 for those who may see the token, {"active": false} for everyone else', async () => {
    const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))
    expect(res.status).toBe(200)
    const token = ((await res.json()) as { access_token: string }).access_token
    expect(((await (await introspect(token, bearer(ADMIN_KEYS.auditor))).json()) as { active: boolean }).active).toBe(true)

    proxy.cut()
    b.advance(2) // past revocation.max_staleness_ms (1 s), with nothing heard from Redis
    expect(b.mandate.revocations.fresh()).toBe(false)

    for (const allowed of [bearer(ADMIN_KEYS.auditor), basic('secret-agent', SECRET), basic(RESOURCE_SERVERS.api, RS_SECRET)]) {
      const r = await introspect(token, allowed)
      expect(r.status).toBe(503)
      expect(((await r.json()) as { error: string }).error).toBe('temporarily_unavailable')
    }
    // Another agent (an assertion-authenticated caller would need the replay cache, in the Redis that is cut).
    const r = await introspect(token, basic('sub-agent', SECRET))
    expect(r.status).toBe(200)
    expect(await r.text()).toBe('{"active":false}')
    proxy.restore()
  })
})
