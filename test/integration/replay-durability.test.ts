/**
 * A client assertion the broker accepted is never accepted again within its
 * lifetime, even when the replay store forgets it (RFC 7523 §3 item 7):
 * Redis flushed (FLUSHALL), Redis restarted empty (a private redis-server
 * that keeps nothing on disk, never the shared one), and a restart of an
 * embedded broker, whose store is its process memory. Each time the spent
 * assertion is refused 503 with the wait a new one needs, and a new one
 * passes once a fast client clock could no longer make it look older.
 */
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { CLIENT_ASSERTION_TYPE_JWT, startTestBroker, T0, type TestBroker } from '../support/broker.js'
import { redisServerAvailable, startPrivateRedis, type PrivateRedis } from '../support/redis-server.js'
import { exchange, expectOAuthError, expectToken } from '../unit/http/helpers.js'

/** `limits.clock_skew_seconds` of the test broker (the default). */
const SKEW = 30

async function exchangeWith(b: TestBroker, assertion: string): Promise<Response> {
  return b.token(exchange(await b.userToken({ groups: ['engineering'] }), { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: assertion }))
}

const issued = (b: TestBroker) => b.audit.events().filter((e) => e.type === 'token.issued').length

describe.skipIf(!redisServerAvailable)('spent assertions survive a Redis that lost everything', () => {
  let server: PrivateRedis
  beforeAll(async () => {
    server = await startPrivateRedis()
  })
  afterAll(async () => {
    await server?.stop()
  })

  for (const loss of ['FLUSHALL', 'restart'] as const) {
    it(`after a ${loss}: the spent assertion is refused, a new one passes ${SKEW} s later`, async () => {
      const b = await startTestBroker({ storage: { redis_url: server.url, key_prefix: `mandate-test:${randomUUID()}:` } })
      try {
        const spent = await b.assertion()
        await expectToken(await exchangeWith(b, spent))
        await expectOAuthError(await exchangeWith(b, spent), 401, 'invalid_client')
        const before = issued(b)

        b.advance(5)
        if (loss === 'FLUSHALL') await server.flush()
        else await server.restart()

        // Until the broker's connection is back the answer is 503 (Retry-After 1); never a token.
        const statuses: number[] = []
        await vi.waitFor(
          async () => {
            const res = await exchangeWith(b, spent)
            statuses.push(res.status)
            await expectOAuthError(res, 503, 'temporarily_unavailable')
            // The spent assertion may have been accepted up to 30 s (skew) before its iat, T0: 35 s before now.
            expect(res.headers.get('retry-after')).toBe('35')
          },
          { timeout: 10_000, interval: 100 },
        )
        expect(statuses).not.toContain(200)
        expect(issued(b)).toBe(before)

        // A new assertion made now is refused too, for as long as a client clock 30 s fast could have made it before.
        const res = await exchangeWith(b, await b.assertion())
        await expectOAuthError(res, 503, 'temporarily_unavailable')
        expect(res.headers.get('retry-after')).toBe(String(SKEW))
        b.advance(SKEW)
        await vi.waitFor(async () => expectToken(await exchangeWith(b, await b.assertion())), { timeout: 5_000, interval: 100 })
        await expectOAuthError(await exchangeWith(b, spent), 503, 'temporarily_unavailable')
        expect(issued(b)).toBe(before + 1)
      } finally {
        await b.close()
      }
    })
  }
})

describe('spent assertions survive a restart of an embedded broker', () => {
  it('the restarted broker refuses an assertion its previous process accepted; a new one passes 30 s after its start', async () => {
    const first = await startTestBroker()
    const spent = await first.assertion()
    try {
      await expectToken(await exchangeWith(first, spent))
    } finally {
      await first.close()
    }
    // Same agent key, same issuer: a new process, 5 s later.
    const restarted = await startTestBroker({ agentKeys: first.agentKeys, startAt: T0 + 5 })
    try {
      const res = await exchangeWith(restarted, spent)
      await expectOAuthError(res, 503, 'temporarily_unavailable')
      expect(res.headers.get('retry-after')).toBe('35')
      await expectOAuthError(await exchangeWith(restarted, await restarted.assertion()), 503, 'temporarily_unavailable')
      restarted.advance(SKEW)
      await expectToken(await exchangeWith(restarted, await restarted.assertion()))
      await expectOAuthError(await exchangeWith(restarted, spent), 503, 'temporarily_unavailable')
      // Refused before anyone was authenticated: no audit record.
      expect(restarted.audit.events().filter((e) => e.type === 'token.denied')).toHaveLength(0)
    } finally {
      await restarted.close()
    }
  })
})
