/**
 * Redis propagation of the revocation list: every mirror applies a
 * revocation within 100 ms p99; an unknown state fails closed; no revocation
 * is ever lost.
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
 *
 * ## Where each job lives
 * This file: options, connections and the loop. The scripts and keys:
 * redis-scripts.ts; every write (publish, reseed, write-back, sweep,
 * reconcile): redis-writer.ts; the full resync: redis-sync.ts; the stream
 * consumer: redis-stream.ts; the record's text form: codec.ts.
 */
import { randomUUID } from 'node:crypto'
import type { Redis, RedisOptions } from 'ioredis'
import { pino, type Logger } from 'pino'
import { closeGuard, withTimeout } from '../core/async.js'
import { messageOf } from '../core/errors.js'
import { MAX_RECONNECT_DELAY_MS, quitRedis, redisReconnectDelay } from '../storage/redis.js'
import type { Revocation, RevocationFeed, RevocationLog, RevocationMirror } from './port.js'
import { feedKeys } from './redis-scripts.js'
import { readStream } from './redis-stream.js'
import { fullSync, type SyncContext } from './redis-sync.js'
import { createRevocationWriter, nowSeconds, readDurable, reseed, sweepExpired, writeBack } from './redis-writer.js'

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

const SWEEP_EVERY_MS = 60_000
const SEED_WAIT_MS = 50
/** Longest wait between two loop turns after a failure: as long as between two reconnect attempts. */
const MAX_BACKOFF_MS = MAX_RECONNECT_DELAY_MS

/**
 * Keeps `mirror` in step with the revocation list in Redis, and publishes
 * new and lifted records to every instance (not when `readOnly`). Resolves
 * once the first full sync is done (the mirror then holds the whole list);
 * rejects after `startTimeoutMs` when Redis cannot be read. With
 * `waitForFirstSync: false` it resolves at once instead. Throws `TypeError`
 * on bad options.
 */
export async function createRedisRevocationFeed(options: RedisRevocationFeedOptions): Promise<RevocationFeed> {
  // Long, not split: the loop's state (epoch, stream position, freshness, first sync) is what step, run and close share; every job it calls lives in redis-*.ts.
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

  const lifetime = closeGuard('revocation feed closed')
  const ctx: SyncContext = { keys: feedKeys(options.prefix), mirror, logger, now, lifetime }
  const { reader, writer } = openConnections(options.redis, { readOnly, publishTimeoutMs, blockMs, staleAfterMs })
  // Undefined for a follower: nothing it runs can write.
  const publisher = writer === undefined || log === undefined ? undefined : createRevocationWriter(ctx, writer, log)
  const instance = randomUUID()

  let lastHeard = -Infinity
  let syncedEpoch: string | undefined
  let lastId = '0-0'
  let resyncWanted = true
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

  /** Only the first sync waits for the durable log; later ones reconcile beside the loop. */
  async function durableAtStart(): Promise<readonly Revocation[]> {
    if (firstSynced || log === undefined) return []
    try {
      return await readDurable(ctx, log, nowSeconds(ctx))
    } catch (err) {
      if (lifetime.closed) throw err
      publisher?.wantReconcile()
      logger.warn({ error: messageOf(err) }, 'revocation log unreadable at start; starting from redis alone, reconciling later')
      return []
    }
  }

  /** Returns false when the epoch vanished meanwhile (the loop then reseeds). */
  async function resync(): Promise<boolean> {
    const synced = await fullSync(ctx, reader, await durableAtStart())
    if (synced === undefined) return false
    syncedEpoch = synced.epoch
    lastId = synced.lastId
    heard()
    if (synced.missing.length > 0 && !readOnly) await writeBack(ctx, reader, synced.missing)
    return true
  }

  async function step(): Promise<void> {
    const t = now()
    // Stream entries may have been trimmed while this instance was not listening.
    if (t - lastHeard > staleAfterMs) resyncWanted = true
    if (t >= nextSweepAt && !readOnly) {
      await sweepExpired(ctx, reader)
      nextSweepAt = t + SWEEP_EVERY_MS
    }
    const epoch = await lifetime.guard(reader.get(ctx.keys.epoch))
    if (epoch === null) {
      // A follower waits (stale) for a broker to reseed; it resyncs fully once the epoch is back.
      if (log === undefined) {
        resyncWanted = true
        await lifetime.sleep(blockMs)
      } else if (!(await reseed(ctx, reader, log, instance))) await lifetime.sleep(SEED_WAIT_MS)
      return
    }
    if (epoch !== syncedEpoch || resyncWanted) {
      resyncWanted = false
      if (!(await resync())) {
        resyncWanted = true
        return
      }
      if (!firstSynced) {
        firstSynced = true
        resolveFirstSync()
      } else {
        publisher?.wantReconcile()
      }
      return
    }
    publisher?.maybeReconcile()
    lastId = await readStream(ctx, reader, lastId, blockMs)
    heard()
  }

  async function run(): Promise<void> {
    let failures = 0
    while (!lifetime.closed) {
      try {
        await step()
        failures = 0
        if (troubled) {
          troubled = false
          logger.info('revocation feed in step with redis again')
        }
      } catch (err) {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- close() sets it while this awaited
        if (lifetime.closed) return
        resyncWanted = true
        lastError = messageOf(err)
        if (!troubled) {
          troubled = true
          logger.warn({ error: lastError }, 'revocation feed cannot read redis; failing closed once stale')
        }
        failures++
        await lifetime.sleep(Math.min(50 * 2 ** failures, MAX_BACKOFF_MS)).catch(() => {})
      }
    }
  }

  // Whatever happened while disconnected is caught up: the reader resyncs, the writer reconciles.
  watchConnections({ reader, writer }, logger, () => lifetime.closed, {
    reader: () => {
      resyncWanted = true
    },
    writer: () => publisher?.wantReconcile(),
  })

  let closePromise: Promise<void> | undefined
  const loop = run()

  async function close(): Promise<void> {
    closePromise ??= (async () => {
      lifetime.close()
      await loop
      await publisher?.settled()
      await Promise.all([quitRedis(reader), writer === undefined ? undefined : quitRedis(writer)])
    })()
    return closePromise
  }

  if (options.waitForFirstSync !== false) {
    try {
      await withTimeout(firstSync, startTimeoutMs, () => new Error(`revocation feed: no first sync with redis within ${startTimeoutMs} ms (${lastError})`))
    } catch (err) {
      await close()
      throw err
    }
  }

  return {
    async publish(record) {
      if (lifetime.closed) throw new Error('revocation feed closed')
      if (publisher === undefined) throw new Error('a read-only revocation feed does not publish')
      await publisher.publish(record)
    },
    fresh: () => !lifetime.closed && now() - lastHeard <= staleAfterMs,
    lag: () => Math.max(0, now() - lastHeard),
    close,
  } satisfies RevocationFeed
}

