/**
 * The denial records of one token request, by the id its answer carried
 * (`X-Request-Id`, `error_uri`): what `mandate audit show` prints. Read
 * through the partial expression index on denials' `request_id`
 * (storage/schema.ts), so a lookup never scans the log. An issuance's record
 * carries its request id too, but is not indexed by it (that would cost
 * every token): find it by the token's `jti`.
 */
import { and, asc, sql } from 'drizzle-orm'
import type { Db } from '../storage/database.js'
import { auditLog } from '../storage/schema.js'
import { entry, type AuditEntry } from './query.js'

/** Records of one request a lookup returns at most: a client may send the same `X-Request-Id` again. */
export const MAX_REQUEST_RECORDS = 50

/** The `token.denied` records naming request `id`, oldest first. */
export async function recordsOfRequest(db: Db, id: string): Promise<AuditEntry[]> {
  const rows = await db
    .select()
    .from(auditLog)
    // The same expression and predicate as the index, so the planner uses it.
    .where(and(sql`(${auditLog.record}::jsonb ->> 'request_id') = ${id}`, sql`${auditLog.event} = 'token.denied'`))
    .orderBy(asc(auditLog.id))
    .limit(MAX_REQUEST_RECORDS)
  return rows.map(entry)
}
