/**
 * What the Redis revocation feed writes (redis.ts "Reconcile"): a publish,
 * the reseed of an empty Redis from the durable log, the write-back of
 * records Redis lacked, the sweep of expired records, and the reconcile that
 * carries records stored durably while Redis was unreachable.
 */
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import { noAnswer, withTimeout, type CloseGuard } from '../core/async.js'
import { messageOf } from '../core/errors.js'
import { encodeRevocation } from '@mandate/verifier/codec'
import type { Revocation, RevocationLog } from './port.js'
import { PUT, runScript, SWEEP, UNLOCK, type FeedKeys, type PutMode } from './redis-scripts.js'

const STREAM_MAXLEN = 10_000
const SEED_LOCK_MS = 10_000
const LOG_TIMEOUT_MS = 5_000
const RECONCILE_RETRY_MS = 2_000

/** What every write shares with the feed: its keys, clocks, log and lifetime. */
export interface WriteContext {
  readonly keys: FeedKeys
  readonly logger: Logger
  /** Epoch milliseconds. */
  readonly now: () => number
  readonly lifetime: CloseGuard
}

export const nowSeconds = (ctx: Pick<WriteContext, 'now'>): number => Math.floor(ctx.now() / 1000)

export function expired(r: Revocation, nowSec: number): boolean {
  return r.expiresAt !== undefined && r.expiresAt <= nowSec
}

/** Writes `record` as `mode` says (see PutMode); resolves 1 when Redis changed. */
export function putRevocation(conn: Redis, keys: FeedKeys, record: Revocation, mode: PutMode): Promise<0 | 1> {
  return runScript(conn, PUT, keys, {
    id: record.id,
    json: encodeRevocation(record),
    lifted: record.liftedAt === undefined ? '0' : '1',
    expiresAt: record.expiresAt === undefined ? '' : String(record.expiresAt),
    maxlen: String(STREAM_MAXLEN),
    mode,
  })
}

/** The durable log's relevant records, within LOG_TIMEOUT_MS. */
export function readDurable(ctx: WriteContext, log: RevocationLog, nowSec: number): Promise<readonly Revocation[]> {
  return ctx.lifetime.guard(withTimeout(log.listRelevant(nowSec), LOG_TIMEOUT_MS, noAnswer('revocation log', LOG_TIMEOUT_MS)))
}

/** Drops records whose tokens have all expired (ZRANGEBYSCORE + HDEL + ZREM). */
export async function sweepExpired(ctx: WriteContext, conn: Redis): Promise<void> {
  await ctx.lifetime.guard(runScript(conn, SWEEP, ctx.keys, { now: String(nowSeconds(ctx)) }))
}

/** Writes back records a full sync found Redis lacking (merge: never over a newer version). */
export async function writeBack(ctx: WriteContext, conn: Redis, records: readonly Revocation[]): Promise<void> {
  ctx.logger.warn({ count: records.length, ids: records.slice(0, 20).map((r) => `${r.id}:${r.target.kind}`) }, 'writing back revocations redis lacked')
  await ctx.lifetime.guard(Promise.all(records.map((r) => putRevocation(conn, ctx.keys, r, 'merge'))))
}

/**
 * Loads the durable log into an empty Redis and sets a new epoch, under the
 * seed lock. False when another instance holds the lock.
 */
export async function reseed(ctx: WriteContext, conn: Redis, log: RevocationLog, instance: string): Promise<boolean> {
  const guard = <T>(p: Promise<T>) => ctx.lifetime.guard(p)
  const taken = await guard(conn.set(ctx.keys.lock, instance, 'PX', SEED_LOCK_MS, 'NX'))
  if (taken === null && (await guard(conn.get(ctx.keys.lock))) !== instance) return false
  try {
    const nowSec = nowSeconds(ctx)
    const live = (await readDurable(ctx, log, nowSec)).filter((r) => !expired(r, nowSec))
    // No stream entries: every instance full-syncs on the new epoch anyway.
    await guard(Promise.all(live.map((r) => putRevocation(conn, ctx.keys, r, 'seed'))))
    await guard(conn.set(ctx.keys.epoch, randomUUID(), 'NX'))
    ctx.logger.warn({ count: live.length }, 'redis held no revocation list (new, flushed or restarted empty): seeded from the durable log')
    return true
  } finally {
    if (!ctx.lifetime.closed) await runScript(conn, UNLOCK, ctx.keys, { owner: instance }).catch(() => {})
  }
}

/** The writer connection's jobs: publish, and reconcile from the durable log when asked. */
export interface RevocationWriter {
  /** Resolves once Redis has the record (streamed to every mirror); rejects otherwise, and reconciles later. */
  publish(record: Revocation): Promise<void>
  /** A reconcile is due: after a resync, a failed publish, a writer reconnect, or a log unreadable at start. */
  wantReconcile(): void
  /** Starts the due reconcile unless one runs or its retry time has not come; never rejects. */
  maybeReconcile(): void
  /** Resolves once no reconcile runs. */
  settled(): Promise<void>
}

export function createRevocationWriter(ctx: WriteContext, writer: Redis, log: RevocationLog): RevocationWriter {
  let wanted = false
  let retryAt = 0
  let running: Promise<void> | undefined

  async function reconcile(): Promise<void> {
    const nowSec = nowSeconds(ctx)
    const live = (await readDurable(ctx, log, nowSec)).filter((r) => !expired(r, nowSec))
    // Streamed as well: every mirror, this one included, applies them in stream order.
    const written = await ctx.lifetime.guard(Promise.all(live.map((r) => putRevocation(writer, ctx.keys, r, 'merge'))))
    const count = written.filter((w) => w === 1).length
    if (count > 0) ctx.logger.warn({ count }, 'reconciled revocations from the durable log into redis')
  }

  return {
    async publish(record) {
      try {
        await putRevocation(writer, ctx.keys, record, 'publish')
      } catch (err) {
        // The caller stored it durably first: reconcile carries it once Redis takes writes again.
        wanted = true
        ctx.logger.warn({ id: record.id, kind: record.target.kind, error: messageOf(err) }, 'revocation not published to redis')
        throw new Error(`redis did not take the revocation: ${messageOf(err)}`, { cause: err })
      }
    },
    wantReconcile() {
      wanted = true
    },
    maybeReconcile() {
      if (!wanted || running !== undefined || ctx.now() < retryAt || ctx.lifetime.closed) return
      wanted = false
      running = reconcile()
        .catch((err: unknown) => {
          if (ctx.lifetime.closed) return
          wanted = true
          retryAt = ctx.now() + RECONCILE_RETRY_MS
          ctx.logger.warn({ error: messageOf(err) }, 'reconciling revocations from the durable log failed; retrying')
        })
        .finally(() => {
          running = undefined
        })
    },
    settled: async () => running,
  }
}
