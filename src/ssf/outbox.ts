/**
 * The SQL side of SET delivery: each receiver's stream (cursor, lease) and
 * its outbox. Revocations are read from the revocation log itself, never
 * written twice on the kill path: a kill is durable in `revocations` before
 * anything here sees it, and whatever this module loses is rebuilt from there.
 * One function per query, each taking the database; `createSqlSsfStore` binds them.
 * Webhooks also queue governance records of the delegation log: record-outbox.ts.
 */
import { and, asc, count, eq, gte, inArray, isNotNull, isNull, lt, max, min, notExists, or, sql } from 'drizzle-orm'
import { fromRow } from '../revocation/log-sql.js'
import type { Revocation } from '../revocation/port.js'
import type { Db } from '../storage/database.js'
import { revocations, ssfOutbox, ssfStreams, type SsfOutboxRow } from '../storage/schema.js'
import { enqueueRecords, pruneRecords, unsentRecords, type LogRecord, type RecordKey, type RecordSelector } from './record-outbox.js'

/** A queue entry; its source is a revocation (`revocationId`) or a delegation-log record (`auditId`), never both. */
export type OutboxEntry = Pick<SsfOutboxRow, 'receiver' | 'jti' | 'revokedAt' | 'ordinal' | 'eventType' | 'set' | 'enqueuedAtMs'> &
  ({ readonly revocationId: string; readonly auditId?: undefined } | { readonly revocationId?: undefined; readonly auditId: number })

/** A moment of the revocation log: a revocation made, or a kill lifted (`lift`), at `at` (epoch seconds). */
export interface LogMoment {
  readonly revocation: Revocation
  readonly lift: boolean
  readonly at: number
}

/** The event types under which a receiver's queue records each moment; a moment with none is not scanned for. */
export interface MomentTypes {
  readonly created: string | undefined
  readonly lifted: string | undefined
}

/** A receiver's delivery state, for `mandate webhooks list`. Times are epoch ms. */
export interface DeliveryStatus {
  readonly receiver: string
  readonly lastSuccessAtMs: number | undefined
  readonly lastFailureAtMs: number | undefined
  readonly lastFailure: string | undefined
  readonly pending: number
  /** When the head of the queue is tried again, after a failure; undefined when nothing waits for a retry. */
  readonly nextAttemptAtMs: number | undefined
}

/** One receiver's undelivered SETs: how many, and the enqueue time (epoch ms) of the oldest. */
export interface Backlog {
  readonly pending: number
  readonly oldestMs: number | undefined
}

export interface SsfStore {
  /** Creates the receiver's stream starting at `startAt` (epoch seconds) unless it exists: a restart never moves a stream's start. */
  ensureStream(receiver: string, startAt: number): Promise<void>
  /**
   * Revocations not yet in the receiver's outbox, made at or after its start
   * and no more than `graceSeconds` before its cursor, oldest first, at most `limit`.
   */
  unsent(receiver: string, graceSeconds: number, limit: number): Promise<readonly Revocation[]>
  /** Adds entries (an entry already there is left as it is) and moves the cursor to `cursorAt` unless it is past it. */
  enqueue(receiver: string, entries: readonly OutboxEntry[], cursorAt: number): Promise<void>
  /** Takes or renews the receiver's lease for `seconds` on the database's clock; false when another instance holds it. */
  lease(receiver: string, owner: string, seconds: number): Promise<boolean>
  release(receiver: string, owner: string): Promise<void>
  /** The first pending entries in delivery order (enqueue order). */
  pending(receiver: string, limit: number): Promise<readonly SsfOutboxRow[]>
  /** Marks pending entries delivered (a 202, or a poll's `ack`); returns how many were pending. */
  delivered(receiver: string, jtis: readonly string[]): Promise<number>
  /** Gives up pending entries, with why; returns how many were pending. */
  failed(receiver: string, errors: ReadonlyMap<string, string>): Promise<number>
  /** Records a failed push and when the next may be tried. */
  retryLater(receiver: string, jti: string, attempts: number, nextAttemptAtMs: number, error: string): Promise<void>
  /** Pending entries and the oldest's age, per receiver. */
  backlog(): Promise<ReadonlyMap<string, Backlog>>
  /** Gives up pending entries enqueued before `beforeMs` (epoch ms); returns their jtis. */
  expire(receiver: string, beforeMs: number): Promise<readonly string[]>
  /** Deletes settled entries of revocations made before `before` (epoch seconds): a scan no longer reaches them. */
  prune(receiver: string, before: number): Promise<void>
  /**
   * Governance records of the delegation log picked by `selectors` and not
   * yet in the receiver's queue (record-outbox.ts), oldest first, after
   * `after` when given, at most `limit`.
   */
  unsentRecords(
    receiver: string,
    selectors: readonly RecordSelector[],
    graceSeconds: number,
    after: RecordKey | undefined,
    limit: number,
  ): Promise<readonly LogRecord[]>
  /** Adds record entries and moves the record cursor to `cursorAt` unless it is past it. */
  enqueueRecords(receiver: string, entries: readonly OutboxEntry[], cursorAt: number): Promise<void>
  /** Deletes settled entries of records made before `before` (epoch seconds). */
  pruneRecords(receiver: string, before: number): Promise<void>
  /**
   * Like `unsent`, for receivers told of lifts too: moments (made, lifted)
   * whose event type is not yet in the receiver's queue, oldest first, at most `limit`.
   */
  unsentMoments(receiver: string, types: MomentTypes, graceSeconds: number, limit: number): Promise<readonly LogMoment[]>
  /** Records a delivery's outcome on the stream: a success, or a failure and why. */
  noteOutcome(receiver: string, atMs: number, failure: string | undefined): Promise<void>
  /** Delivery state of each named receiver that has a stream. */
  status(receivers: readonly string[]): Promise<readonly DeliveryStatus[]>
  /** Every receiver's queue entries of one revocation (its SETs, and webhook entries), as they stand. */
  entriesOfRevocation(revocationId: string): Promise<readonly RevocationEntry[]>
  /** The receiver's stream: start, revocation cursor and record cursor (epoch seconds; the last undefined until a record is enqueued). */
  stream(receiver: string): Promise<{ startAt: number; cursorAt: number; auditCursorAt: number | undefined } | undefined>
}

