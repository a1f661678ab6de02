/**
 * The admission store contract (spent client assertions, token buckets), run
 * on the process-local store and on Redis: the same decisions from both. Then
 * what only Redis has: a FLUSHALL and a restart of a Redis that keeps nothing
 * on disk (a private redis-server, never the shared one), the key lifetimes,
 * several instances at once, and failing closed when Redis does not answer.
 * The clock is injected: buckets refill and memory begins by it, never by
 * sleeping. Each Redis test owns a key prefix and deletes it.
 */
import { randomUUID } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createMemoryAdmissionStore } from '../../src/admission/memory.js'
import type { AdmissionStore, AssertionUse, BucketCharge } from '../../src/admission/port.js'
import { createRedisAdmissionStore } from '../../src/admission/redis.js'
import type { AgentId } from '../../src/core/claims.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { redisServerAvailable, startPrivateRedis, type PrivateRedis } from '../support/redis-server.js'

const T0 = 1_800_000_000_000 // epoch ms
const A = 'agent-a' as AgentId
const B = 'agent-b' as AgentId

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

const perSecond = (n: number, burst: number) => ({ perSecond: n, burst })
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

/** Opens a store on a fresh prefix (Redis) or a fresh process (memory), its memory beginning at `clock`'s time. */
type Open = (clock: Clock) => Promise<AdmissionStore>

