/**
 * Redis propagation of the revocation list (DESIGN.md "Guarantees": every
 * mirror applies a revocation within 100 ms p99; an unknown state fails
 * closed; no revocation is ever lost).
 *
 * ## Shared state (all keys under `prefix`)
 * - `rev:records`: hash, record id → canonical JSON of the {@link Revocation}.
 *   The whole current list.
 * - `rev:stream`: stream; every write of a record appends `r` = its JSON
 *   (`XADD MAXLEN ~ 10000`). Mirrors follow it.
 * - `rev:expiry`: sorted set, record id → `expiresAt` (jti/chain records only),
 *   so expired records leave the hash without scanning it.
 * - `rev:epoch`: a random id, set once the hash holds the complete list. A
 *   missing epoch means Redis was flushed or restarted empty.
 * - `rev:seed-lock`: held (SET NX PX) by the one instance that reseeds.
 *
 * Every write goes through one Lua script, so the hash, the stream and the
 * expiry set change together. A lift only ever goes forward: a version with
 * `liftedAt` is never replaced by one without (a late, older publish is
 * dropped), because the durable log lifts a kill once and never un-lifts it.
 *
 * ## Connections
 * Two connections are duplicated from `redis` (which stays the caller's to
 * close) with the timeouts this module relies on, whatever `redis` was
 * configured with: a writer (publish, reconcile; `commandTimeout`
 * = `publishTimeoutMs`, one retry, so a publish rejects within about 2 s when
 * Redis is unreachable) and a reader that runs the sync loop (socket and
 * command timeouts, so no step can wait forever on a dead socket).
 *
 * ## The loop (reader)
 * Each turn: every 60 s, drop expired records (`ZRANGEBYSCORE` + `HDEL` +
 * `ZREM`); read the epoch; then
 * - epoch missing → reseed: take the lock, load `log.listRelevant()` from the
 *   durable log into the hash, set a new epoch (SET NX). Without the lock,
 *   wait for whoever holds it. Until the epoch is back nothing counts as
 *   heard, so a Redis that came back empty and cannot be reseeded (log down)
 *   fails closed;
 * - epoch differs from the one this instance synced, or the instance was
 *   stale, or the reader reconnected, or a step failed → full resync: one
 *   Lua snapshot of (epoch, the stream's last id, the whole hash);
 *   `mirror.replaceAll(hash ∪ mirror)` (a lifted version wins over an
 *   unlifted one; expired ones are left out); every record the mirror held
 *   that Redis lacks is written back; reading continues from the noted id.
 *   A full resync never drops a revocation this instance knew;
 * - otherwise `XREAD COUNT 500 BLOCK blockMs` from the last id, applying
 *   every record to the mirror.
 * Every answer (entries, or a timeout with none) and every full sync is
 * "hearing from Redis": `fresh()` is `now() - lastHeard <= staleAfterMs`.
 * After being stale the next turn is a full resync, since stream entries may
 * have been trimmed meanwhile.
 *
 * ## Reconcile
 * After the first sync (awaited before the factory resolves, and merged into
 * the first `replaceAll`), after every later resync, after a publish failed and
 * after the writer reconnected: every record of `log.listRelevant()` that the
 * hash lacks is written (and streamed). A revocation stored durably while
 * Redis was unreachable thus reaches every mirror once Redis is back. A log
 * that cannot be read is retried every 2 s; it never makes the feed stale
 * (except while reseeding, see above).
 *
 * Logs name records by id and kind only; errors by their message only.
 *
 * ## Read-only followers
 * With `readOnly` (resource-server verifiers that reach Redis directly) the
 * feed never writes to Redis: no writer connection, no sweep, no reseed, no
 * write-back, no reconcile, and `publish` rejects. It needs no durable log.
 * A missing epoch is "stale until a broker reseeds": nothing counts as heard
 * until the epoch is back, then a full resync follows. Its full resyncs still
 * merge what the mirror held (a follower never drops a revocation it knew;
 * expired ones leave by `expiresAt`). The loop runs only read commands and
 * the read-only snapshot script.
 *
 * Redis Cluster: every key shares `prefix`; use a hash tag in it
 * (`{mandate}:`) so the scripts' keys land in one slot.
 */
