/**
 * Where a revocation has reached: which broker instances' mirrors applied it
 * and which open revocation-feed streams it was written to. Each instance
 * notes what it does (off the token path, batched) in a store every instance
 * shares (Redis, propagation-redis.ts) or, without Redis, in this process
 * (`createMemoryPropagationStore`: the process is the only instance).
 *
 * "Sent" is written to the subscriber's open stream, not acknowledged by it:
 * the feed has no acknowledgement (SSE is one-way).
 *
 * A full resync of the mirror applies records without per-record events: the
 * instance then notes every record it holds that was made within the notes'
 * life ({@link NOTE_TTL_MS}). A feed client sent a snapshot has every record
 * its instance had applied when the snapshot was taken: its connection
 * carries that time, and {@link sentAtOf} reads it.
 */
import { randomUUID } from 'node:crypto'
import type { Logger } from '../telemetry/log.js'
import { messageOf } from '../core/errors.js'
import type { Revocation } from './port.js'
import type { RevocationListener, SubscribeOptions } from './service.js'

/** How often each instance says it is alive. */
export const HEARTBEAT_MS = 2_000
/** An instance unheard for this long (three heartbeats) is not live: it does not count against `complete`. */
export const LIVE_WINDOW_MS = 3 * HEARTBEAT_MS
/** How long the notes of one revocation are kept: long enough to watch a kill arrive, short enough not to grow. */
export const NOTE_TTL_MS = 24 * 3600 * 1000
/**
 * Notes waiting for the store beyond this are dropped, the oldest first (the
 * store is down). Above a full resync's worth of records: about 100 bytes each.
 */
const MAX_PENDING_NOTES = 100_000

/** One open revocation-feed stream. */
export interface FeedConnection {
  readonly connection: string
  /** Who opened it: a resource server's id, or `admin:<key name>`. */
  readonly subscriber: string
  readonly instance: string
  /** Epoch ms. */
  readonly connectedAt: number
  /** Epoch ms when the last snapshot this stream was written was taken; undefined before one. */
  readonly snapshotAt: number | undefined
}

export type PropagationNote =
  | { readonly kind: 'applied'; readonly record: string; readonly instance: string; readonly at: number }
  | { readonly kind: 'sent'; readonly record: string; readonly connection: string; readonly at: number }
  | { readonly kind: 'opened'; readonly feed: FeedConnection }
  | { readonly kind: 'closed'; readonly instance: string; readonly connection: string }

/** What the store holds about one revocation. Times are epoch ms. */
export interface StoredPropagation {
  /** Instance → when it last said it was alive (recently gone ones included, while the store keeps them). */
  readonly instances: ReadonlyMap<string, number>
  /** Instance → when its mirror first applied the record. */
  readonly applied: ReadonlyMap<string, number>
  /** The open feed streams of live instances. */
  readonly feeds: readonly FeedConnection[]
  /** Connection → when the record was first written to it as its own event. */
  readonly sent: ReadonlyMap<string, number>
}

/** Where instances share their notes. */
export interface PropagationStore {
  /** Writes the notes; a note already there (first application, first send) is kept. Rejects when the store cannot take them. */
  write(notes: readonly PropagationNote[]): Promise<void>
  /** `instance` is alive at `at` (its feed streams with it). */
  heartbeat(instance: string, at: number): Promise<void>
  /** `instance` stops: it and its streams leave the live list at once. */
  leave(instance: string): Promise<void>
  read(record: string): Promise<StoredPropagation>
}

export interface PropagationTracker {
  /** This instance's name (`instance_id`, or host and pid). */
  readonly instance: string
  /** The clock (epoch ms) every note of this instance is timed by. */
  readonly clock: () => number
  /** A feed stream opened on this instance; its notes. */
  feedOpened(subscriber: string): FeedNotes
  read(record: string): Promise<StoredPropagation>
  /** Writes what is pending, stops the heartbeat and leaves the live list. Idempotent. */
  close(): Promise<void>
}

/** What one feed stream tells the tracker. Never throws, never waits. */
export interface FeedNotes {
  /** The record's own event was written to the stream. */
  sent(record: string): void
  /** A snapshot taken at `takenAt` (epoch ms) was written to the stream. */
  snapshot(takenAt: number): void
  closed(): void
}

export interface TrackerOptions {
  readonly instance: string
  readonly store: PropagationStore
  /** The mirror's events (RevocationService.subscribe). */
  readonly subscribe: (listener: RevocationListener, options?: SubscribeOptions) => () => void
  /** Every record the mirror holds (after a full resync). */
  readonly records: () => readonly Revocation[]
  /** Epoch ms. */
  readonly clock: () => number
  readonly logger: Logger
  /** Default HEARTBEAT_MS (tests). */
  readonly heartbeatMs?: number
}

/**
 * Notes what this instance applies and sends, in batches: a note is queued
 * at once and written with the others queued meanwhile in one round trip,
 * never on the caller's path. A store that fails is logged once per outage;
 * its notes are retried with the next batch, up to MAX_PENDING_NOTES.
 */