/**
 * The feed's own connections, duplicated from `template` with the timeouts
 * this module relies on ("Connections" above); no writer for a follower.
 */
function openConnections(
  template: Redis,
  o: { readonly readOnly: boolean; readonly publishTimeoutMs: number; readonly blockMs: number; readonly staleAfterMs: number },
): { readonly reader: Redis; readonly writer: Redis | undefined } {
  // Whatever the template's backoff: freshness depends on reconnecting soon.
  const retryStrategy = redisReconnectDelay
  const writer = o.readOnly
    ? undefined
    : template.duplicate({
        connectionName: 'mandate-revocation-writer',
        lazyConnect: false,
        enableOfflineQueue: true,
        maxRetriesPerRequest: 1,
        commandTimeout: o.publishTimeoutMs,
        socketTimeout: o.publishTimeoutMs,
        retryStrategy,
      } satisfies RedisOptions)
  const reader = template.duplicate({
    connectionName: 'mandate-revocation-reader',
    lazyConnect: false,
    // One blocking XREAD at a time: nothing to batch.
    enableAutoPipelining: false,
    enableOfflineQueue: true,
    maxRetriesPerRequest: null,
    // Backstop: every loop step settles, even on a socket that died silently.
    commandTimeout: Math.max(5_000, o.blockMs + 2 * o.staleAfterMs),
    // An XREAD answers at least every blockMs; silence this long means a dead socket.
    socketTimeout: o.blockMs + o.staleAfterMs,
    retryStrategy,
  } satisfies RedisOptions)
  return { reader, writer }
}

/** Logs a connection's first error of an outage, and calls `onReconnect[name]` each time it is ready again (not the first time). */
function watchConnections(
  connections: { readonly reader: Redis; readonly writer: Redis | undefined },
  logger: Logger,
  closed: () => boolean,
  onReconnect: { readonly reader: () => void; readonly writer: () => void },
): void {
  const down = { reader: false, writer: false }
  const named =
    connections.writer === undefined
      ? ([['reader', connections.reader]] as const)
      : ([
          ['reader', connections.reader],
          ['writer', connections.writer],
        ] as const)
  for (const [name, conn] of named) {
    let everReady = false
    conn.on('error', (err: Error) => {
      if (closed() || down[name]) return
      down[name] = true
      logger.warn({ connection: name, error: err.message }, 'redis connection error')
    })
    conn.on('ready', () => {
      down[name] = false
      if (!everReady) {
        everReady = true
        return
      }
      onReconnect[name]()
    })
  }
}
