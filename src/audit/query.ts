/**
 * Reading the delegation log: filtered pages (`GET /admin/audit`,
 * `mandate audit query`) and the delegation tree around one token
 * (`GET /admin/audit/chains/{jti}`, `mandate audit query --chain`).
 */
import { and, arrayContains, asc, desc, eq, gte, inArray, isNull, like, lt, lte, or, type SQL } from 'drizzle-orm'
import type { Db } from '../storage/database.js'
import { auditLog, type AuditRow } from '../storage/schema.js'
import { MAX_PAGE } from './port.js'

export interface AuditFilter {
  /** Records where this agent acted or appears in the actor chain. */
  readonly agent?: string | undefined
  readonly sub?: string | undefined
  /**
   * With `sub` only: the user's issuer (a user is the pair). Records that
   * name no issuer for that `sub` match too: kills of it at any issuer, and
   * records written before the issuer was recorded.
   */
  readonly iss?: string | undefined
  /** Records about this token (`jti`, e.g. token.issued / token.withheld / a jti revocation). */
  readonly jti?: string | undefined
  /** An event type, or a family such as `admin.*` or `token.*`. */
  readonly event?: string | undefined
  /** Epoch seconds, inclusive. */
  readonly from?: number | undefined
  /** Epoch seconds, inclusive. */
  readonly to?: number | undefined
}

export interface AuditPageRequest extends AuditFilter {
  /** 1..500; default 100. */
  readonly limit?: number | undefined
  /** Cursor from a previous page: records older than it. */
  readonly before?: number | undefined
}

/** One record as the API shows it: the hashed record itself, plus where it sits. */
export interface AuditEntry {
  readonly id: number
  readonly chain: string
  readonly seq: number
  readonly hash: string
  readonly record: Record<string, unknown>
}

export interface AuditPage {
  /** Newest first. */
  readonly records: readonly AuditEntry[]
  /** Pass as `before` for the next page; undefined on the last one. */
  readonly next: number | undefined
}

export function entry(row: AuditRow): AuditEntry {
  return { id: row.id, chain: row.chainId, seq: row.seq, hash: row.hash, record: JSON.parse(row.record) as Record<string, unknown> }
}

function conditions(f: AuditFilter): SQL[] {
  const where: SQL[] = []
  if (f.agent !== undefined) where.push(arrayContains(auditLog.actors, [f.agent]))
  if (f.sub !== undefined) where.push(eq(auditLog.sub, f.sub))
  if (f.iss !== undefined) {
    if (f.sub === undefined) throw new TypeError('an iss filter needs a sub filter')
    where.push(or(eq(auditLog.subIss, f.iss), isNull(auditLog.subIss))!)
  }
  if (f.jti !== undefined) where.push(eq(auditLog.jti, f.jti))
  if (f.event !== undefined) {
    if (f.event.endsWith('.*')) where.push(like(auditLog.event, `${f.event.slice(0, -2).replace(/[\\%_]/g, '\\$&')}.%`))
    else where.push(eq(auditLog.event, f.event as AuditRow['event']))
  }
  if (f.from !== undefined) where.push(gte(auditLog.at, f.from))
  if (f.to !== undefined) where.push(lte(auditLog.at, f.to))
  return where
}

/** A page of records matching `request`, newest (highest id) first; keyset pagination on id. */
export async function queryAudit(db: Db, request: AuditPageRequest): Promise<AuditPage> {
  const limit = Math.min(MAX_PAGE, Math.max(1, request.limit ?? 100))
  const where = conditions(request)
  if (request.before !== undefined) where.push(lt(auditLog.id, request.before))
  const rows = await db
    .select()
    .from(auditLog)
    .where(and(...where))
    .orderBy(desc(auditLog.id))
    .limit(limit + 1)
  const page = rows.slice(0, limit)
  return { records: page.map(entry), next: rows.length > limit ? page.at(-1)!.id : undefined }
}

/** One record by its id (`AuditEntry.id`), or undefined when no record has it. */
export async function auditRecord(db: Db, id: number): Promise<AuditEntry | undefined> {
  const [row] = await db.select().from(auditLog).where(eq(auditLog.id, id)).limit(1)
  return row === undefined ? undefined : entry(row)
}

/** One token in a delegation tree. */
export interface TreeNode {
  readonly jti: string
  readonly parent: string | null
  readonly agent: string
  /** Newest first. */
  readonly actors: readonly string[]
  readonly sub: string
  /** The user's issuer. */
  readonly subIssuer: string | null
  readonly audience: string
  readonly scopes: readonly string[]
  readonly issuedAt: number
  readonly expiresAt: number
  readonly policyHash: string
  /** The broker instance that wrote its record. */
  readonly instance: string
  /** The running copy of the agent that asked (the token's `act.instance`), when its authentication named one. */
  readonly agentInstance: string | null
  /** Its issuance committed but the response was refused: it never left the broker. */
  readonly withheld: boolean
  readonly children: TreeNode[]
}

