/**
 * The Redis revocation feed against a real Redis (`REDIS_URL`, default
 * redis://127.0.0.1:6379): propagation latency (docs/ARCHITECTURE.md "The kill switch":
 * p99 < 100 ms), lifts, a flush (reseed from the durable log, write-back
 * from mirrors), staleness and recovery, publish while unreachable, and
 * reconcile of records stored durably during an outage.
 *
 * Outages are made with a TCP proxy in this file between one feed and Redis:
 * `cut()` resets every connection and refuses new ones, `pause()` stops
 * forwarding bytes (a silent network partition). Each test owns a random key
 * prefix and deletes its keys afterwards (SCAN + DEL; never FLUSHDB on the
 * shared server: a "flush" deletes the prefix's keys).
 *
 * The mirror and the durable log are small in-test implementations that record
 * what the feed does to them (`apply`/`replaceAll` calls).
 */
import { startTcpProxy, type TcpProxy } from '../support/proxy.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { randomUUID } from 'node:crypto'
import { Writable } from 'node:stream'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import type { Revocation, RevocationFeed, RevocationLog, RevocationMirror, RevocationTarget } from '../../src/revocation/port.js'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import { decodeRevocation, encodeRevocation } from '@mandate/verifier/codec'
import { createRedisRevocationFeed } from '../../src/revocation/redis.js'

const STALE_AFTER_MS = 1000
const BLOCK_MS = 250
const CLIENT_OPTIONS = REDIS_CLIENT_OPTIONS

const reachable = await redisAvailable('revocation-redis')

// ---------------------------------------------------------------- fixtures

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

/** A Redis client of the test's own, closed after the test (not yet connected). */
function client(url = REDIS_URL): Redis {
  const r = new Redis(url, CLIENT_OPTIONS)
  r.on('error', () => {})
  cleanups.push(async () => r.disconnect())
  return r
}

/** Like compose.ts: a command connection without offline queue is used once ready. */
async function readyClient(url = REDIS_URL): Promise<Redis> {
  const r = client(url)
  if (r.status !== 'ready') await new Promise((resolve) => r.once('ready', resolve))
  return r
}

/** A fresh prefix whose keys are removed after the test. */
function newPrefix(): string {
  const prefix = `mandate-test:${randomUUID()}:`
  cleanups.push(async () => {
    const admin = new Redis(REDIS_URL, { ...CLIENT_OPTIONS, enableOfflineQueue: true })
    try {
      await deletePrefix(admin, prefix)
    } finally {
      admin.disconnect()
    }
  })
  return prefix
}

interface RecordingMirror extends RevocationMirror {
  readonly calls: { apply: number; replaceAll: number }
  get(id: string): Revocation | undefined
  /** Resolves with `performance.now()` of the first apply/replaceAll that makes `test` true for record `id`. */
  whenHolds(id: string, test?: (r: Revocation) => boolean): Promise<number>
}

function recordingMirror(): RecordingMirror {
  const byId = new Map<string, Revocation>()
  const calls = { apply: 0, replaceAll: 0 }
  const waiters: { id: string; test: (r: Revocation) => boolean; resolve: (at: number) => void }[] = []
  const notify = () => {
    const at = performance.now()
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!
      const r = byId.get(w.id)
      if (r !== undefined && w.test(r)) {
        waiters.splice(i, 1)
        w.resolve(at)
      }
    }
  }
  return {
    calls,
    apply(record) {
      calls.apply++
      byId.set(record.id, record)
      notify()
    },
    replaceAll(records) {
      calls.replaceAll++
      byId.clear()
      for (const r of records) byId.set(r.id, r)
      notify()
    },
    records: () => [...byId.values()].sort((a, b) => a.createdAt - b.createdAt),
    check: () => ({ state: 'clear' }),
    checkToken: () => ({ state: 'clear' }),
    get: (id) => byId.get(id),
    whenHolds(id, test = () => true) {
      const r = byId.get(id)
      if (r !== undefined && test(r)) return Promise.resolve(performance.now())
      return new Promise((resolve) => waiters.push({ id, test, resolve }))
    },
  }
}