function describeAdmissionStore(name: string, open: Open, options: { describe?: (name: string, fn: () => void) => void } = {}): void {
  const suite = options.describe ?? describe
  suite(`admission store: ${name}`, () => {
    it('spends a jti once: admitted, then replayed; another jti, or another agent’s, is new', async () => {
      const clock = clockAt(T0)
      const store = await open(clock)
      const t = (clock.now = T0 + 60_000)
      expect(await store.admit({ assertion: assertion('agent-a:j1', t), buckets: [] })).toEqual({ outcome: 'admitted' })
      expect(await store.admit({ assertion: assertion('agent-a:j1', t), buckets: [] })).toEqual({ outcome: 'replayed' })
      expect(await store.admit({ assertion: assertion('agent-a:j2', t), buckets: [] })).toEqual({ outcome: 'admitted' })
      expect(await store.admit({ assertion: assertion('agent-b:j1', t), buckets: [] })).toEqual({ outcome: 'admitted' })
    })

    it('refuses an assertion that may have been spent before its memory began, and says when a new one passes', async () => {
      const clock = clockAt(T0)
      const store = await open(clock)
      // Issued 10 s before the memory began: with 30 s of skew it may have been accepted 40 s before.
      expect(await store.admit({ assertion: assertion('a:old', T0 - 10_000), buckets: [] })).toEqual({ outcome: 'predates_memory', retryAfter: 40 })
      // Issued right at the start: the client's clock may run 30 s fast, so it may predate it.
      expect(await store.admit({ assertion: assertion('a:now', T0), buckets: [] })).toEqual({ outcome: 'predates_memory', retryAfter: 30 })
      clock.now = T0 + 30_000
      expect(await store.admit({ assertion: assertion('a:later', T0 + 30_000), buckets: [] })).toEqual({ outcome: 'admitted' })
      // An assertion as long as the longest lifetime allowed cannot predate anything it was issued after.
      const long = { key: 'a:long', earliestUse: T0, expiresAt: T0 + 300_000 }
      expect(await store.admit({ assertion: long, buckets: [] })).toEqual({ outcome: 'admitted' })
      // A refused request draws from no bucket.
      expect(await store.admit({ assertion: assertion('a:old', T0 - 10_000), buckets: [agentBucket(A, perSecond(1, 1))] })).toMatchObject({
        outcome: 'predates_memory',
      })
      expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, perSecond(1, 1))] })).toEqual({ outcome: 'admitted' })
    })

    it('lets a burst through at once, then one request per 1/rate, and says how long to wait', async () => {
      const clock = clockAt(T0)
      const store = await open(clock)
      const limit = { perSecond: 2, burst: 5 } // 120/min, burst 5
      for (let i = 0; i < 5; i++) expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'admitted' })
      expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 1 })
      clock.now += 499
      expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('limited')
      clock.now += 1
      expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'admitted' })
      expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('limited')
      // Another agent has a bucket of its own.
      expect(await store.admit({ assertion: undefined, buckets: [agentBucket(B, limit)] })).toEqual({ outcome: 'admitted' })
      // A long quiet spell refills up to the burst, not beyond.
      clock.now += 3_600_000
      for (let i = 0; i < 5; i++) expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('admitted')
      expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('limited')
    })

    it('waits the refill of a slow rate: 1/h with burst 1 says 3600 s', async () => {
      const clock = clockAt(T0)
      const store = await open(clock)
      const hourly = { perSecond: 1 / 3600, burst: 1 }
      expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, hourly)] })).outcome).toBe('admitted')
      expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, hourly)] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 3600 })
      clock.now += 1_800_000
      expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, hourly)] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 1800 })
    })

    it('keys a user bucket on the agent, the issuer and the sub together', async () => {
      const clock = clockAt(T0)
      const store = await open(clock)
      const one = { perSecond: 1 / 60, burst: 1 }
      const alice = userBucket(A, 'https://idp-1.test', 'alice', one)
      expect((await store.admit({ assertion: undefined, buckets: [alice] })).outcome).toBe('admitted')
      expect(await store.admit({ assertion: undefined, buckets: [alice] })).toEqual({ outcome: 'limited', scope: 'user', retryAfter: 60 })
      // Same sub at another issuer, another sub, another agent: other users' buckets.
      expect((await store.admit({ assertion: undefined, buckets: [userBucket(A, 'https://idp-2.test', 'alice', one)] })).outcome).toBe('admitted')
      expect((await store.admit({ assertion: undefined, buckets: [userBucket(A, 'https://idp-1.test', 'bob', one)] })).outcome).toBe('admitted')
      expect((await store.admit({ assertion: undefined, buckets: [userBucket(B, 'https://idp-1.test', 'alice', one)] })).outcome).toBe('admitted')
      // Separators cannot be forged into another user's key.
      expect((await store.admit({ assertion: undefined, buckets: [userBucket(A, 'https://idp-1.test\nalice', '', one)] })).outcome).toBe('admitted')
    })

    it('draws from every bucket or from none: a request refused by the user limit leaves the agent’s tokens', async () => {
      const clock = clockAt(T0)
      const store = await open(clock)
      const agent = agentBucket(A, { perSecond: 1 / 60, burst: 2 })
      const user = userBucket(A, 'https://idp.test', 'alice', { perSecond: 1 / 60, burst: 1 })
      expect((await store.admit({ assertion: undefined, buckets: [agent, user] })).outcome).toBe('admitted')
      expect(await store.admit({ assertion: undefined, buckets: [agent, user] })).toEqual({ outcome: 'limited', scope: 'user', retryAfter: 60 })
      expect(await store.admit({ assertion: undefined, buckets: [agent, user] })).toEqual({ outcome: 'limited', scope: 'user', retryAfter: 60 })
      // The agent bucket still holds its second token.
      expect((await store.admit({ assertion: undefined, buckets: [agent] })).outcome).toBe('admitted')
      expect(await store.admit({ assertion: undefined, buckets: [agent] })).toMatchObject({ outcome: 'limited', scope: 'agent' })
    })

    it('spends the assertion of a request refused by a limit, and draws nothing for a replay', async () => {
      const clock = clockAt(T0)
      const limited = await open(clock)
      clock.now = T0 + 60_000
      const one = agentBucket(A, { perSecond: 1 / 60, burst: 1 })
      expect((await limited.admit({ assertion: assertion('a:1', clock.now), buckets: [one] })).outcome).toBe('admitted')
      expect((await limited.admit({ assertion: assertion('a:2', clock.now), buckets: [one] })).outcome).toBe('limited')
      expect(await limited.admit({ assertion: assertion('a:2', clock.now), buckets: [] })).toEqual({ outcome: 'replayed' })
      clock.now += 60_000
      // A replay draws no token: the next fresh request still finds one.
      expect(await limited.admit({ assertion: assertion('a:1', clock.now - 60_000), buckets: [one] })).toEqual({ outcome: 'replayed' })
      expect((await limited.admit({ assertion: assertion('a:3', clock.now), buckets: [one] })).outcome).toBe('admitted')
    })
  })
}

describeAdmissionStore('memory', async (clock) => createMemoryAdmissionStore(clock.read))

describeAdmissionStore(
  'redis',
  async (clock) => {
    const redis = await readyClient()
    return createRedisAdmissionStore(redis, newPrefix(redis), clock.read)
  },
  { describe: describe.skipIf(!reachable) },
)

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