import { createHash, randomUUID } from 'node:crypto'
import type { Redis, RedisOptions } from 'ioredis'
import { pino, type Logger } from 'pino'
import { z } from 'zod'
import type { Revocation, RevocationFeed, RevocationLog, RevocationMirror, RevocationTarget } from './port.js'

interface CommonFeedOptions {
  /** Template connection: duplicated (writer, reader; the reader only when read-only); never used or closed by the feed itself. */
  readonly redis: Redis
  /** Key prefix, e.g. `mandate:`; keys are `<prefix>rev:*`. */
  readonly prefix: string
  readonly mirror: RevocationMirror
  /** Epoch milliseconds. */
  readonly now: () => number
  /** Not heard from Redis for longer than this → `fresh()` is false (fail closed). About 1000. */
  readonly staleAfterMs: number
  /** `XREAD BLOCK` timeout; must be below `staleAfterMs`. About 250. */
  readonly blockMs: number
  /** Longest a publish waits for Redis before it rejects. Default 2000. */
  readonly publishTimeoutMs?: number
  /** Longest the factory waits for the first full sync before it rejects. Default 10 000. */
  readonly startTimeoutMs?: number
  /**
   * Default true. False: the factory resolves at once, and `fresh()` stays
   * false until the first full sync (a follower that must start even when
   * Redis or the list is not there yet).
   */
  readonly waitForFirstSync?: boolean
}

export type RedisRevocationFeedOptions = CommonFeedOptions &
  (
    | {
        /** A broker: publishes, reseeds, reconciles. */
        readonly readOnly?: false
        /** The durable log: the source for reseeding an empty Redis and for reconciling. */
        readonly log: RevocationLog
        readonly logger: Logger
      }
    | {
        /** A follower (see "Read-only followers"): never writes to Redis. */
        readonly readOnly: true
        readonly log?: undefined
        /** Silent when absent. */
        readonly logger?: Logger
      }
  )

const STREAM_MAXLEN = 10_000
const XREAD_COUNT = 500
const SWEEP_EVERY_MS = 60_000
const SEED_LOCK_MS = 10_000
const SEED_WAIT_MS = 50
const LOG_TIMEOUT_MS = 5_000
const RECONCILE_RETRY_MS = 2_000
/** Longest wait between two reconnect attempts, and between two loop turns after a failure. */
const MAX_BACKOFF_MS = 200

/**
 * ioredis `retryStrategy` for every connection the broker holds: the next
 * reconnect attempt within MAX_BACKOFF_MS however long Redis has been gone
 * (ioredis's default grows to 2 s), so that the broker serves again within
 * about that much once Redis is back.
 */
export function redisReconnectDelay(times: number): number {
  return Math.min(times * 50, MAX_BACKOFF_MS)
}

/**
 * Keeps `mirror` in step with the revocation list in Redis, and publishes
 * new and lifted records to every instance (not when `readOnly`). Resolves
 * once the first full sync is done (the mirror then holds the whole list);
 * rejects after `startTimeoutMs` when Redis cannot be read. With
 * `waitForFirstSync: false` it resolves at once instead. Throws `TypeError`
 * on bad options.
 */