/** The durable log, as an array. */
function arrayLog(): RevocationLog & { readonly rows: Revocation[] } {
  const rows: Revocation[] = []
  const relevant = (r: Revocation, now: number) => r.expiresAt === undefined || r.expiresAt > now
  return {
    rows,
    async insert(record) {
      rows.push(record)
    },
    async lift(id, by, at) {
      const i = rows.findIndex((r) => r.id === id)
      if (i < 0) return undefined
      const lifted = { ...rows[i]!, liftedAt: at, liftedBy: by }
      rows[i] = lifted
      return { record: lifted, changed: true }
    },
    async get(id) {
      return rows.find((r) => r.id === id)
    },
    async listRelevant(now) {
      return rows.filter((r) => relevant(r, now))
    },
    async list({ limit }) {
      return [...rows].reverse().slice(0, limit)
    },
  }
}

let serial = 0
function revocation(kind: RevocationTarget['kind'] = 'agent', overrides: Partial<Revocation> = {}): Revocation {
  const n = ++serial
  const nowSec = Math.floor(Date.now() / 1000)
  const target: RevocationTarget =
    kind === 'agent'
      ? { kind, agent: `agent-${n}` as AgentId }
      : kind === 'sub'
        ? { kind, sub: `user-${n}` as Subject, iss: 'https://idp.test' }
        : kind === 'agent_sub'
          ? { kind, agent: `agent-${n}` as AgentId, sub: `user-${n}` as Subject, iss: 'https://idp.test' }
          : kind === 'instance'
            ? { kind, agent: `agent-${n}` as AgentId, instance: `spiffe://example.org/pod-${n}` }
            : { kind, jti: `jti-${n}` as Jti }
  return {
    id: randomUUID(),
    target,
    // Marked so that the log check below can tell whether record contents leaked.
    reason: `SECRET-REASON-${n}`,
    createdBy: `SECRET-ADMIN-${n}`,
    createdAt: nowSec,
    expiresAt: kind === 'jti' || kind === 'chain' ? nowSec + 3600 : undefined,
    liftedAt: undefined,
    liftedBy: undefined,
    ...overrides,
  }
}

/** Every log line the feeds wrote, to check that no record contents leak. */
const logLines: string[] = []
const logger = pino(
  { level: 'debug' },
  new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(chunk.toString())
      done()
    },
  }),
)

interface Started {
  readonly feed: RevocationFeed
  readonly mirror: RecordingMirror
  readonly redis: Redis
}

async function startFeed(options: { prefix: string; log: RevocationLog; url?: string; mirror?: RecordingMirror }): Promise<Started> {
  const redis = await readyClient(options.url)
  const mirror = options.mirror ?? recordingMirror()
  const feed = await createRedisRevocationFeed({
    redis,
    prefix: options.prefix,
    mirror,
    log: options.log,
    now: () => Date.now(),
    staleAfterMs: STALE_AFTER_MS,
    blockMs: BLOCK_MS,
    logger,
  })
  cleanups.push(() => feed.close())
  return { feed, mirror, redis }
}