/** Where one queue entry of a revocation stands. */
export type RevocationEntry = Pick<SsfOutboxRow, 'receiver' | 'eventType' | 'state' | 'attempts' | 'lastError' | 'enqueuedAtMs'>

export function createSqlSsfStore(db: Db): SsfStore {
  return {
    entriesOfRevocation: (revocationId) => entriesOfRevocation(db, revocationId),
    ensureStream: (receiver, startAt) => ensureStream(db, receiver, startAt),
    stream: (receiver) => stream(db, receiver),
    unsent: (receiver, graceSeconds, limit) => unsent(db, receiver, graceSeconds, limit),
    unsentMoments: (receiver, types, graceSeconds, limit) => unsentMoments(db, receiver, types, graceSeconds, limit),
    noteOutcome: (receiver, atMs, failure) => noteOutcome(db, receiver, atMs, failure),
    status: (receivers) => status(db, receivers),
    enqueue: (receiver, entries, cursorAt) => enqueue(db, receiver, entries, cursorAt),
    lease: (receiver, owner, seconds) => lease(db, receiver, owner, seconds),
    release: (receiver, owner) => release(db, receiver, owner),
    pending: (receiver, limit) => pending(db, receiver, limit),
    delivered: (receiver, jtis) => delivered(db, receiver, jtis),
    failed: (receiver, errors) => failed(db, receiver, errors),
    retryLater: (receiver, jti, attempts, nextAttemptAtMs, error) => retryLater(db, receiver, jti, attempts, nextAttemptAtMs, error),
    backlog: () => backlog(db),
    expire: (receiver, beforeMs) => expire(db, receiver, beforeMs),
    prune: (receiver, before) => prune(db, receiver, before),
    unsentRecords: (receiver, selectors, graceSeconds, after, limit) => unsentRecords(db, receiver, selectors, graceSeconds, after, limit),
    enqueueRecords: (receiver, entries, cursorAt) => enqueueRecords(db, receiver, entries, cursorAt),
    pruneRecords: (receiver, before) => pruneRecords(db, receiver, before),
  }
}

const o = ssfOutbox
const s = ssfStreams
const r = revocations

// The stream: where the receiver's queue starts, and how far the scan has read.

async function ensureStream(db: Db, receiver: string, startAt: number): Promise<void> {
  await db.insert(s).values({ receiver, startAt, cursorAt: startAt }).onConflictDoNothing()
}