export async function createRedisRevocationFeed(options: RedisRevocationFeedOptions): Promise<RevocationFeed> {
  const { mirror, now, staleAfterMs, blockMs } = options
  const readOnly = options.readOnly === true
  const logger = options.logger ?? pino({ enabled: false })
  const log = options.log
  if (!readOnly && log === undefined) throw new TypeError('a revocation feed that writes needs the durable log')
  const publishTimeoutMs = options.publishTimeoutMs ?? 2_000
  const startTimeoutMs = options.startTimeoutMs ?? 10_000
  if (!(Number.isInteger(blockMs) && blockMs > 0)) throw new TypeError('blockMs must be a positive integer (0 would block forever)')
  if (!(staleAfterMs > blockMs)) throw new TypeError('staleAfterMs must exceed blockMs')
  if (!(publishTimeoutMs > 0) || !(startTimeoutMs > 0)) throw new TypeError('timeouts must be positive')

  const keys = {
    records: `${options.prefix}rev:records`,
    stream: `${options.prefix}rev:stream`,
    expiry: `${options.prefix}rev:expiry`,
    epoch: `${options.prefix}rev:epoch`,
    lock: `${options.prefix}rev:seed-lock`,
  }
  const instance = randomUUID()
  const seconds = () => Math.floor(now() / 1000)
  // Whatever the template's backoff: freshness depends on reconnecting soon.
  const retryStrategy = redisReconnectDelay
  // A follower has no writer at all: nothing it runs can write.
  const writer = readOnly ? undefined : options.redis.duplicate({
    connectionName: 'mandate-revocation-writer',
    lazyConnect: false,
    enableOfflineQueue: true,
    maxRetriesPerRequest: 1,
    commandTimeout: publishTimeoutMs,
    socketTimeout: publishTimeoutMs,
    retryStrategy,
  } satisfies RedisOptions)
  const readerTimeout = Math.max(5_000, blockMs + 2 * staleAfterMs)
  const reader = options.redis.duplicate({
    connectionName: 'mandate-revocation-reader',
    lazyConnect: false,
    // One blocking XREAD at a time: nothing to batch.
    enableAutoPipelining: false,
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
    // Backstop: every loop step settles, even on a socket that died silently.
    commandTimeout: readerTimeout,
    // An XREAD answers at least every blockMs; silence this long means a dead socket.
    socketTimeout: blockMs + staleAfterMs,
    retryStrategy,
  } satisfies RedisOptions)

  let closed = false
  // Rejecters of the steps in progress (not a race against one long-lived promise: that would keep a reaction per step).
  const inFlight = new Set<(err: Error) => void>()
  const signalClose = () => {
    for (const reject of inFlight) reject(new Error('revocation feed closed'))
    inFlight.clear()
  }
  /** Settles with `p`, or rejects as soon as the feed closes; `p`'s own late rejection is absorbed. */
  const guard = <T>(p: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (closed) {
        p.catch(() => {})
        reject(new Error('revocation feed closed'))
        return
      }
      inFlight.add(reject)
      p.then(
        (value) => {
          inFlight.delete(reject)
          resolve(value)
        },
        (err: unknown) => {
          inFlight.delete(reject)
          reject(err instanceof Error ? err : new Error(String(err)))
        },
      )
    })
  const sleep = (ms: number) => guard(new Promise<void>((resolve) => setTimeout(resolve, ms).unref()))

  let lastHeard = -Infinity
  let syncedEpoch: string | undefined
  let lastId = '0-0'
  let resyncWanted = true
  let reconcileWanted = false
  let reconcileAt = 0
  let reconciling: Promise<void> | undefined
  let nextSweepAt = 0
  let troubled = false
  let lastError = 'no answer yet'
  let firstSynced = false
  let resolveFirstSync = () => {}
  const firstSync = new Promise<void>((resolve) => {
    resolveFirstSync = resolve
  })

  const heard = () => {
    lastHeard = now()
  }

  function put(conn: Redis, record: Revocation, mode: PutMode): Promise<number> {
    return runScript(conn, PUT, [keys.records, keys.stream, keys.expiry], [
      record.id,
      encodeRevocation(record),
      record.liftedAt === undefined ? '0' : '1',
      record.expiresAt === undefined ? '' : String(record.expiresAt),
      String(STREAM_MAXLEN),
      mode,
    ]) as Promise<number>
  }

  /** Returns false when the epoch vanished meanwhile (the loop then reseeds). */
  async function fullSync(withLog: boolean): Promise<boolean> {
    let durable: readonly Revocation[] = []
    if (withLog && log !== undefined) {
      // Only the first sync waits for the log; later ones reconcile beside the loop.
      try {
        durable = await guard(withTimeout(log.listRelevant(seconds()), LOG_TIMEOUT_MS, 'revocation log'))
      } catch (err) {
        if (closed) throw err
        reconcileWanted = true
        logger.warn({ error: messageOf(err) }, 'revocation log unreadable at start; starting from redis alone, reconciling later')
      }
    }
    const snapshot = (await guard(runScript(reader, SNAPSHOT, [keys.epoch, keys.stream, keys.records], []))) as [
      string | null,
      string | null,
      string[],
    ]
    const [epoch, tail, flat] = snapshot
    if (epoch === null) return false
    // From here to replaceAll nothing awaits: no record applied to the mirror meanwhile can be lost.
    const nowSec = seconds()
    const merged = new Map<string, Revocation>()
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const record = decodeRevocation(flat[i + 1]!)
      if (record === undefined) logger.warn({ id: flat[i] }, 'unreadable revocation in redis skipped')
      else if (!expired(record, nowSec)) merged.set(record.id, record)
    }
    const writeBack: Revocation[] = []
    for (const record of [...mirror.records(), ...durable]) if (mergeInto(merged, record, nowSec)) writeBack.push(record)
    mirror.replaceAll([...merged.values()].sort(oldestFirst))
    syncedEpoch = epoch
    lastId = tail ?? '0-0'
    heard()
    if (writeBack.length > 0 && !readOnly) {
      logger.warn(
        { count: writeBack.length, ids: writeBack.slice(0, 20).map((r) => `${r.id}:${r.target.kind}`) },
        'writing back revocations redis lacked',
      )
      await guard(Promise.all(writeBack.map((r) => put(reader, r, 'merge'))))
    }
    return true
  }

  /** Returns false when another instance holds the seed lock. */
  async function reseed(): Promise<boolean> {
    if (log === undefined) return false
    const taken = await guard(reader.set(keys.lock, instance, 'PX', SEED_LOCK_MS, 'NX'))
    if (taken === null && (await guard(reader.get(keys.lock))) !== instance) return false
    try {
      const nowSec = seconds()
      const durable = await guard(withTimeout(log.listRelevant(nowSec), LOG_TIMEOUT_MS, 'revocation log'))
      const live = durable.filter((r) => !expired(r, nowSec))
      // No stream entries: every instance full-syncs on the new epoch anyway.
      await guard(Promise.all(live.map((r) => put(reader, r, 'seed'))))
      await guard(reader.set(keys.epoch, randomUUID(), 'NX'))
      logger.warn({ count: live.length }, 'redis held no revocation list (new, flushed or restarted empty): seeded from the durable log')
      return true
    } finally {
      if (!closed) await runScript(reader, UNLOCK, [keys.lock], [instance]).catch(() => {})
    }
  }

  async function reconcile(): Promise<void> {
    if (log === undefined || writer === undefined) return
    const nowSec = seconds()
    const durable = await guard(withTimeout(log.listRelevant(nowSec), LOG_TIMEOUT_MS, 'revocation log'))
    const live = durable.filter((r) => !expired(r, nowSec))
    // Streamed as well: every mirror, this one included, applies them in stream order.
    const written = await guard(Promise.all(live.map((r) => put(writer, r, 'merge'))))
    const count = written.filter((w) => w === 1).length
    if (count > 0) logger.warn({ count }, 'reconciled revocations from the durable log into redis')
  }

  function maybeReconcile(): void {
    if (readOnly || !reconcileWanted || reconciling !== undefined || now() < reconcileAt || closed) return
    reconcileWanted = false
    reconciling = reconcile()
      .catch((err: unknown) => {
        if (closed) return
        reconcileWanted = true
        reconcileAt = now() + RECONCILE_RETRY_MS
        logger.warn({ error: messageOf(err) }, 'reconciling revocations from the durable log failed; retrying')
      })
      .finally(() => {
        reconciling = undefined
      })
  }

  function applyEntries(reply: [string, [string, string[]][]][] | null): void {
    for (const [, entries] of reply ?? []) {
      for (const [id, fields] of entries) {
        lastId = id
        const at = fields.indexOf('r')
        const record = at >= 0 && at % 2 === 0 ? decodeRevocation(fields[at + 1] ?? '') : undefined
        if (record === undefined) logger.warn({ entry: id }, 'unreadable revocation stream entry skipped')
        else mirror.apply(record)
      }
    }
  }

  async function step(): Promise<void> {
    const t = now()
    // Stream entries may have been trimmed while this instance was not listening.
    if (t - lastHeard > staleAfterMs) resyncWanted = true
    if (t >= nextSweepAt && !readOnly) {
      await guard(runScript(reader, SWEEP, [keys.expiry, keys.records], [String(seconds())]))
      nextSweepAt = t + SWEEP_EVERY_MS
    }
    const epoch = await guard(reader.get(keys.epoch))
    if (epoch === null) {
      // A follower waits (stale) for a broker to reseed; it resyncs fully once the epoch is back.
      if (readOnly) {
        resyncWanted = true
        await sleep(blockMs)
      } else if (!(await reseed())) await sleep(SEED_WAIT_MS)
      return
    }
    if (epoch !== syncedEpoch || resyncWanted) {
      resyncWanted = false
      if (!(await fullSync(!firstSynced))) {
        resyncWanted = true
        return
      }
      if (!firstSynced) {
        firstSynced = true
        resolveFirstSync()
      } else if (!readOnly) {
        reconcileWanted = true
      }
      return
    }
    maybeReconcile()
    const reply = await guard(reader.xread('COUNT', XREAD_COUNT, 'BLOCK', blockMs, 'STREAMS', keys.stream, lastId))
    applyEntries(reply)
    heard()
  }

  async function run(): Promise<void> {
    let failures = 0
    while (!closed) {
      try {
        await step()
        failures = 0
        if (troubled) {
          troubled = false
          logger.info('revocation feed in step with redis again')
        }
      } catch (err) {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by another callback while this awaits; TypeScript keeps the narrowing from before the await
        if (closed) return
        resyncWanted = true
        lastError = messageOf(err)
        if (!troubled) {
          troubled = true
          logger.warn({ error: lastError }, 'revocation feed cannot read redis; failing closed once stale')
        }
        failures++
        await sleep(Math.min(50 * 2 ** failures, MAX_BACKOFF_MS)).catch(() => {})
      }
    }
  }

  const down = { reader: false, writer: false }
  const connections = writer === undefined ? ([['reader', reader]] as const) : ([['reader', reader], ['writer', writer]] as const)
  for (const [name, conn] of connections) {
    let everReady = false
    conn.on('error', (err: Error) => {
      if (closed || down[name]) return
      down[name] = true
      logger.warn({ connection: name, error: err.message }, 'redis connection error')
    })
    conn.on('ready', () => {
      down[name] = false
      if (!everReady) {
        everReady = true
        return
      }
      // Whatever happened while disconnected is caught up: the reader resyncs, the writer reconciles.
      if (name === 'reader') resyncWanted = true
      else reconcileWanted = true
    })
  }

  let closePromise: Promise<void> | undefined
  const loop = run()

  async function close(): Promise<void> {
    closePromise ??= (async () => {
      closed = true
      signalClose()
      await loop
      await reconciling
      await Promise.all([quit(reader), writer === undefined ? undefined : quit(writer)])
    })()
    return closePromise
  }

  if (options.waitForFirstSync !== false) {
    let startTimer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        firstSync,
        new Promise<never>((_, reject) => {
          startTimer = setTimeout(
            () => reject(new Error(`revocation feed: no first sync with redis within ${startTimeoutMs} ms (${lastError})`)),
            startTimeoutMs,
          )
        }),
      ])
    } catch (err) {
      await close()
      throw err
    } finally {
      clearTimeout(startTimer)
    }
  }

  return {
    async publish(record) {
      if (closed) throw new Error('revocation feed closed')
      if (writer === undefined) throw new Error('a read-only revocation feed does not publish')
      try {
        await put(writer, record, 'publish')
      } catch (err) {
        // The caller stored it durably first: reconcile carries it once Redis takes writes again.
        reconcileWanted = true
        logger.warn({ id: record.id, kind: record.target.kind, error: messageOf(err) }, 'revocation not published to redis')
        throw new Error(`redis did not take the revocation: ${messageOf(err)}`, { cause: err })
      }
    },
    fresh: () => !closed && now() - lastHeard <= staleAfterMs,
    lag: () => Math.max(0, now() - lastHeard),
    close,
  } satisfies RevocationFeed
}