export interface DelegationTree {
  /** The token asked about. */
  readonly jti: string
  readonly root: TreeNode
  /** Tokens in the tree: the asked token's ancestors and all the root's descendants. */
  readonly tokens: number
  /** Revocation records that touch the tree: its tokens, its agents, its user. Oldest first. */
  readonly revocations: readonly AuditEntry[]
}

const TREE_LIMIT = 10_000

/**
 * The delegation tree containing `jti`: from its root token down, every
 * token delegated from it at any depth, with the revocations touching them.
 * Undefined when no `token.issued` record names `jti`.
 */
export async function delegationTree(db: Db, jti: string): Promise<DelegationTree | undefined> {
  const [own] = await db
    .select()
    .from(auditLog)
    .where(and(eq(auditLog.event, 'token.issued'), eq(auditLog.jti, jti)))
    .limit(1)
  if (own === undefined) return undefined
  const rootJti = own.rootJti ?? own.jti!
  const issued = await db
    .select()
    .from(auditLog)
    .where(and(eq(auditLog.event, 'token.issued'), eq(auditLog.rootJti, rootJti)))
    .orderBy(asc(auditLog.id))
    .limit(TREE_LIMIT)
  const jtis = issued.map((r) => r.jti!)
  const withheld = new Set(
    (
      await db
        .select({ jti: auditLog.jti })
        .from(auditLog)
        .where(and(eq(auditLog.event, 'token.withheld'), inArray(auditLog.jti, jtis)))
    ).map((r) => r.jti),
  )
  const nodes = new Map<string, TreeNode>()
  for (const row of issued) {
    const rec = JSON.parse(row.record) as Record<string, unknown>
    nodes.set(row.jti!, {
      jti: row.jti!,
      parent: row.parentJti,
      agent: row.agent!,
      actors: row.actors,
      sub: row.sub!,
      subIssuer: row.subIss,
      audience: rec['aud'] as string,
      scopes: rec['scopes'] as string[],
      issuedAt: row.at,
      expiresAt: rec['exp'] as number,
      policyHash: rec['policy_hash'] as string,
      instance: row.instance,
      agentInstance: typeof rec['agent_instance'] === 'string' ? rec['agent_instance'] : null,
      withheld: withheld.has(row.jti),
      children: [],
    })
  }
  for (const node of nodes.values()) {
    if (node.parent !== null) nodes.get(node.parent)?.children.push(node)
  }
  const root = nodes.get(rootJti) ?? nodes.get(own.jti!)!

  const agents = [...new Set(issued.flatMap((r) => r.actors))]
  const subs = [...new Set(issued.map((r) => r.sub!))]
  const issuers = [...new Set(issued.flatMap((r) => (r.subIss === null ? [] : [r.subIss])))]
  // A user is (issuer, sub): a kill of the same sub at another issuer never touched this tree; one at any issuer did.
  const ofUser = and(inArray(auditLog.sub, subs), or(isNull(auditLog.subIss), issuers.length === 0 ? undefined : inArray(auditLog.subIss, issuers)))
  const revocations = await db
    .select()
    .from(auditLog)
    .where(
      and(
        or(eq(auditLog.event, 'revocation.created'), eq(auditLog.event, 'revocation.lifted')),
        or(
          inArray(auditLog.jti, jtis),
          // Kills: of an agent in the tree (for anyone, or for this user), or of the user.
          and(inArray(auditLog.agent, agents), or(ofUser, isNull(auditLog.sub))),
          and(ofUser, isNull(auditLog.agent)),
        ),
      ),
    )
    .orderBy(asc(auditLog.id))
    .limit(TREE_LIMIT)
  return { jti, root, tokens: nodes.size, revocations: revocations.map(entry) }
}

/** The `kid` the newest `key.rotated` record names (any chain), or undefined when there is none. */
export async function lastKeyRotation(db: Db): Promise<string | undefined> {
  const [row] = await db.select({ record: auditLog.record }).from(auditLog).where(eq(auditLog.event, 'key.rotated')).orderBy(desc(auditLog.id)).limit(1)
  if (row === undefined) return undefined
  const kid = (JSON.parse(row.record) as { kid?: unknown }).kid
  return typeof kid === 'string' ? kid : undefined
}