export function createPropagationTracker(options: TrackerOptions): PropagationTracker {
  // Long, not split: the queue of notes, the batch in flight, the failure state and the heartbeat share one state.
  const { instance, store, clock, logger } = options
  let pending: PropagationNote[] = []
  let flushing: Promise<void> | undefined
  let scheduled = false
  let failing = false
  let closed = false
  /** Records this instance already noted as applied: the Redis stream echoes each local revocation. Oldest first, bounded. */
  const noted = new Set<string>()

  async function flush(): Promise<void> {
    while (pending.length > 0) {
      const batch = pending
      pending = []
      try {
        await store.write(batch)
        if (failing) logger.info('propagation notes written again')
        failing = false
      } catch (err) {
        if (!failing) logger.warn({ error: messageOf(err) }, 'propagation notes not written; retrying with the next ones')
        failing = true
        pending = [...batch, ...pending].slice(-MAX_PENDING_NOTES)
        return
      }
    }
  }

  function schedule(): void {
    if (scheduled || flushing !== undefined || closed) return
    scheduled = true
    // After the caller's turn: whatever it queues in the same turn goes in the same batch.
    setImmediate(() => {
      scheduled = false
      flushing = flush().finally(() => {
        flushing = undefined
        // Not after a failure: the heartbeat retries then.
        if (pending.length > 0 && !failing) schedule()
      })
    })
  }

  function queue(note: PropagationNote): void {
    if (closed) return
    pending.push(note)
    // Trimmed in batches: amortized O(1) per note.
    if (pending.length > 2 * MAX_PENDING_NOTES) pending = pending.slice(-MAX_PENDING_NOTES)
    schedule()
  }

  function applied(record: Revocation): void {
    if (noted.has(record.id)) return
    noted.add(record.id)
    if (noted.size > 100_000) noted.delete(noted.values().next().value!)
    queue({ kind: 'applied', record: record.id, instance, at: clock() })
  }

  function appliedAll(): void {
    const since = clock() - NOTE_TTL_MS
    for (const r of options.records()) if (r.createdAt * 1000 >= since) applied(r)
  }

  const unsubscribe = options.subscribe(applied, { onResync: appliedAll })
  appliedAll()

  const beat = () => {
    store.heartbeat(instance, clock()).catch((err: unknown) => {
      if (!failing) logger.warn({ error: messageOf(err) }, 'propagation heartbeat not written')
      failing = true
    })
    // Notes left by a failed batch are retried here.
    if (failing && pending.length > 0 && flushing === undefined) flushing = flush().finally(() => (flushing = undefined))
  }
  beat()
  const timer = setInterval(beat, options.heartbeatMs ?? HEARTBEAT_MS)
  timer.unref()

  return {
    instance,
    clock,
    feedOpened(subscriber) {
      const base = { connection: randomUUID(), subscriber, instance, connectedAt: clock() }
      queue({ kind: 'opened', feed: { ...base, snapshotAt: undefined } })
      return {
        sent: (record) => queue({ kind: 'sent', record, connection: base.connection, at: clock() }),
        snapshot: (takenAt) => queue({ kind: 'opened', feed: { ...base, snapshotAt: takenAt } }),
        closed: () => queue({ kind: 'closed', instance, connection: base.connection }),
      }
    },
    async read(record) {
      // The instance answering is alive now, whenever its last heartbeat was.
      await store.heartbeat(instance, clock())
      return store.read(record)
    },
    async close() {
      if (closed) return
      clearInterval(timer)
      unsubscribe()
      await flushing
      await flush().catch(() => {})
      closed = true
      await store.leave(instance).catch(() => {})
    },
  }
}

/**
 * When `record` reached `feed`: its own event written, or a snapshot taken
 * once the stream's instance had applied it (the snapshot holds every record
 * the mirror held), whichever came first. Undefined: not yet.
 */
export function sentAtOf(feed: FeedConnection, stored: StoredPropagation): number | undefined {
  const own = stored.sent.get(feed.connection)
  const appliedAt = stored.applied.get(feed.instance)
  const bySnapshot = feed.snapshotAt !== undefined && appliedAt !== undefined && appliedAt <= feed.snapshotAt ? feed.snapshotAt : undefined
  if (own === undefined) return bySnapshot
  return bySnapshot === undefined ? own : Math.min(own, bySnapshot)
}

/** Whether an instance last seen at `lastSeen` is live at `now`. */
export const isLive = (lastSeen: number | undefined, now: number): boolean => lastSeen !== undefined && now - lastSeen <= LIVE_WINDOW_MS

/**
 * One process's notes (no Redis): itself the only instance. Notes older than
 * NOTE_TTL_MS are dropped as new ones arrive.
 */
export function createMemoryPropagationStore(clock: () => number): PropagationStore {
  const instances = new Map<string, number>()
  /** Record → its notes, oldest record first. */
  const records = new Map<string, { readonly since: number; readonly applied: Map<string, number>; readonly sent: Map<string, number> }>()
  const feeds = new Map<string, FeedConnection>()
  const of = (record: string) => {
    let r = records.get(record)
    if (r === undefined) {
      r = { since: clock(), applied: new Map(), sent: new Map() }
      records.set(record, r)
      for (const [id, old] of records) {
        if (old.since > clock() - NOTE_TTL_MS) break
        records.delete(id)
      }
    }
    return r
  }
  const first = (m: Map<string, number>, key: string, at: number) => {
    if (!m.has(key)) m.set(key, at)
  }
  return {
    async write(notes) {
      for (const n of notes) {
        if (n.kind === 'applied') first(of(n.record).applied, n.instance, n.at)
        else if (n.kind === 'sent') first(of(n.record).sent, n.connection, n.at)
        else if (n.kind === 'opened') feeds.set(n.feed.connection, n.feed)
        else feeds.delete(n.connection)
      }
      return Promise.resolve()
    },
    async heartbeat(instance, at) {
      instances.set(instance, at)
      return Promise.resolve()
    },
    async leave(instance) {
      instances.delete(instance)
      for (const [id, f] of feeds) if (f.instance === instance) feeds.delete(id)
      return Promise.resolve()
    },
    async read(record) {
      const r = records.get(record)
      return Promise.resolve({
        instances: new Map(instances),
        applied: new Map(r?.applied),
        sent: new Map(r?.sent),
        feeds: [...feeds.values()],
      })
    },
  }
}