/** `publish` overwrites (never a lift with an unlifted version); `merge` writes only what is missing or newly lifted; `seed` is `merge` without a stream entry. */
type PutMode = 'publish' | 'merge' | 'seed'

interface Script {
  readonly lua: string
  readonly sha: string
}

function script(lua: string): Script {
  return { lua, sha: createHash('sha1').update(lua).digest('hex') }
}

/** KEYS: records, stream, expiry. ARGV: id, json, lifted (1/0), expiresAt or '', maxlen, mode. Returns 1 when written. */
const PUT = script(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cur == ARGV[2] then return 0 end
  local ok, doc = pcall(cjson.decode, cur)
  local curLifted = ok and type(doc) == 'table' and doc['liftedAt'] ~= nil
  if curLifted and ARGV[3] == '0' then return 0 end
  if ARGV[6] ~= 'publish' and (curLifted or ARGV[3] == '0') then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
if ARGV[6] ~= 'seed' then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'r', ARGV[2]) end
return 1
`)

/** KEYS: epoch, stream, records. Returns { epoch or nil, last stream id or nil, flat hash }, atomically. */
const SNAPSHOT = script(`
local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last = false
if #tail > 0 then last = tail[1][1] end
return { redis.call('GET', KEYS[1]), last, redis.call('HGETALL', KEYS[3]) }
`)

/** KEYS: expiry, records. ARGV: now (epoch seconds). Drops up to 1000 expired records. */
const SWEEP = script(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
if #ids > 0 then
  redis.call('HDEL', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[1], unpack(ids))
end
return #ids
`)

