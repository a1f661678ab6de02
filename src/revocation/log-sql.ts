import { and, asc, desc, eq, gt, isNull, or, sql } from 'drizzle-orm'
import { alias } from 'drizzle-orm/pg-core'
import type { AgentId, Jti, Subject } from '../core/claims.js'
import type { Db } from '../storage/database.js'
import { isKillKind, isTokenKind, revocations, type RevocationRow } from '../storage/schema.js'
import { checkLift, checkLimit, checkNow, duplicateRevocation, normalizeId, notLiftable, storableRevocation } from './log-memory.js'
import { KILL_KINDS, type Revocation, type RevocationLog, type RevocationTarget } from './port.js'

/**
 * The durable revocation log in the `revocations` table, on PostgreSQL or
 * PGlite alike (`openDatabase`), with the semantics of
 * `createMemoryRevocationLog`. Records are checked before they reach the
 * database (`TypeError`, as in memory); the table's CHECKs hold the same rules
 * for anything written around this adapter. Driver failures reject as they
 * come (drizzle's `DrizzleQueryError`, the driver error as its `cause`).
 */
export function createSqlRevocationLog(db: Db): RevocationLog {
  const t = revocations

  const get = async (id: string): Promise<Revocation | undefined> => {
    const key = normalizeId(id)
    // Anything but a UUID would be a driver error (22P02) rather than "no such record".
    if (key === undefined) return undefined
    const [row] = await db.select().from(t).where(eq(t.id, key)).limit(1)
    return row === undefined ? undefined : fromRow(row)
  }

  return {
    async insert(record) {
      const row = toRow(storableRevocation(record))
      try {
        await db.insert(t).values(row)
      } catch (error) {
        if (sqlState(error) === '23505') throw Object.assign(duplicateRevocation(row.id), { cause: error })
        throw error
      }
    },

    async lift(id, by, at) {
      checkLift(by, at)
      const key = normalizeId(id)
      if (key === undefined) return undefined
      // The only UPDATE this table ever sees; `lifted_at is null` makes it happen once.
      const [row] = await db
        .update(t)
        .set({ liftedAt: at, liftedBy: by })
        .where(and(eq(t.id, key), isNull(t.liftedAt), isKillKind(t.kind)))
        .returning()
      if (row !== undefined) return { record: fromRow(row), changed: true }
      // Unknown, already lifted (returned unchanged: the first lifter is kept), or not a kill.
      const existing = await get(key)
      if (existing === undefined) return undefined
      if (!KILL_KINDS.has(existing.target.kind)) throw notLiftable(existing)
      return { record: existing, changed: false }
    },

    get,

    async listRelevant(now) {
      checkNow(now)
      const rows = await db
        .select()
        .from(t)
        .where(or(isKillKind(t.kind), and(isTokenKind(t.kind), or(isNull(t.expiresAt), gt(t.expiresAt, now)))))
        .orderBy(asc(t.createdAt), asc(t.id))
      return rows.map(fromRow)
    },

    async list({ limit, before }) {
      checkLimit(limit)
      let query = db.select().from(t).$dynamic()
      if (before !== undefined) {
        const key = normalizeId(before)
        // An unknown cursor has nothing older than it.
        if (key === undefined) return []
        const c = alias(t, 'cursor')
        const cursor = db.select({ createdAt: c.createdAt, id: c.id }).from(c).where(eq(c.id, key))
        // Row comparison: one index range on (created_at, id); no row when the cursor is unknown.
        query = query.where(sql`(${t.createdAt}, ${t.id}) < ${cursor}`)
      }
      const rows = await query.orderBy(desc(t.createdAt), desc(t.id)).limit(limit)
      return rows.map(fromRow)
    },
  } satisfies RevocationLog
}

type RevocationInsert = typeof revocations.$inferInsert

function toRow(r: Revocation): RevocationInsert & { id: string } {
  const target = r.target
  return {
    id: r.id,
    kind: target.kind,
    agent: target.kind === 'agent' || target.kind === 'agent_sub' || target.kind === 'instance' ? target.agent : null,
    sub: target.kind === 'sub' || target.kind === 'agent_sub' ? target.sub : null,
    subIss: target.kind === 'sub' || target.kind === 'agent_sub' ? target.iss : null,
    jti: target.kind === 'jti' || target.kind === 'chain' ? target.jti : null,
    instance: target.kind === 'instance' ? target.instance : null,
    reason: r.reason,
    createdBy: r.createdBy,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt ?? null,
    liftedAt: r.liftedAt ?? null,
    liftedBy: r.liftedBy ?? null,
  }
}

/** A `revocations` row as the record it stores (the SET outbox reads the log too: src/ssf/). */
export function fromRow(row: RevocationRow): Revocation {
  return Object.freeze({
    id: row.id,
    target: targetOf(row),
    reason: row.reason,
    createdBy: row.createdBy,
    createdAt: row.createdAt,
    expiresAt: row.expiresAt ?? undefined,
    liftedAt: row.liftedAt ?? undefined,
    liftedBy: row.liftedBy ?? undefined,
  })
}

function targetOf(row: RevocationRow): RevocationTarget {
  // The table's CHECK guarantees these columns; a miss means the schema and this code disagree.
  const need = (value: string | null, column: string): string => {
    if (value === null) throw new Error(`revocation ${row.id}: ${row.kind} row without ${column}`)
    return value
  }
  switch (row.kind) {
    case 'jti':
    case 'chain':
      return Object.freeze({ kind: row.kind, jti: need(row.jti, 'jti') as Jti })
    case 'agent':
      return Object.freeze({ kind: row.kind, agent: need(row.agent, 'agent') as AgentId })
    case 'sub':
      return Object.freeze({ kind: row.kind, sub: need(row.sub, 'sub') as Subject, iss: row.subIss })
    case 'agent_sub':
      return Object.freeze({ kind: row.kind, agent: need(row.agent, 'agent') as AgentId, sub: need(row.sub, 'sub') as Subject, iss: row.subIss })
    case 'instance':
      return Object.freeze({ kind: row.kind, agent: need(row.agent, 'agent') as AgentId, instance: need(row.instance, 'instance') })
  }
}

/** SQLSTATE of a failed query (drizzle wraps the driver's error as `cause`). */
function sqlState(error: unknown): string | undefined {
  for (let e = error, depth = 0; typeof e === 'object' && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string') return code
  }
  return undefined
}
