/**
 * What each admission store does beyond the port's contract (whose suite,
 * test/contract/admission-store.test.ts, runs on both): the process-local
 * store's memory by the injected clock, and what only Redis has: a FLUSHALL
 * and a restart of a Redis that keeps nothing on disk (a private
 * redis-server, never the shared one), the key lifetimes, several instances
 * at once, and failing closed when Redis does not answer.
 * The clock is injected: buckets refill and memory begins by it, never by
 * sleeping. Each Redis test owns a key prefix and deletes it.
 */
import { randomUUID } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createMemoryAdmissionStore } from '../../src/admission/memory.js'
import type { AssertionUse, BucketCharge } from '../../src/admission/port.js'
import { createRedisAdmissionStore } from '../../src/admission/redis.js'
import type { AgentId } from '../../src/core/claims.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { redisServerAvailable, startPrivateRedis, type PrivateRedis } from '../support/redis-server.js'

const T0 = 1_800_000_000_000 // epoch ms
const A = 'agent-a' as AgentId

const reachable = await redisAvailable('admission')

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

// ioredis's RedisOptions declares `replyMapping` `| undefined` and its constructor does not:
// under exactOptionalPropertyTypes a whole RedisOptions does not fit the constructor.
type ClientOptions = Omit<RedisOptions, 'replyMapping'>

function client(url: string, options: ClientOptions = REDIS_CLIENT_OPTIONS): Redis {
  const r = new Redis(url, options)
  r.on('error', () => {})
  cleanups.push(async () => r.disconnect())
  return r
}

/** Like compose.ts: a connection without offline queue, used once ready. */
async function readyClient(url = REDIS_URL, options: ClientOptions = REDIS_CLIENT_OPTIONS): Promise<Redis> {
  const r = client(url, options)
  if (r.status !== 'ready') await new Promise((resolve) => r.once('ready', resolve))
  return r
}

function newPrefix(redis: Redis): string {
  const prefix = `mandate-test:${randomUUID()}:`
  cleanups.push(async () => {
    await deletePrefix(redis, prefix)
  })
  return prefix
}

/** An assertion issued at `iat` (ms), 60 s long, as client-auth describes one with 30 s skew and 300 s max lifetime. */
function assertion(key: string, iat: number): AssertionUse {
  return { key, earliestUse: Math.max(iat - 30_000, iat + 60_000 - 300_000), expiresAt: iat + 90_000 }
}

const agentBucket = (agent: AgentId, limit: { perSecond: number; burst: number }): BucketCharge => ({ scope: 'agent', agent, limit })
const userBucket = (agent: AgentId, issuer: string, sub: string, limit: { perSecond: number; burst: number }): BucketCharge => ({
  scope: 'user',
  agent,
  issuer,
  sub,
  limit,
})

interface Clock {
  now: number
  readonly read: () => number
}
function clockAt(ms: number): Clock {
  const c = { now: ms, read: () => c.now }
  return c
}

describe('admission store: memory only', () => {
  it('forgets a spent jti once it expired, by the injected clock', async () => {
    const clock = clockAt(T0)
    const store = createMemoryAdmissionStore(clock.read)
    const use = { key: 'a:j', earliestUse: T0, expiresAt: T0 + 60_000 }
    expect((await store.admit({ assertion: use, buckets: [] })).outcome).toBe('admitted')
    clock.now = T0 + 59_999
    expect((await store.admit({ assertion: use, buckets: [] })).outcome).toBe('replayed')
    clock.now = T0 + 60_000
    expect((await store.admit({ assertion: use, buckets: [] })).outcome).toBe('admitted')
  })

  it('a new process remembers nothing and so refuses what a previous one may have accepted', async () => {
    const clock = clockAt(T0)
    const before = createMemoryAdmissionStore(clock.read)
    clock.now = T0 + 40_000
    const a = assertion('a:j', clock.now)
    expect((await before.admit({ assertion: a, buckets: [] })).outcome).toBe('admitted')
    clock.now += 5_000
    const restarted = createMemoryAdmissionStore(clock.read)
    expect(await restarted.admit({ assertion: a, buckets: [] })).toEqual({ outcome: 'predates_memory', retryAfter: 35 })
  })
})