/** KEYS: lock. ARGV: owner. */
const UNLOCK = script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

async function runScript(conn: Redis, s: Script, keys: readonly string[], args: readonly string[]): Promise<unknown> {
  try {
    return await conn.evalsha(s.sha, keys.length, ...keys, ...args)
  } catch (err) {
    // A restarted Redis has forgotten the script.
    if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return conn.eval(s.lua, keys.length, ...keys, ...args)
    throw err
  }
}

async function quit(conn: Redis): Promise<void> {
  try {
    if (conn.status === 'ready') {
      await Promise.race([conn.quit(), new Promise((resolve) => setTimeout(resolve, 1_000).unref())])
    }
  } catch {
    // Closing anyway.
  } finally {
    conn.disconnect()
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)
  })
  p.catch(() => {})
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

function expired(r: Revocation, nowSec: number): boolean {
  return r.expiresAt !== undefined && r.expiresAt <= nowSec
}

/** Adds `record` unless a version at least as new is there (a lifted version wins). True when it was added. */
function mergeInto(merged: Map<string, Revocation>, record: Revocation, nowSec: number): boolean {
  if (expired(record, nowSec)) return false
  const current = merged.get(record.id)
  if (current !== undefined && !(current.liftedAt === undefined && record.liftedAt !== undefined)) return false
  merged.set(record.id, record)
  return true
}