async function stream(db: Db, receiver: string): Promise<{ startAt: number; cursorAt: number; auditCursorAt: number | undefined } | undefined> {
  const [row] = await db.select({ startAt: s.startAt, cursorAt: s.cursorAt, auditCursorAt: s.auditCursorAt }).from(s).where(eq(s.receiver, receiver)).limit(1)
  return row === undefined ? undefined : { ...row, auditCursorAt: row.auditCursorAt ?? undefined }
}

async function entriesOfRevocation(db: Db, revocationId: string): Promise<readonly RevocationEntry[]> {
  return db
    .select({ receiver: o.receiver, eventType: o.eventType, state: o.state, attempts: o.attempts, lastError: o.lastError, enqueuedAtMs: o.enqueuedAtMs })
    .from(o)
    .where(eq(o.revocationId, revocationId))
    .orderBy(asc(o.seq))
}

async function unsent(db: Db, receiver: string, graceSeconds: number, limit: number): Promise<readonly Revocation[]> {
  const at = await stream(db, receiver)
  if (at === undefined) return []
  const from = Math.max(at.startAt, at.cursorAt - graceSeconds)
  const enqueued = db
    .select({ one: sql`1` })
    .from(o)
    .where(and(eq(o.receiver, receiver), eq(o.revocationId, r.id)))
  const rows = await db
    .select()
    .from(r)
    .where(and(gte(r.createdAt, from), notExists(enqueued)))
    // Kills of one second in the order they were written: the inserting transaction's id (`xmin`;
    // a lift rewrites it, which only matters for a kill lifted before it was ever scanned).
    .orderBy(asc(r.createdAt), sql`(${r}.xmin::text)::bigint`, asc(r.id))
    .limit(limit)
  return rows.map(fromRow)
}

async function unsentMoments(db: Db, receiver: string, types: MomentTypes, graceSeconds: number, limit: number): Promise<readonly LogMoment[]> {
  const at = await stream(db, receiver)
  if (at === undefined) return []
  const from = Math.max(at.startAt, at.cursorAt - graceSeconds)
  const enqueued = (type: string) =>
    db
      .select({ one: sql`1` })
      .from(o)
      .where(and(eq(o.receiver, receiver), eq(o.revocationId, r.id), eq(o.eventType, type)))
  const order = [sql`(${r}.xmin::text)::bigint`, asc(r.id)]
  const made =
    types.created === undefined
      ? []
      : await db
          .select()
          .from(r)
          .where(and(gte(r.createdAt, from), notExists(enqueued(types.created))))
          .orderBy(asc(r.createdAt), ...order)
          .limit(limit)
  const lifted =
    types.lifted === undefined
      ? []
      : await db
          .select()
          .from(r)
          .where(and(isNotNull(r.liftedAt), gte(r.liftedAt, from), notExists(enqueued(types.lifted))))
          .orderBy(asc(r.liftedAt), ...order)
          .limit(limit)
  // Each list holds its `limit` oldest; the `limit` oldest of both together are the oldest overall.
  const moments = [
    ...made.map((row) => ({ revocation: fromRow(row), lift: false, at: row.createdAt })),
    ...lifted.map((row) => ({ revocation: fromRow(row), lift: true, at: row.liftedAt ?? row.createdAt })),
  ]
  return moments.sort((a, b) => a.at - b.at || Number(a.lift) - Number(b.lift)).slice(0, limit)
}

async function noteOutcome(db: Db, receiver: string, atMs: number, failure: string | undefined): Promise<void> {
  await db
    .update(s)
    .set(failure === undefined ? { lastSuccessAtMs: atMs } : { lastFailureAtMs: atMs, lastFailure: failure })
    .where(eq(s.receiver, receiver))
}

async function status(db: Db, receivers: readonly string[]): Promise<readonly DeliveryStatus[]> {
  if (receivers.length === 0) return []
  const streams = await db
    .select()
    .from(s)
    .where(inArray(s.receiver, [...receivers]))
  // Delivery is in order: only the head has been tried, so the latest retry time among pending entries is the head's.
  const queues = await db
    .select({ receiver: o.receiver, pending: count(), next: max(o.nextAttemptAtMs) })
    .from(o)
    .where(and(inArray(o.receiver, [...receivers]), eq(o.state, 'pending')))
    .groupBy(o.receiver)
  const byReceiver = new Map(queues.map((q) => [q.receiver, q]))
  return streams.map((row) => {
    const q = byReceiver.get(row.receiver)
    return {
      receiver: row.receiver,
      lastSuccessAtMs: row.lastSuccessAtMs ?? undefined,
      lastFailureAtMs: row.lastFailureAtMs ?? undefined,
      lastFailure: row.lastFailure ?? undefined,
      pending: q?.pending ?? 0,
      nextAttemptAtMs: q?.next === null || q?.next === undefined || q.next === 0 ? undefined : q.next,
    }
  })
}

