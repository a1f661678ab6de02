/**
 * Approval requests in SQL (PostgreSQL or PGlite alike): what an agent asked
 * a person to approve, the decision, and the one token it allowed. Every
 * change of state is one conditional UPDATE, so that of several broker
 * instances (or a double click) exactly one decides, one poll issues.
 */
import { createHash } from 'node:crypto'
import { and, count, desc, eq, gt, gte, inArray, isNull, or, sql, type SQL } from 'drizzle-orm'
import type { ApprovalStatus } from '../core/approval.js'
import type { Db } from '../storage/database.js'
import { approvalLinksUsed, approvalRequests } from '../storage/schema.js'
import type { ApprovalStore } from './port.js'

/** SHA-256, hex: the handle and the action are stored only as this. */
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

const a = approvalRequests

/** A listed status: a pending request past its expiry is expired, whether or not anything wrote so. */
function statusIs(status: ApprovalStatus, now: number): SQL {
  if (status === 'pending') return and(eq(a.status, 'pending'), gt(a.expiresAt, now))!
  if (status === 'expired') return or(eq(a.status, 'expired'), and(eq(a.status, 'pending'), sql`${a.expiresAt} <= ${now}`))!
  return eq(a.status, status)
}

export function createApprovalStore(db: Db): ApprovalStore {
  // Long, not split: one table's statements, a method each, read best side by side.
  return {
    async create(request, maxPending, now) {
      const { handle, actionKey, ...rest } = request
      const row = { ...rest, handleHash: sha256(handle), actionHash: sha256(actionKey) }
      const pending = await db
        .select({ n: count() })
        .from(a)
        .where(and(eq(a.agent, row.agent), eq(a.status, 'pending'), gt(a.expiresAt, now)))
      if ((pending[0]?.n ?? 0) >= maxPending) return false
      await db.insert(a).values(row)
      return true
    },

    async reusable(actionKey, since) {
      const actionHash = sha256(actionKey)
      const rows = await db
        .select()
        .from(a)
        .where(
          and(eq(a.actionHash, actionHash), gte(a.decidedAt, since), inArray(a.status, ['approved', 'issued']), inArray(a.decidedVia, ['admin_api', 'link'])),
        )
        .orderBy(desc(a.decidedAt))
        .limit(1)
      return rows[0]
    },

    async poll(handle, agent, now) {
      const handleHash = sha256(handle)
      const [row] = await db
        .select()
        .from(a)
        .where(and(eq(a.handleHash, handleHash), eq(a.agent, agent)))
      if (row === undefined) return undefined
      const tooSoon = row.lastPollAt !== null && now - row.lastPollAt < row.pollInterval
      // CIBA Core §11: a client told slow_down waits 5 s longer from then on; one that keeps polling early stays refused.
      const interval = tooSoon ? row.pollInterval + 5 : row.pollInterval
      const updated = await db
        .update(a)
        .set({ lastPollAt: now, pollInterval: interval })
        .where(and(eq(a.id, row.id), row.lastPollAt === null ? isNull(a.lastPollAt) : eq(a.lastPollAt, row.lastPollAt)))
        .returning()
      // Another poll of the same request got there first: this one came too soon.
      if (updated[0] === undefined) return { row, tooSoon: true }
      return { row: updated[0], tooSoon }
    },

    async get(id) {
      const [row] = await db.select().from(a).where(eq(a.id, id))
      return row
    },

    async list(f) {
      const where = and(f.status === undefined ? undefined : statusIs(f.status, f.now), f.agent === undefined ? undefined : eq(a.agent, f.agent))
      const [rows, total] = await Promise.all([
        db.select().from(a).where(where).orderBy(desc(a.createdAt), desc(a.id)).limit(f.limit).offset(f.offset),
        db.select({ n: count() }).from(a).where(where),
      ])
      return { rows, total: total[0]?.n ?? 0 }
    },

    async decide(id, decision, by, via, note, now) {
      const rows = await db
        .update(a)
        .set({ status: decision, decidedAt: now, decidedBy: by, decidedVia: via, note: note ?? null })
        .where(and(eq(a.id, id), eq(a.status, 'pending'), gt(a.expiresAt, now)))
        .returning()
      return rows[0]
    },

    async claimIssue(id, jti) {
      const rows = await db
        .update(a)
        .set({ status: 'issued', issuedJti: jti })
        .where(and(eq(a.id, id), eq(a.status, 'approved')))
        .returning({ id: a.id })
      return rows.length === 1
    },

    async releaseIssue(id, jti) {
      await db
        .update(a)
        .set({ status: 'approved', issuedJti: null })
        .where(and(eq(a.id, id), eq(a.status, 'issued'), eq(a.issuedJti, jti)))
    },

    async cancel(target, reason, now) {
      const user = (iss: string | null, sub: string) => and(eq(a.sub, sub), iss === null ? undefined : eq(a.subIss, iss))
      const who =
        target.kind === 'id'
          ? eq(a.id, target.id)
          : target.kind === 'agent'
            ? eq(a.agent, target.agent)
            : target.kind === 'sub'
              ? user(target.iss, target.sub)
              : and(eq(a.agent, target.agent), user(target.iss, target.sub))
      return db
        .update(a)
        .set({ status: 'cancelled', decidedAt: now, decidedBy: 'mandate:revocation', decidedVia: 'revocation', note: reason })
        .where(and(who, inArray(a.status, ['pending', 'approved'])))
        .returning()
    },

    async spendLink(jti, now) {
      // One conditional insert: of two instances (or two tabs) confirming with the same link, exactly one inserts.
      const rows = await db.insert(approvalLinksUsed).values({ jti, usedAt: now }).onConflictDoNothing().returning({ jti: approvalLinksUsed.jti })
      return rows.length === 1
    },
  }
}
