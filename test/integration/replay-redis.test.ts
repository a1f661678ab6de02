/**
 * The Redis replay cache against a real Redis (`REDIS_URL`, default
 * redis://127.0.0.1:6379): set-if-absent, expiry by the injected clock, and
 * failing closed (a rejection, never a hang) when Redis is unreachable. Each
 * test owns a random key prefix and deletes its keys afterwards.
 */
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { randomUUID } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createRedisReplayCache } from '../../src/tokens/replay-redis.js'

const CLIENT_OPTIONS = REDIS_CLIENT_OPTIONS

const reachable = await redisAvailable('replay-redis')


const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

function client(url: string, options: RedisOptions = CLIENT_OPTIONS): Redis {
  const r = new Redis(url, options)
  r.on('error', () => {})
  cleanups.push(async () => void r.disconnect())
  return r
}

/** Like compose.ts: a connection without offline queue is used once ready. */
async function readyClient(url = REDIS_URL): Promise<Redis> {
  const r = client(url)
  if (r.status !== 'ready') await new Promise((resolve) => r.once('ready', resolve))
  return r
}

function newPrefix(redis: Redis): string {
  const prefix = `mandate-test:${randomUUID()}:`
  cleanups.push(async () => void (await deletePrefix(redis, prefix)))
  return prefix
}

const nowSeconds = () => Date.now() / 1000

describe.skipIf(!reachable)('redis replay cache', () => {
  it('remembers a key once: true, then false; another key is new', async () => {
    const redis = await readyClient()
    const prefix = newPrefix(redis)
    const cache = createRedisReplayCache(redis, prefix, nowSeconds)
    const exp = Math.floor(nowSeconds()) + 60
    expect(await cache.remember('agent-a:jti-1', exp)).toBe(true)
    expect(await cache.remember('agent-a:jti-1', exp)).toBe(false)
    expect(await cache.remember('agent-a:jti-2', exp)).toBe(true)
    expect(await cache.remember('agent-b:jti-1', exp)).toBe(true)
    expect(await redis.exists(`${prefix}jti:agent-a:jti-1`)).toBe(1)
  })

  it('is shared by every instance (one Redis, two clients)', async () => {
    const one = await readyClient()
    const two = await readyClient()
    const prefix = newPrefix(one)
    const exp = Math.floor(nowSeconds()) + 60
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => createRedisReplayCache(i % 2 === 0 ? one : two, prefix, nowSeconds).remember('a:j', exp)),
    )
    expect(results.filter(Boolean)).toHaveLength(1)
  })

  it('keeps the key for the rest of its lifetime by the injected clock', async () => {
    const redis = await readyClient()
    const prefix = newPrefix(redis)
    const fixed = 2_000_000_000 // far from the real clock on purpose
    const cache = createRedisReplayCache(redis, prefix, () => fixed)
    expect(await cache.remember('k', fixed + 120)).toBe(true)
    const ttl = await redis.pttl(`${prefix}jti:k`)
    expect(ttl).toBeGreaterThan(118_000)
    expect(ttl).toBeLessThanOrEqual(120_000)
    // Already past its expiry: still held for at least a second.
    expect(await cache.remember('past', fixed - 30)).toBe(true)
    const pastTtl = await redis.pttl(`${prefix}jti:past`)
    expect(pastTtl).toBeGreaterThan(0)
    expect(pastTtl).toBeLessThanOrEqual(1000)
  })

  it('forgets a key once it has expired', async () => {
    const redis = await readyClient()
    const prefix = newPrefix(redis)
    const cache = createRedisReplayCache(redis, prefix, nowSeconds)
    const exp = nowSeconds() + 1
    expect(await cache.remember('short', exp)).toBe(true)
    expect(await cache.remember('short', exp)).toBe(false)
    const started = Date.now()
    await vi.waitFor(async () => expect(await cache.remember('short', nowSeconds() + 60)).toBe(true), { timeout: 4000, interval: 100 })
    expect(Date.now() - started).toBeGreaterThanOrEqual(500)
  })

  it('rejects within 3 s when Redis is unreachable, whatever the client retries', async () => {
    // Default ioredis options: offline queue on, 20 retries per request. The cache must still not hang.
    const lenient = client('redis://127.0.0.1:1', {})
    const strict = client('redis://127.0.0.1:1')
    for (const redis of [lenient, strict]) {
      const cache = createRedisReplayCache(redis, 'mandate-test:unreachable:', nowSeconds)
      const started = Date.now()
      await expect(cache.remember('k', nowSeconds() + 60)).rejects.toThrow()
      expect(Date.now() - started).toBeLessThan(3000)
    }
  })
})
