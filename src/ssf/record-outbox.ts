/**
 * A webhook's second source: governance records of the delegation log
 * (`agent.lifecycle`, `agent.anomaly`) turned into entries of the same queue
 * as its kills and lifts. Like the revocation scan (outbox.ts), it reads the
 * log itself past a cursor of its own (`ssf_streams.audit_cursor_at`),
 * rereading a grace period behind it for records committed late or stamped by
 * a slower clock, and skips what the queue already holds: enqueueing is
 * idempotent across instances, and nothing is written twice on the path that
 * wrote the record.
 */
import { and, asc, eq, gt, gte, inArray, isNotNull, lt, notExists, or, sql, type SQL } from 'drizzle-orm'
import type { Db } from '../storage/database.js'
import { auditLog, ssfOutbox, ssfStreams } from '../storage/schema.js'
import type { OutboxEntry } from './outbox.js'

/** Governance records of one event type whose `field` (a member of the record's JSON) holds one of `values`. */
export interface RecordSelector {
  readonly event: 'agent.lifecycle' | 'agent.anomaly' | 'approval.requested' | 'approval.decided'
  readonly field: string
  readonly values: readonly string[]
}

/** One delegation-log record as read for a webhook: where it sits, when it was made, and its canonical JSON. */
export interface LogRecord {
  /** `audit_log.id`. */
  readonly id: number
  readonly chain: string
  readonly seq: number
  /** Epoch seconds. */
  readonly at: number
  /** The record as hashed (RFC 8785 JSON, snake_case). */
  readonly record: string
}

/** Where a page of a scan resumes: after this record, in (at, id) order. */
export interface RecordKey {
  readonly at: number
  readonly id: number
}

const a = auditLog
const o = ssfOutbox
const s = ssfStreams

/** SQL matching the records any selector picks. */
function selected(selectors: readonly RecordSelector[]): SQL | undefined {
  // `->>` with a text key: the field is a parameter, never spliced into the statement.
  const matches = selectors
    .filter((x) => x.values.length > 0)
    .map((x) => and(eq(a.event, x.event), inArray(sql`(${a.record}::jsonb ->> ${x.field}::text)`, [...x.values])))
  return matches.length === 0 ? undefined : or(...matches)
}

/**
 * Records picked by `selectors` not yet in the receiver's queue, made at or
 * after its start and no more than `graceSeconds` before its record cursor,
 * after `after` when given, oldest first, at most `limit`.
 */
export async function unsentRecords(
  db: Db,
  receiver: string,
  selectors: readonly RecordSelector[],
  graceSeconds: number,
  after: RecordKey | undefined,
  limit: number,
): Promise<readonly LogRecord[]> {
  const pick = selected(selectors)
  if (pick === undefined) return []
  const [stream] = await db.select({ startAt: s.startAt, cursorAt: s.auditCursorAt }).from(s).where(eq(s.receiver, receiver)).limit(1)
  if (stream === undefined) return []
  const from = Math.max(stream.startAt, (stream.cursorAt ?? stream.startAt) - graceSeconds)
  const enqueued = db
    .select({ one: sql`1` })
    .from(o)
    .where(and(eq(o.receiver, receiver), eq(o.auditId, a.id)))
  const where = [gte(a.at, from), pick, notExists(enqueued)]
  if (after !== undefined) where.push(or(gt(a.at, after.at), and(eq(a.at, after.at), gt(a.id, after.id)))!)
  return db
    .select({ id: a.id, chain: a.chainId, seq: a.seq, at: a.at, record: a.record })
    .from(a)
    .where(and(...where))
    .orderBy(asc(a.at), asc(a.id))
    .limit(limit)
}

/** Adds entries (one already there is left as it is) and moves the record cursor to `cursorAt` unless it is past it. */
export async function enqueueRecords(db: Db, receiver: string, entries: readonly OutboxEntry[], cursorAt: number): Promise<void> {
  await db.transaction(async (tx) => {
    if (entries.length > 0)
      await tx
        .insert(o)
        .values([...entries])
        .onConflictDoNothing()
    const at = sql`${new Date(cursorAt * 1000).toISOString()}::timestamptz`
    await tx
      .update(s)
      .set({ auditCursorAt: sql`greatest(coalesce(${s.auditCursorAt}, ${s.startAt}), ${at})` })
      .where(eq(s.receiver, receiver))
  })
}

/** Deletes settled entries of records made before `before` (epoch seconds): the record scan no longer reaches them. */
export async function pruneRecords(db: Db, receiver: string, before: number): Promise<void> {
  await db.delete(o).where(and(eq(o.receiver, receiver), isNotNull(o.auditId), sql`${o.state} <> 'pending'`, lt(o.revokedAt, before)))
}
