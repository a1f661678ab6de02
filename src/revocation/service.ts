import { randomUUID } from 'node:crypto'
import type {
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

/** Why a revocation call was not carried out. */
export class RevocationError extends Error {
  override readonly name = 'RevocationError'
  constructor(
    readonly code: 'not_found' | 'not_liftable' | 'unavailable',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

export interface RevocationServiceOptions {
  readonly log: RevocationLog
  readonly mirror: RevocationMirror
  /** Absent in the embedded default: one process, nothing to propagate to. */
  readonly feed: RevocationFeed | undefined
  /** Epoch seconds. */
  readonly now: () => number
  /**
   * Seconds a `jti`/`chain` entry must outlive its creation: the longest a
   * token issued before it can live, plus clock skew.
   */
  readonly tokenEntryTtl: number
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
  /** Lifts an agent/user kill; tokens issued before it stay dead. Idempotent. */
  lift(id: string, by: string): Promise<Revocation>
  get(id: string): Promise<Revocation | undefined>
  list(options: { limit: number; before?: string }): Promise<readonly Revocation[]>
  /** False when the shared list cannot be trusted right now (fail closed). */
  fresh(): boolean
  /** Milliseconds since the shared store was last heard from (0 without one). */
  lag(): number
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
        await log.insert(record)
      } catch (cause) {
        throw new RevocationError('unavailable', 'revocation store unavailable; nothing was revoked', { cause })
      }
      await propagate(record)
      return record
    },

    async lift(id, by) {
      let existing: Revocation | undefined
      try {
        existing = await log.get(id)
      } catch (cause) {
        throw new RevocationError('unavailable', 'revocation store unavailable', { cause })
      }
      if (existing === undefined) throw new RevocationError('not_found', 'no revocation has that id')
      if (!KILL_KINDS.has(existing.target.kind)) {
        throw new RevocationError('not_liftable', 'only agent and user kills can be lifted; a revoked token stays revoked')
      }
      let lifted: Revocation | undefined
      try {
        lifted = await log.lift(id, by, now())
      } catch (cause) {
        throw new RevocationError('unavailable', 'revocation store unavailable; the kill stays in force', { cause })
      }
      if (lifted === undefined) throw new RevocationError('not_found', 'no revocation has that id')
      await propagate(lifted)
      return lifted
    },

    get: (id) => log.get(id),
    list: (o) => log.list(o),
    fresh: () => feed?.fresh() ?? true,
    lag: () => feed?.lag() ?? 0,

    check(query: RevocationQuery) {
      return feed !== undefined && !feed.fresh() ? stale() : mirror.check(query)
    },
    checkToken(token: TokenFacts) {
      return feed !== undefined && !feed.fresh() ? stale() : mirror.checkToken(token)
    },
  }
}