async function enqueue(db: Db, receiver: string, entries: readonly OutboxEntry[], cursorAt: number): Promise<void> {
  await db.transaction(async (tx) => {
    if (entries.length > 0)
      await tx
        .insert(o)
        .values([...entries])
        .onConflictDoNothing()
    await tx
      .update(s)
      .set({ cursorAt: sql`greatest(${s.cursorAt}, ${new Date(cursorAt * 1000).toISOString()}::timestamptz)` })
      .where(eq(s.receiver, receiver))
  })
}

// The lease: which instance pushes the receiver's queue, on the database's clock.

async function lease(db: Db, receiver: string, owner: string, seconds: number): Promise<boolean> {
  const rows = await db
    .update(s)
    .set({ leaseOwner: owner, leaseUntil: sql`clock_timestamp() + make_interval(secs => ${seconds}::int)` })
    .where(and(eq(s.receiver, receiver), or(isNull(s.leaseOwner), eq(s.leaseOwner, owner), lt(s.leaseUntil, sql`clock_timestamp()`))))
    .returning({ receiver: s.receiver })
  return rows.length === 1
}

async function release(db: Db, receiver: string, owner: string): Promise<void> {
  await db
    .update(s)
    .set({ leaseOwner: null, leaseUntil: null })
    .where(and(eq(s.receiver, receiver), eq(s.leaseOwner, owner)))
}

// The queue: each entry pending until delivered or given up.

async function pending(db: Db, receiver: string, limit: number): Promise<readonly SsfOutboxRow[]> {
  return db
    .select()
    .from(o)
    .where(and(eq(o.receiver, receiver), eq(o.state, 'pending')))
    .orderBy(asc(o.seq))
    .limit(limit)
}

async function delivered(db: Db, receiver: string, jtis: readonly string[]): Promise<number> {
  if (jtis.length === 0) return 0
  const rows = await db
    .update(o)
    .set({ state: 'delivered', lastError: null })
    .where(and(eq(o.receiver, receiver), inArray(o.jti, [...jtis]), eq(o.state, 'pending')))
    .returning({ jti: o.jti })
  return rows.length
}

async function failed(db: Db, receiver: string, errors: ReadonlyMap<string, string>): Promise<number> {
  let n = 0
  for (const [jti, error] of errors) {
    const rows = await db
      .update(o)
      .set({ state: 'failed', lastError: error })
      .where(and(eq(o.receiver, receiver), eq(o.jti, jti), eq(o.state, 'pending')))
      .returning({ jti: o.jti })
    n += rows.length
  }
  return n
}

async function retryLater(db: Db, receiver: string, jti: string, attempts: number, nextAttemptAtMs: number, error: string): Promise<void> {
  await db
    .update(o)
    .set({ attempts, nextAttemptAtMs, lastError: error })
    .where(and(eq(o.receiver, receiver), eq(o.jti, jti), eq(o.state, 'pending')))
}

async function backlog(db: Db): Promise<ReadonlyMap<string, Backlog>> {
  const rows = await db
    .select({ receiver: o.receiver, pending: count(), oldest: min(o.enqueuedAtMs) })
    .from(o)
    .where(eq(o.state, 'pending'))
    .groupBy(o.receiver)
  return new Map(rows.map((row) => [row.receiver, { pending: row.pending, oldestMs: row.oldest ?? undefined }]))
}

async function expire(db: Db, receiver: string, beforeMs: number): Promise<readonly string[]> {
  const rows = await db
    .update(o)
    .set({ state: 'failed', lastError: 'expired' })
    .where(and(eq(o.receiver, receiver), eq(o.state, 'pending'), lt(o.enqueuedAtMs, beforeMs)))
    .returning({ jti: o.jti })
  return rows.map((row) => row.jti)
}

async function prune(db: Db, receiver: string, before: number): Promise<void> {
  // Revocation entries only: record entries follow the record cursor (pruneRecords), which may lag this one by days.
  await db.delete(o).where(and(eq(o.receiver, receiver), isNotNull(o.revocationId), sql`${o.state} <> 'pending'`, lt(o.revokedAt, before)))
}