function oldestFirst(a: Revocation, b: Revocation): number {
  return a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

const Id = z.string().min(1)
/** Absent in records written before user kills named an issuer: those hold the `sub` at any issuer. No NUL: the mirror's keys rely on it. */
const Issuer = z
  .string()
  .min(1)
  // eslint-disable-next-line no-control-regex -- NUL is what it refuses
  .regex(/^[^\u0000]*$/)
  .nullish()
  .transform((iss) => iss ?? null)
const StoredTarget = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('jti'), jti: Id }),
  z.object({ kind: z.literal('chain'), jti: Id }),
  z.object({ kind: z.literal('agent'), agent: Id }),
  z.object({ kind: z.literal('sub'), sub: Id, iss: Issuer }),
  z.object({ kind: z.literal('agent_sub'), agent: Id, sub: Id, iss: Issuer }),
])
const StoredRevocation = z.object({
  id: Id,
  target: StoredTarget,
  reason: z.string(),
  createdBy: z.string(),
  createdAt: z.number(),
  expiresAt: z.number().optional(),
  liftedAt: z.number().optional(),
  liftedBy: z.string().optional(),
})

/**
 * Canonical JSON (fixed key order), so equal records are equal strings in
 * Redis. A user kill without an issuer leaves `iss` out, as records written
 * before kills named one did.
 */
export function encodeRevocation(r: Revocation): string {
  const t = r.target
  const target =
    t.kind === 'agent_sub'
      ? { kind: t.kind, agent: t.agent, sub: t.sub, ...(t.iss === null ? {} : { iss: t.iss }) }
      : t.kind === 'agent'
        ? { kind: t.kind, agent: t.agent }
        : t.kind === 'sub'
          ? { kind: t.kind, sub: t.sub, ...(t.iss === null ? {} : { iss: t.iss }) }
          : { kind: t.kind, jti: t.jti }
  return JSON.stringify({
    id: r.id,
    target,
    reason: r.reason,
    createdBy: r.createdBy,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    liftedAt: r.liftedAt,
    liftedBy: r.liftedBy,
  })
}

/** Undefined when `text` is not a revocation this version understands. */
export function decodeRevocation(text: string): Revocation | undefined {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return undefined
  }
  const parsed = StoredRevocation.safeParse(json)
  if (!parsed.success) return undefined
  const r = parsed.data
  return {
    id: r.id,
    target: r.target as RevocationTarget,
    reason: r.reason,
    createdBy: r.createdBy,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    liftedAt: r.liftedAt,
    liftedBy: r.liftedBy,
  }
}
