import { randomUUID } from 'node:crypto'
import { withTimeout } from '../core/async.js'
import type {
  LiftOutcome,
  Revocation,
  RevocationFeed,
  RevocationLog,
  RevocationMirror,
  RevocationQuery,
  RevocationStore,
  RevocationTarget,
  RevocationVerdict,
  TokenFacts,
} from './port.js'
import { KILL_KINDS } from './port.js'

/** The durable log did not answer within {@link STORE_TIMEOUT_MS}. */
class StoreTimeout extends Error {
  override readonly name = 'StoreTimeout'
}

/**
 * Longest a call waits for the durable log. A connection dropped without a
 * reset can leave a driver waiting forever; the admin API answers 503 instead.
 */
export const STORE_TIMEOUT_MS = 3000

function bounded<T>(work: Promise<T>): Promise<T> {
  return withTimeout(work, STORE_TIMEOUT_MS, () => new StoreTimeout('revocation store timed out'))
}

/** Why a revocation call was not carried out. */
export class RevocationError extends Error {
  override readonly name = 'RevocationError'
  constructor(
    readonly code: 'not_found' | 'not_liftable' | 'already_lifted' | 'unavailable',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

function alreadyLifted(r: Revocation): RevocationError {
  return new RevocationError('already_lifted', `that kill was already lifted by ${r.liftedBy ?? 'someone'}`)
}

/** Told of each record the local mirror applies, made here or arriving from the shared store. */
export type RevocationListener = (record: Revocation) => void

export interface SubscribeOptions {
  /**
   * The mirror's whole state was replaced (a full resync): no per-record
   * events were sent for it, so anything built from them must be rebuilt
   * from `records()`.
   */
  readonly onResync?: () => void
  /** No event will follow: the service is shutting down. Called at once when it already has. */
  readonly onEnd?: () => void
}

/** A mirror that tells subscribers what it applies (the broker's revocation feed streams it). */
export interface ObservedMirror extends RevocationMirror {
  /** Returns the unsubscribe function; listeners' exceptions are swallowed, never reach the writer. */
  subscribe(listener: RevocationListener, options?: SubscribeOptions): () => void
  /** Ends every subscription (`onEnd`) and every later one at once. Idempotent. */
  end(): void
}

/**
 * Wraps `mirror` so that every `apply` is told to subscribers after it took
 * effect, and every `replaceAll` as a resync. Re-applying a known record
 * (the stream echoing a local revocation) is told again: consumers apply
 * idempotently.
 */
export function observeMirror(mirror: RevocationMirror): ObservedMirror {
  const subscribers = new Set<{ listener: RevocationListener; options: SubscribeOptions }>()
  let ended = false
  const each = (call: (s: { listener: RevocationListener; options: SubscribeOptions }) => void) => {
    for (const s of [...subscribers]) {
      try {
        call(s)
      } catch {
        // A subscriber's failure is its own; the mirror's writer (the Redis loop) carries on.
      }
    }
  }
  return {
    check: (q) => mirror.check(q),
    checkToken: (t) => mirror.checkToken(t),
    records: () => mirror.records(),
    apply(record) {
      mirror.apply(record)
      each((s) => s.listener(record))
    },
    replaceAll(records) {
      mirror.replaceAll(records)
      each((s) => s.options.onResync?.())
    },
    subscribe(listener, options = {}) {
      if (ended) {
        options.onEnd?.()
        return () => {}
      }
      const entry = { listener, options }
      subscribers.add(entry)
      return () => void subscribers.delete(entry)
    },
    end() {
      if (ended) return
      ended = true
      each((s) => s.options.onEnd?.())
      subscribers.clear()
    },
  }
}

export interface RevocationServiceOptions {
  readonly log: RevocationLog
  readonly mirror: ObservedMirror
  /** Absent in the embedded default: one process, nothing to propagate to. */
  readonly feed: RevocationFeed | undefined
  /** Epoch seconds. */
  readonly now: () => number
  /**
   * Seconds a `jti`/`chain` entry must outlive its creation: the longest a
   * token issued before it can live, plus clock skew.
   */
  readonly tokenEntryTtl: number
  /**
   * Told of each revocation this instance made durable, and of each kill it
   * lifted (not of records arriving from other instances): metrics hang here.
   * Must not throw.
   */
  readonly onRecorded?: (record: Revocation, action: 'created' | 'lifted') => void
}

export interface NewRevocation {
  readonly target: RevocationTarget
  readonly reason: string
  readonly createdBy: string
  /** When the caller knows the revoked token's own `exp` (RFC 7009), its entry can end sooner. */
  readonly tokenExpiresAt?: number
}

/** The kill switch: revocations written durably, propagated, and checked from memory. */
export interface RevocationService extends RevocationStore {
  /** Resolves once the record is durable and every mirror will apply it; rejects with `RevocationError` otherwise. */
  revoke(input: NewRevocation): Promise<Revocation>
  /**
   * Lifts an agent/user kill; tokens issued before it stay dead. Rejects with
   * `already_lifted` when it was (by an earlier or a concurrent call).
   */
  lift(id: string, by: string): Promise<Revocation>
  get(id: string): Promise<Revocation | undefined>
  list(options: { limit: number; before?: string }): Promise<readonly Revocation[]>
  /** False when the shared list cannot be trusted right now (fail closed). */
  fresh(): boolean
  /** Milliseconds since the shared store was last heard from (0 without one). */
  lag(): number
  /** Every record the local mirror holds, oldest first. */
  records(): readonly Revocation[]
  /**
   * Calls `listener` for every record the local mirror applies, made on this
   * instance or arriving from the shared store, and `onResync` after a full
   * resync. Returns the unsubscribe function.
   */
  subscribe(listener: RevocationListener, options?: SubscribeOptions): () => void
  /** Ends every subscription (open revocation feeds close). Call when the server stops. Idempotent. */
  endSubscriptions(): void
}

/**
 * Composes the durable log (PostgreSQL/PGlite), the propagation feed (Redis)
 * and the local mirror. A revocation is acknowledged only after the log has
 * it AND the shared store has it: if Redis cannot take it, the call fails
 * (503) even though the record is durable, because an acknowledged kill must
 * hold on every instance at once; the record still reaches Redis when it
 * comes back (the feed reconciles from the log).
 */
export function createRevocationService(options: RevocationServiceOptions): RevocationService {
  const { log, mirror, feed, now } = options
  const recorded = (record: Revocation, action: 'created' | 'lifted') => {
    try {
      options.onRecorded?.(record, action)
    } catch {
      // metrics only: the revocation stands
    }
  }

  async function propagate(record: Revocation): Promise<void> {
    mirror.apply(record)
    if (feed === undefined) return
    try {
      await feed.publish(record)
    } catch (cause) {
      throw new RevocationError('unavailable', 'stored durably but not yet propagated (Redis unreachable); it applies when Redis returns', { cause })
    }
  }

  const stale = (): RevocationVerdict => ({ state: 'unknown', detail: `revocation mirror stale (${feed?.lag() ?? 0} ms)` })

  return {
    async revoke(input) {
      const createdAt = now()
      const isKill = KILL_KINDS.has(input.target.kind)
      const record: Revocation = {
        id: randomUUID(),
        target: input.target,
        reason: input.reason,
        createdBy: input.createdBy,
        createdAt,
        expiresAt: isKill ? undefined : Math.min(createdAt + options.tokenEntryTtl, input.tokenExpiresAt ?? Infinity),
        liftedAt: undefined,
        liftedBy: undefined,
      }
      try {
        await bounded(log.insert(record))
      } catch (cause) {
        throw new RevocationError(
          'unavailable',
          cause instanceof StoreTimeout
            ? 'revocation store did not answer in time; check the list before retrying'
            : 'revocation store unavailable; nothing was revoked',
          { cause },
        )
      }
      // Durable from here: counted even if propagation fails below (the call answers 503, the record holds).
      recorded(record, 'created')
      await propagate(record)
      return record
    },

    async lift(id, by) {
      let existing: Revocation | undefined
      try {
        existing = await bounded(log.get(id))
      } catch (cause) {
        throw new RevocationError('unavailable', 'revocation store unavailable', { cause })
      }
      if (existing === undefined) throw new RevocationError('not_found', 'no revocation has that id')
      if (!KILL_KINDS.has(existing.target.kind)) {
        throw new RevocationError('not_liftable', 'only agent and user kills can be lifted; a revoked token stays revoked')
      }
      if (existing.liftedAt !== undefined) throw alreadyLifted(existing)
      let outcome: LiftOutcome | undefined
      try {
        outcome = await bounded(log.lift(id, by, now()))
      } catch (cause) {
        throw new RevocationError('unavailable', 'revocation store unavailable; the kill stays in force', { cause })
      }
      if (outcome === undefined) throw new RevocationError('not_found', 'no revocation has that id')
      // Another lift won the race: the log kept its lifter, and it propagated the record.
      if (!outcome.changed) throw alreadyLifted(outcome.record)
      recorded(outcome.record, 'lifted')
      await propagate(outcome.record)
      return outcome.record
    },

    get: (id) => bounded(log.get(id)),
    list: (o) => bounded(log.list(o)),
    fresh: () => feed?.fresh() ?? true,
    lag: () => feed?.lag() ?? 0,
    records: () => mirror.records(),
    subscribe: (listener, o) => mirror.subscribe(listener, o),
    endSubscriptions: () => mirror.end(),

    check(query: RevocationQuery) {
      return feed !== undefined && !feed.fresh() ? stale() : mirror.check(query)
    },
    checkToken(token: TokenFacts) {
      return feed !== undefined && !feed.fresh() ? stale() : mirror.checkToken(token)
    },
  }
}
