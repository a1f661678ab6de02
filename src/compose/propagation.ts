/**
 * How instances share revocations, spent client assertions and rate limits:
 * through Redis when `storage.redis_url` is set; otherwise this process
 * alone holds them (one instance only).
 */
import { createMemoryAdmissionStore } from '../admission/memory.js'
import type { AdmissionStore } from '../admission/port.js'
import { createRedisAdmissionStore } from '../admission/redis.js'
import type { Closers } from '../core/async.js'
import type { Config } from '../config/schema.js'
import type { RevocationFeed, RevocationLog, RevocationMirror } from '../revocation/port.js'
import { createRedisRevocationFeed } from '../revocation/redis.js'
import { createMemoryPropagationStore, type PropagationStore } from '../revocation/propagation.js'
import { createRedisPropagationStore } from '../revocation/propagation-redis.js'
import { openRedis } from '../storage/redis.js'
import type { Logger } from '../telemetry/log.js'

export interface Propagation {
  /** Undefined without Redis: the mirror was filled once from the durable log. */
  readonly feed: RevocationFeed | undefined
  readonly admission: AdmissionStore
  /** Whether the admission store's connection is up; undefined when it is not the Redis one. */
  readonly admissionConnected: (() => boolean) | undefined
  /** Where instances note what reached them (GET /admin/revocations/{id}/propagation): Redis, or this process. */
  readonly propagationNotes: PropagationStore
}

export interface PropagationOptions {
  readonly mirror: RevocationMirror
  readonly revocationLog: RevocationLog
  /** Epoch milliseconds. */
  readonly clock: () => number
  /** When the process began accepting: an embedded replay memory refuses assertions that may predate it. */
  readonly startedAt: number
  readonly logger: Logger
  /** Dev mode: no warning about a single instance. */
  readonly dev: boolean
  /** Brought by the caller instead of Redis or process memory (tests). */
  readonly admission: AdmissionStore | undefined
}

/** Fills the mirror (and keeps it in step, with Redis) and picks the admission store; registers every close with `closers`. */
export async function openPropagation(config: Config, options: PropagationOptions, closers: Closers): Promise<Propagation> {
  const { clock, mirror } = options
  const url = config.storage.redis_url
  if (url === undefined) {
    mirror.replaceAll(await options.revocationLog.listRelevant(Math.floor(clock() / 1000)))
    if (!options.dev) {
      options.logger.warn(
        { replay_cache: 'memory', rate_limits: 'memory', revocation_feed: 'none' },
        'REDIS_URL is not set: revocations, client-assertion replays and rate limits are tracked in this process only; run a single instance',
      )
    }
    return {
      feed: undefined,
      // The process's memory, which began at the start (an assertion from before a restart is refused).
      admission: options.admission ?? createMemoryAdmissionStore(clock, options.startedAt),
      admissionConnected: undefined,
      propagationNotes: createMemoryPropagationStore(clock),
    }
  }
  const redis = await openRedis(url)
  closers.add(() => redis.disconnect())
  const feed = await createRedisRevocationFeed({
    redis,
    prefix: config.storage.key_prefix,
    mirror,
    log: options.revocationLog,
    now: clock,
    staleAfterMs: config.revocation.max_staleness_ms,
    blockMs: Math.min(250, Math.floor(config.revocation.max_staleness_ms / 4)),
    logger: options.logger.child({ module: 'revocation' }),
  })
  closers.add(() => feed.close())
  const propagationNotes = createRedisPropagationStore(redis, config.storage.key_prefix, clock)
  closers.add(() => propagationNotes.close())
  if (options.admission !== undefined) return { feed, admission: options.admission, admissionConnected: undefined, propagationNotes }
  return {
    feed,
    propagationNotes,
    admission: await createRedisAdmissionStore(redis, config.storage.key_prefix, clock),
    admissionConnected: () => redis.status === 'ready',
  }
}
