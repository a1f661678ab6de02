/**
 * After a group's answer was lost (connection cut, timeout): did it commit?
 * The chain writer (chain-writer.ts) asks before it writes anything else.
 */
import { randomUUID } from 'node:crypto'
import { desc, eq } from 'drizzle-orm'
import { withTimeout } from '../core/async.js'
import { databaseTimeout } from '../storage/database.js'
import { auditLog } from '../storage/schema.js'
import type { ChainState, Unconfirmed } from './chain-writer.js'
import type { AuditEvent } from './port.js'
import { GENESIS_HASH } from './record.js'

/**
 * Finds out whether the unconfirmed group committed (its last record is the
 * chain's head) and moves the head accordingly. If it did, what it owed is
 * written, and a `token.withheld` is owed for each token whose issuance
 * committed but was answered 503. Throws (the new group is not written)
 * while the database cannot answer; the group stays unconfirmed.
 */
export async function settleUnconfirmed(w: ChainState, pending: Unconfirmed): Promise<void> {
  const { options } = w
  // A timed-out INSERT may still be running, and commit after the head is read: wait a while for its
  // end first (at most one more write timeout; meanwhile groups fail 503). The wait is for the
  // accounting only: were it to commit later, UNIQUE (chain_id, seq) refuses it once a later group
  // holds its seqs, or the head read below moves onto it, so the chain never forks. It is short
  // because a query can hang past any answer: postgres.js has left one pending for good when the
  // connection was reset as it was sent, which held the whole log at 503 while it was awaited.
  const left = pending.waitUntil - performance.now()
  if (left > 0) {
    const ms = Math.min(left, options.writeTimeoutMs)
    await withTimeout(pending.done, ms, databaseTimeout(ms))
  }
  const [last] = await withTimeout(
    options.database.db
      .select({ seq: auditLog.seq, hash: auditLog.hash })
      .from(auditLog)
      .where(eq(auditLog.chainId, w.chainId))
      .orderBy(desc(auditLog.seq))
      .limit(1),
    options.writeTimeoutMs,
    databaseTimeout(options.writeTimeoutMs),
  )
  w.unconfirmed = undefined
  const lastRow = pending.rows.at(-1)!
  if (last !== undefined && last.seq === lastRow.seq && last.hash === lastRow.hash) {
    w.head = { seq: last.seq, hash: last.hash }
    w.records += pending.rows.length
    // What it carried of the records owed is written now; each token it issued is owed a token.withheld.
    w.owed = [...w.owed.filter((e) => !pending.events.includes(e)), ...withheld(pending.events, Math.floor(options.clock() / 1000))]
    options.logger.warn(
      { chain: w.chainId, records: pending.rows.length, withheld: w.owed.length },
      'an unconfirmed audit group had committed; recording its tokens as withheld',
    )
    return
  }
  const unchanged = last === undefined ? w.head.seq === 0 : last.seq === w.head.seq && last.hash === w.head.hash
  if (!unchanged) {
    // Someone else wrote to this chain, or a late commit raced the check: never fork it.
    const previous = w.chainId
    w.chainId = randomUUID()
    w.head = { seq: 0, hash: GENESIS_HASH }
    w.checkpointed = { seq: 0, at: options.clock() }
    w.firstCheckpointDue = true
    options.logger.error(
      { previous_chain: previous, chain: w.chainId, owed: w.owed.length },
      'audit chain head is not where this writer left it; continuing on a new chain',
    )
  }
}

/** A `token.withheld` record for each `token.issued` of `events`: those tokens never left the broker. */
function withheld(events: readonly AuditEvent[], at: number): AuditEvent[] {
  return events.flatMap((e): AuditEvent[] =>
    e.type === 'token.issued'
      ? [
          {
            type: 'token.withheld',
            at,
            agent: e.agent,
            sub: e.sub,
            subIssuer: e.subIssuer,
            jti: e.jti,
            reason: 'issuance committed but the response was 503: the token never left the broker',
          },
        ]
      : [],
  )
}