describe.skipIf(!reachable || !redisServerAvailable)('admission store: redis only', () => {
  it('keeps a spent jti until its expiry and a bucket until it would be full, by the injected clock', async () => {
    const redis = await readyClient()
    const prefix = newPrefix(redis)
    const store = await createRedisAdmissionStore(redis, prefix, () => T0)
    expect((await store.admit({ assertion: { key: 'a:j', earliestUse: T0, expiresAt: T0 + 120_000 }, buckets: [] })).outcome).toBe('admitted')
    const ttl = await redis.pttl(`${prefix}jti:a:j`)
    expect(ttl).toBeGreaterThan(118_000)
    expect(ttl).toBeLessThanOrEqual(120_000)
    // Already past its expiry: still held a second.
    expect((await store.admit({ assertion: { key: 'a:past', earliestUse: T0, expiresAt: T0 - 30_000 }, buckets: [] })).outcome).toBe('admitted')
    expect(await redis.pttl(`${prefix}jti:a:past`)).toBeLessThanOrEqual(1000)
    expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, { perSecond: 1, burst: 10 })] })).outcome).toBe('admitted')
    const bucketTtl = await redis.pttl(`${prefix}rl:a:${A}`)
    expect(bucketTtl).toBeGreaterThan(10_000)
    expect(bucketTtl).toBeLessThanOrEqual(11_000)
    // A user is named in a key by a hash, not by its sub.
    await store.admit({ assertion: undefined, buckets: [userBucket(A, 'https://idp.test', 'alice@example.com', { perSecond: 1, burst: 1 })] })
    const keys = await redis.keys(`${prefix}rl:u:*`)
    expect(keys).toHaveLength(1)
    expect(keys[0]).not.toContain('alice')
  })

  it('starts its memory when created on an empty prefix, and keeps an older one', async () => {
    const redis = await readyClient()
    const prefix = newPrefix(redis)
    await createRedisAdmissionStore(redis, prefix, () => T0)
    expect(await redis.get(`${prefix}replay:since`)).toBe(String(T0))
    await createRedisAdmissionStore(redis, prefix, () => T0 + 99_000)
    expect(await redis.get(`${prefix}replay:since`)).toBe(String(T0))
  })

  it('is shared by every instance: of 20 concurrent uses of one jti through two connections, one is admitted', async () => {
    const one = await readyClient(REDIS_URL, { ...REDIS_CLIENT_OPTIONS, enableAutoPipelining: true })
    const two = await readyClient(REDIS_URL, { ...REDIS_CLIENT_OPTIONS, enableAutoPipelining: true })
    const prefix = newPrefix(one)
    const stores = [await createRedisAdmissionStore(one, prefix, () => T0), await createRedisAdmissionStore(two, prefix, () => T0)]
    const use = { key: 'a:j', earliestUse: T0, expiresAt: T0 + 60_000 }
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => stores[i % 2]!.admit({ assertion: use, buckets: [] })))
    expect(results.filter((r) => r.outcome === 'admitted')).toHaveLength(1)
    // And one bucket: a burst of 7 across both admits 7.
    const limit = { perSecond: 1 / 60, burst: 7 }
    const drawn = await Promise.all(Array.from({ length: 20 }, (_, i) => stores[i % 2]!.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })))
    expect(drawn.filter((r) => r.outcome === 'admitted')).toHaveLength(7)
  })

  it('rejects within 3 s when Redis is unreachable, whatever the client retries', async () => {
    // Creation itself needs Redis (it sets the marker): refused, not hung.
    let started = Date.now()
    await expect(createRedisAdmissionStore(client('redis://127.0.0.1:1'), 'mandate-test:unreachable:', () => T0)).rejects.toThrow()
    expect(Date.now() - started).toBeLessThan(3000)
    // A store whose Redis goes away: default ioredis options (offline queue, 20 retries per request) must not hang it either.
    const server = await startPrivateRedis()
    try {
      const lenient = client(server.url, {})
      const store = await createRedisAdmissionStore(lenient, 'mandate:', () => T0)
      await server.stop()
      started = Date.now()
      await expect(store.admit({ assertion: assertion('a:j', T0), buckets: [] })).rejects.toThrow()
      expect(Date.now() - started).toBeLessThan(3000)
    } finally {
      await server.stop()
    }
  })
})

describe.skipIf(!redisServerAvailable)('admission store: a Redis that loses everything (private redis-server)', () => {
  let server: PrivateRedis
  beforeAll(async () => {
    server = await startPrivateRedis()
  })
  afterAll(async () => {
    await server?.stop()
  })

  for (const loss of ['FLUSHALL', 'restart'] as const) {
    it(`after a ${loss}, refuses an assertion spent before it, and admits a new one once past the skew`, async () => {
      const redis = client(server.url, { ...REDIS_CLIENT_OPTIONS, enableAutoPipelining: true })
      if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve))
      const clock = clockAt(T0)
      const store = await createRedisAdmissionStore(redis, 'mandate:', clock.read)
      clock.now = T0 + 100_000
      const spent = assertion('a:spent', clock.now)
      expect((await store.admit({ assertion: spent, buckets: [] })).outcome).toBe('admitted')
      expect((await store.admit({ assertion: spent, buckets: [] })).outcome).toBe('replayed')

      clock.now += 5_000
      if (loss === 'FLUSHALL') await server.flush()
      else {
        await server.restart()
        // ioredis reconnects by itself (no offline queue): wait until it has.
        if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve))
      }
      // The jti is gone from Redis, but the assertion predates the store's new memory.
      expect(await store.admit({ assertion: spent, buckets: [] })).toEqual({ outcome: 'predates_memory', retryAfter: 35 })
      expect(Number(await redis.get('mandate:replay:since'))).toBe(clock.now)
      // A new assertion made now could still be 30 s early by a fast client clock; 30 s on, one passes.
      expect((await store.admit({ assertion: assertion('a:fresh', clock.now), buckets: [] })).outcome).toBe('predates_memory')
      clock.now += 30_000
      expect(await store.admit({ assertion: assertion('a:fresh-2', clock.now), buckets: [] })).toEqual({ outcome: 'admitted' })
      expect(await store.admit({ assertion: spent, buckets: [] })).toMatchObject({ outcome: 'predates_memory' })
      await server.flush()
    })
  }
})