/** A cuttable TCP proxy to the Redis at REDIS_URL, closed after the test. */
async function startProxy(): Promise<TcpProxy> {
  const proxy = await startTcpProxy(REDIS_URL)
  cleanups.push(() => proxy.close())
  return proxy
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

async function hashIds(redis: Redis, prefix: string): Promise<string[]> {
  return (await redis.hkeys(`${prefix}rev:records`)).sort()
}

const WAIT = { timeout: 10_000, interval: 20 }

// ---------------------------------------------------------------- tests

describe.skipIf(!reachable)('redis revocation feed', () => {
  it('propagates a publish from one instance to another within 100 ms (p99, 200 publishes)', async () => {
    const prefix = newPrefix()
    const log = arrayLog()
    const a = await startFeed({ prefix, log })
    const b = await startFeed({ prefix, log })
    expect(a.feed.fresh()).toBe(true)
    expect(b.feed.fresh()).toBe(true)

    const latencies: number[] = []
    /** From calling publish, for comparison: includes A's own round trip. */
    const endToEnd: number[] = []
    for (let i = 0; i < 200; i++) {
      const record = revocation(i % 2 === 0 ? 'agent' : 'jti')
      const applied = b.mirror.whenHolds(record.id)
      await log.insert(record)
      const called = performance.now()
      await a.feed.publish(record)
      const published = performance.now()
      const at = await Promise.race([
        applied,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`record ${i} not applied within 2 s`)), 2000)),
      ])
      // B may apply it before A's publish promise has resolved: that counts as 0.
      latencies.push(Math.max(0, at - published))
      endToEnd.push(at - called)
    }
    latencies.sort((x, y) => x - y)
    endToEnd.sort((x, y) => x - y)
    const p50 = percentile(latencies, 50)
    const p99 = percentile(latencies, 99)
    const ms = (x: number) => `${x.toFixed(2)} ms`
    console.log(
      `revocation propagation over 200 publishes, publish resolved → other mirror applied: p50 ${ms(p50)}, p99 ${ms(p99)}, max ${ms(latencies.at(-1)!)}` +
        ` (${latencies.filter((l) => l === 0).length} applied before publish resolved);` +
        ` publish called → applied: p50 ${ms(percentile(endToEnd, 50))}, p99 ${ms(percentile(endToEnd, 99))}`,
    )
    expect(p99).toBeLessThan(100)
    expect(percentile(endToEnd, 99)).toBeLessThan(100)
    expect(b.mirror.records()).toHaveLength(200)
    await vi.waitFor(() => expect(a.mirror.records()).toHaveLength(200), WAIT)
    expect(await hashIds(a.redis, prefix)).toHaveLength(200)

    // No record contents in the logs: ids and kinds only.
    expect(logLines.filter((l) => l.includes('SECRET-'))).toEqual([])
  })

  it('replaces a record with its lifted version on the other instance, and never goes back', async () => {
    const prefix = newPrefix()
    const log = arrayLog()
    const a = await startFeed({ prefix, log })
    const b = await startFeed({ prefix, log })
    const kill = revocation('agent')
    await a.feed.publish(kill)
    await vi.waitFor(() => expect(b.mirror.get(kill.id)).toEqual(kill), WAIT)

    const lifted: Revocation = { ...kill, liftedAt: kill.createdAt + 5, liftedBy: 'responder' }
    await b.feed.publish(lifted)
    await vi.waitFor(() => expect(a.mirror.get(kill.id)).toEqual(lifted), WAIT)
    expect(b.mirror.get(kill.id)).toEqual(lifted)

    // A late publish of the unlifted version (e.g. a slow instance) does not revive the kill's old state.
    await a.feed.publish(kill)
    const marker = revocation('sub')
    await a.feed.publish(marker)
    await vi.waitFor(() => expect(b.mirror.get(marker.id)).toBeDefined(), WAIT)
    expect(b.mirror.get(kill.id)).toEqual(lifted)
    expect(decodeRevocation((await a.redis.hget(`${prefix}rev:records`, kill.id))!)).toEqual(lifted)
  })

  it('after a flush, reseeds from the durable log and writes back what only mirrors held', async () => {
    const prefix = newPrefix()
    const log = arrayLog()
    const a = await startFeed({ prefix, log })
    const b = await startFeed({ prefix, log })

    const logged = [revocation('agent'), revocation('chain'), revocation('agent_sub')]
    for (const r of logged) {
      await log.insert(r)
      await a.feed.publish(r)
    }
    const publishedNotLogged = revocation('sub')
    await a.feed.publish(publishedNotLogged)
    const onlyInLog = revocation('jti')
    await log.insert(onlyInLog)
    const onlyInMirrorA = revocation('agent')
    a.mirror.apply(onlyInMirrorA)
    await vi.waitFor(() => expect(b.mirror.get(publishedNotLogged.id)).toBeDefined(), WAIT)
    const epochBefore = await a.redis.get(`${prefix}rev:epoch`)
    expect(epochBefore).not.toBeNull()
    const resyncsA = a.mirror.calls.replaceAll
    const resyncsB = b.mirror.calls.replaceAll

    // "Flush": every key of this prefix goes.
    expect(await deletePrefix(a.redis, prefix)).toBeGreaterThan(0)

    // The epoch only ever appears over a hash that already holds every durable record (read atomically).
    const deadline = Date.now() + 10_000
    for (;;) {
      const [epochNow, ids] = (await a.redis.multi().get(`${prefix}rev:epoch`).hkeys(`${prefix}rev:records`).exec())!.map(([err, v]) => {
        if (err) throw err
        return v
      }) as [string | null, string[]]
      if (epochNow !== null) {
        expect(ids).toEqual(expect.arrayContaining([...logged, onlyInLog].map((r) => r.id)))
        break
      }
      if (Date.now() > deadline) throw new Error('no new epoch within 10 s')
    }

    const everything = [...logged, publishedNotLogged, onlyInLog, onlyInMirrorA].map((r) => r.id).sort()
    await vi.waitFor(async () => {
      const epoch = await a.redis.get(`${prefix}rev:epoch`)
      expect(epoch).not.toBeNull()
      expect(epoch).not.toBe(epochBefore)
      expect(await hashIds(a.redis, prefix)).toEqual(everything)
    }, WAIT)
    expect(a.mirror.calls.replaceAll).toBeGreaterThan(resyncsA)
    await vi.waitFor(() => expect(b.mirror.calls.replaceAll).toBeGreaterThan(resyncsB), WAIT)

    // Both instances end up with everything: the log's record and the other mirror's write-back included.
    for (const m of [a.mirror, b.mirror]) {
      await vi.waitFor(
        () =>
          expect(
            m
              .records()
              .map((r) => r.id)
              .sort(),
          ).toEqual(everything),
        WAIT,
      )
    }

    // A third instance started now has the whole list as soon as it is created.
    const c = await startFeed({ prefix, log })
    expect(
      c.mirror
        .records()
        .map((r) => r.id)
        .sort(),
    ).toEqual(everything)
    expect(c.mirror.get(onlyInMirrorA.id)).toEqual(onlyInMirrorA)
    expect(c.feed.fresh()).toBe(true)
  })

  it('goes stale while Redis is cut off, rejects publishes quickly, is fresh again within 1 s of the restore, and reconciles durable records', async () => {
    const prefix = newPrefix()
    const log = arrayLog()
    const proxy = await startProxy()
    const p = await startFeed({ prefix, log, url: proxy.url })
    const b = await startFeed({ prefix, log })
    expect(p.feed.fresh()).toBe(true)

    const cutAt = Date.now()
    proxy.cut()
    await vi.waitFor(() => expect(p.feed.fresh()).toBe(false), WAIT)
    expect(Date.now() - cutAt).toBeGreaterThanOrEqual(STALE_AFTER_MS - BLOCK_MS)
    expect(p.feed.lag()).toBeGreaterThan(STALE_AFTER_MS)
    expect(b.feed.fresh()).toBe(true)

    // What the revocation service does: log first, mirror, then publish, which fails.
    const revokedDuringOutage = revocation('agent')
    await log.insert(revokedDuringOutage)
    p.mirror.apply(revokedDuringOutage)
    const started = Date.now()
    await expect(p.feed.publish(revokedDuringOutage)).rejects.toThrow()
    expect(Date.now() - started).toBeLessThan(3000)
    // Stored durably by another path while this instance could not reach Redis (never published at all).
    const loggedDuringOutage = revocation('jti')
    await log.insert(loggedDuringOutage)
    expect(b.mirror.get(revokedDuringOutage.id)).toBeUndefined()

    proxy.restore()
    const restoredAt = Date.now()
    await vi.waitFor(() => expect(p.feed.fresh()).toBe(true), WAIT)
    // The bound: fresh (so serving) again within 1 s of the restore.
    expect(Date.now() - restoredAt).toBeLessThan(1_000)
    await vi.waitFor(() => {
      expect(b.mirror.get(revokedDuringOutage.id)).toEqual(revokedDuringOutage)
      expect(b.mirror.get(loggedDuringOutage.id)).toEqual(loggedDuringOutage)
    }, WAIT)
    await vi.waitFor(() => expect(p.mirror.get(loggedDuringOutage.id)).toEqual(loggedDuringOutage), WAIT)
    expect(p.feed.lag()).toBeLessThanOrEqual(STALE_AFTER_MS)
  })

  it('goes stale on a silent partition (no resets), rejects publishes within 3 s, and recovers', async () => {
    const prefix = newPrefix()
    const log = arrayLog()
    const proxy = await startProxy()
    const p = await startFeed({ prefix, log, url: proxy.url })
    const b = await startFeed({ prefix, log })

    proxy.pause()
    await vi.waitFor(() => expect(p.feed.fresh()).toBe(false), WAIT)
    const record = revocation('sub')
    await log.insert(record)
    const started = Date.now()
    await expect(p.feed.publish(record)).rejects.toThrow()
    expect(Date.now() - started).toBeLessThan(3000)

    // Published elsewhere meanwhile, and its stream entry trimmed away: P must resync from the hash.
    const elsewhere = revocation('agent')
    await b.feed.publish(elsewhere)
    await b.redis.del(`${prefix}rev:stream`)

    proxy.restore()
    await vi.waitFor(() => expect(p.feed.fresh()).toBe(true), { ...WAIT, timeout: 15_000 })
    await vi.waitFor(() => {
      expect(p.mirror.get(elsewhere.id)).toEqual(elsewhere)
      expect(b.mirror.get(record.id)).toEqual(record)
    }, WAIT)
  }, 30_000)

  it('refuses to start when Redis cannot be reached', async () => {
    const redis = client('redis://127.0.0.1:1')
    const started = Date.now()
    await expect(
      createRedisRevocationFeed({
        redis,
        prefix: newPrefix(),
        mirror: recordingMirror(),
        log: arrayLog(),
        now: () => Date.now(),
        staleAfterMs: STALE_AFTER_MS,
        blockMs: BLOCK_MS,
        logger,
        startTimeoutMs: 1500,
      }),
    ).rejects.toThrow(/no first sync/)
    expect(Date.now() - started).toBeLessThan(3000)
  })

  it('drops expired records from the hash and sorted set', async () => {
    const prefix = newPrefix()
    const log = arrayLog()
    const a = await startFeed({ prefix, log })
    const past = Math.floor(Date.now() / 1000) - 10
    const gone = revocation('jti', { createdAt: past - 100, expiresAt: past })
    const kept = revocation('jti')
    await a.feed.publish(gone)
    await a.feed.publish(kept)
    expect(await hashIds(a.redis, prefix)).toEqual([gone.id, kept.id].sort())
    // The sweep runs on start and then every 60 s: a new instance sweeps right away.
    await startFeed({ prefix, log })
    await vi.waitFor(async () => expect(await hashIds(a.redis, prefix)).toEqual([kept.id]), WAIT)
    expect(await a.redis.zrange(`${prefix}rev:expiry`, '0', '-1')).toEqual([kept.id])
  })

  it('closes without leaving work behind and reports not fresh afterwards', async () => {
    const prefix = newPrefix()
    const a = await startFeed({ prefix, log: arrayLog() })
    await a.feed.close()
    await a.feed.close()
    expect(a.feed.fresh()).toBe(false)
    await expect(a.feed.publish(revocation())).rejects.toThrow(/closed/)
  })

  it('encodes records canonically and rejects malformed ones', () => {
    const r = revocation('agent_sub')
    expect(decodeRevocation(encodeRevocation(r))).toEqual(r)
    expect(encodeRevocation({ ...r })).toBe(encodeRevocation(r))
    expect(decodeRevocation('{"id":"x"}')).toBeUndefined()
    expect(decodeRevocation('not json')).toBeUndefined()
    expect(decodeRevocation(JSON.stringify({ ...r, target: { kind: 'agent' } }))).toBeUndefined()
  })

  it("carries a user kill's issuer to the other instance, where it stops that user only; an old record without one stops the sub everywhere", async () => {
    const prefix = newPrefix()
    const log = arrayLog()
    const a = await startFeed({ prefix, log })
    // As a broker of the previous version wrote it: no `iss` in the target.
    const nowSec = Math.floor(Date.now() / 1000)
    const legacy = { id: randomUUID(), target: { kind: 'sub', sub: 'bob' }, reason: 'r', createdBy: 'c', createdAt: nowSec - 10 }
    await a.redis.hset(`${prefix}rev:records`, legacy.id, JSON.stringify(legacy))
    // Instance B checks for real: its mirror is the broker's.
    const mirror = createRevocationMirror(() => Math.floor(Date.now() / 1000))
    const b = await createRedisRevocationFeed({
      redis: await readyClient(),
      prefix,
      mirror,
      log,
      now: () => Date.now(),
      staleAfterMs: STALE_AFTER_MS,
      blockMs: BLOCK_MS,
      logger,
    })
    cleanups.push(() => b.close())
    expect(mirror.records().find((r) => r.id === legacy.id)?.target).toStrictEqual({ kind: 'sub', sub: 'bob', iss: null })

    const kill = revocation('sub', { target: { kind: 'sub', sub: 'alice' as Subject, iss: 'https://idp-a.test' } })
    await a.feed.publish(kill)
    const token = (sub: string, subIssuer: string) => ({
      jti: randomUUID() as Jti,
      sub: sub as Subject,
      subIssuer,
      actors: ['agent-1' as AgentId],
      chain: [],
      iat: nowSec,
    })
    await vi.waitFor(() => expect(mirror.checkToken(token('alice', 'https://idp-a.test')).state).toBe('revoked'), WAIT)
    expect(mirror.checkToken(token('alice', 'https://idp-b.test')).state).toBe('clear')
    expect(mirror.checkToken(token('bob', 'https://idp-a.test')).state).toBe('revoked')
    expect(mirror.checkToken(token('bob', 'https://idp-b.test')).state).toBe('revoked')
    expect((JSON.parse((await a.redis.hget(`${prefix}rev:records`, kill.id))!) as { target: unknown }).target).toStrictEqual({
      kind: 'sub',
      sub: 'alice',
      iss: 'https://idp-a.test',
    })
  })
})
