/**
 * Reads of the usage summaries (usage.ts writes them) for the agent
 * inventory, and the two bounded reads of the log an agent's page adds:
 * its latest denials (the partial index on denials by agent) and the
 * delegation chains it appears in (the GIN index on actors).
 */
import { and, arrayContains, desc, eq, gte, inArray, sql } from 'drizzle-orm'
import type { AgentDetailUsage, AgentUsage, InstanceSeen, UsageReads } from '../core/inventory.js'
import { INSTANCE_WINDOW, NO_USAGE } from '../core/inventory.js'
import type { Db } from '../storage/database.js'
import type { WindowUsage } from '../core/least-privilege.js'
import { agentDepthDay, agentGrantUsageDay, agentUsageDay, agentUsageHour, agentUsers, auditLog } from '../storage/schema.js'
import { DAY, HOUR } from './usage.js'

/** Denials and chains an agent's page shows at most. */
export const DETAIL_ROWS = 20
/** Instances an agent's page lists at most. */
export const MAX_INSTANCES = 100

/** The trailing windows: the current hour and the 23 before it; the current day and the 29 before it. */
function windows(now: number) {
  return { hour: Math.floor(now / HOUR) - 23, day: Math.floor(now / DAY) - 29, users24h: now - DAY, users30d: now - 30 * DAY }
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v))

async function usageOf(db: Db, now: number, agent: string | undefined): Promise<Map<string, AgentUsage>> {
  const w = windows(now)
  const one = <T>(col: T) => (agent === undefined ? undefined : eq(col as never, agent))
  const [days, hours, users] = await Promise.all([
    db
      .select({
        agent: agentUsageDay.agent,
        tokens: sql<string>`sum(${agentUsageDay.tokens}) filter (where ${agentUsageDay.day} >= ${w.day})`,
        denials: sql<string>`sum(${agentUsageDay.denials}) filter (where ${agentUsageDay.day} >= ${w.day})`,
        last: sql<string | null>`max(${agentUsageDay.lastTokenAt})`,
      })
      .from(agentUsageDay)
      .where(one(agentUsageDay.agent))
      .groupBy(agentUsageDay.agent),
    db
      .select({ agent: agentUsageHour.agent, hour: agentUsageHour.hour, tokens: agentUsageHour.tokens, denials: agentUsageHour.denials })
      .from(agentUsageHour)
      .where(and(gte(agentUsageHour.hour, w.hour), one(agentUsageHour.agent))),
    db
      .select({
        agent: agentUsers.agent,
        d1: sql<string>`count(*) filter (where ${agentUsers.lastAt} >= ${w.users24h})`,
        d30: sql<string>`count(*)`,
      })
      .from(agentUsers)
      .where(and(gte(agentUsers.lastAt, w.users30d), one(agentUsers.agent)))
      .groupBy(agentUsers.agent),
  ])
  // One row per agent and hour (at most 24 each): summed here, and kept hour by hour for the inventory's sparkline.
  const h = new Map<string, { tokens: number; denials: number; byHour: number[] }>()
  for (const r of hours) {
    let a = h.get(r.agent)
    if (a === undefined) h.set(r.agent, (a = { tokens: 0, denials: 0, byHour: new Array<number>(24).fill(0) }))
    a.tokens += num(r.tokens)
    a.denials += num(r.denials)
    const i = r.hour - w.hour
    if (i >= 0 && i < 24) a.byHour[i] = (a.byHour[i] ?? 0) + num(r.tokens)
  }
  const u = new Map(users.map((r) => [r.agent, r]))
  const out = new Map<string, AgentUsage>()
  for (const d of days) {
    out.set(d.agent, {
      tokens24h: h.get(d.agent)?.tokens ?? 0,
      denials24h: h.get(d.agent)?.denials ?? 0,
      tokensByHour: h.get(d.agent)?.byHour ?? NO_USAGE.tokensByHour,
      users24h: num(u.get(d.agent)?.d1),
      tokens30d: num(d.tokens),
      denials30d: num(d.denials),
      users30d: num(u.get(d.agent)?.d30),
      lastTokenAt: d.last === null ? undefined : Number(d.last),
    })
  }
  return out
}

async function detailOf(db: Db, agent: string, now: number): Promise<AgentDetailUsage> {
  const w = windows(now)
  const [usage, grants, denials, chains, anomalies, instances] = await Promise.all([
    usageOf(db, now, agent),
    db
      .select({
        audience: agentGrantUsageDay.audience,
        scope: agentGrantUsageDay.scope,
        tokens: sql<string>`sum(${agentGrantUsageDay.tokens})`,
        last: sql<string>`max(${agentGrantUsageDay.lastTokenAt})`,
      })
      .from(agentGrantUsageDay)
      .where(and(eq(agentGrantUsageDay.agent, agent), gte(agentGrantUsageDay.day, w.day)))
      .groupBy(agentGrantUsageDay.audience, agentGrantUsageDay.scope)
      // Rows of grants that were only asked for and denied are for `policy unused`, not usage.
      .having(sql`sum(${agentGrantUsageDay.tokens}) > 0`)
      .orderBy(agentGrantUsageDay.audience, agentGrantUsageDay.scope),
    db
      .select({ at: auditLog.at, sub: auditLog.sub, record: auditLog.record })
      .from(auditLog)
      .where(and(eq(auditLog.agent, agent), eq(auditLog.event, 'token.denied')))
      .orderBy(desc(auditLog.id))
      .limit(DETAIL_ROWS),
    db
      .select({ jti: auditLog.jti, root: auditLog.rootJti, at: auditLog.at, actors: auditLog.actors })
      .from(auditLog)
      .where(and(arrayContains(auditLog.actors, [agent]), eq(auditLog.event, 'token.issued'), sql`cardinality(${auditLog.actors}) > 1`))
      .orderBy(desc(auditLog.id))
      .limit(DETAIL_ROWS),
    // Anomaly records are few: the (event, id) index walks them newest first.
    db
      .select({ at: auditLog.at, record: auditLog.record })
      .from(auditLog)
      .where(and(eq(auditLog.event, 'agent.anomaly'), eq(auditLog.agent, agent)))
      .orderBy(desc(auditLog.id))
      .limit(DETAIL_ROWS),
    instancesOf(db, agent, now),
  ])
  return {
    usage: usage.get(agent) ?? NO_USAGE,
    grants: grants.map((g) => ({ audience: g.audience, scope: g.scope, tokens30d: num(g.tokens), lastTokenAt: num(g.last) })),
    denials: denials.map((d) => {
      const doc = JSON.parse(d.record) as { error?: unknown; reason?: unknown }
      const text = (v: unknown) => (typeof v === 'string' ? v : '')
      return { at: d.at, error: text(doc.error), reason: text(doc.reason), sub: d.sub ?? undefined }
    }),
    chains: chains.map((c) => ({ jti: c.jti ?? '', rootJti: c.root ?? '', at: c.at, actors: c.actors })),
    instances,
    anomalies: anomalies.map((a) => {
      const doc = JSON.parse(a.record) as Record<string, unknown>
      const text = (v: unknown) => (typeof v === 'string' ? v : '')
      const id = doc['revocation_id']
      return {
        at: a.at,
        rule: text(doc['rule']),
        action: text(doc['action']),
        detail: text(doc['detail']),
        revocationId: typeof id === 'string' ? id : undefined,
      }
    }),
  }
}

/**
 * The running copies of `agent` issued a token in the last hour, from its `token.issued` records'
 * `agent_instance`: an index range on `at` (the last hour of the log, every agent's) or the GIN index on
 * `actors`, whichever the planner finds narrower. An expression over the record, so no column is added
 * to what `verify` checks, and no index to the write path of every issuance.
 */
async function instancesOf(db: Db, agent: string, now: number): Promise<InstanceSeen[]> {
  const instance = sql<string>`(${auditLog.record}::jsonb ->> 'agent_instance')`
  const rows = await db
    .select({
      instance,
      tokens: sql<string>`count(*)`,
      first: sql<string>`extract(epoch from min(${auditLog.at}))`,
      last: sql<string>`extract(epoch from max(${auditLog.at}))`,
    })
    .from(auditLog)
    .where(
      and(
        gte(auditLog.at, now - INSTANCE_WINDOW),
        eq(auditLog.event, 'token.issued'),
        eq(auditLog.agent, agent),
        // Implied by `agent` (actors include the requester), and lets the planner use the GIN index on actors instead.
        arrayContains(auditLog.actors, [agent]),
        sql`${instance} is not null`,
      ),
    )
    .groupBy(instance)
    .orderBy(sql`max(${auditLog.at}) desc`, instance)
    .limit(MAX_INSTANCES)
  return rows.map((r) => ({ instance: r.instance, tokens: num(r.tokens), firstAt: num(r.first), lastAt: num(r.last) }))
}

/** The inventory's and `policy unused`'s reads on `db` (PostgreSQL or PGlite alike). */
export function createUsageReads(db: Db): UsageReads {
  return {
    usage: (now) => usageOf(db, now, undefined),
    detail: (agent, now) => detailOf(db, agent, now),
    windowUsage: (agents, from) => (agents.length === 0 ? Promise.resolve(new Map()) : windowUsageOf(db, agents, from)),
  }
}

/** Each agent's use of its grants from epoch second `from` (whole UTC days: the day holding `from` counts in full). */
async function windowUsageOf(db: Db, agents: readonly string[], from: number): Promise<Map<string, WindowUsage>> {
  const day = Math.floor(from / DAY)
  const [tokens, first, grants, depths] = await Promise.all([
    db
      .select({ agent: agentUsageDay.agent, tokens: sql<string>`sum(${agentUsageDay.tokens})` })
      .from(agentUsageDay)
      .where(and(inArray(agentUsageDay.agent, [...agents]), gte(agentUsageDay.day, day)))
      .groupBy(agentUsageDay.agent),
    db
      .select({ agent: agentUsers.agent, first: sql<string>`min(${agentUsers.firstAt})` })
      .from(agentUsers)
      .where(inArray(agentUsers.agent, [...agents]))
      .groupBy(agentUsers.agent),
    db
      .select({
        agent: agentGrantUsageDay.agent,
        audience: agentGrantUsageDay.audience,
        scope: agentGrantUsageDay.scope,
        tokens: sql<string>`sum(${agentGrantUsageDay.tokens})`,
        denials: sql<string>`sum(${agentGrantUsageDay.denials})`,
      })
      .from(agentGrantUsageDay)
      .where(and(inArray(agentGrantUsageDay.agent, [...agents]), gte(agentGrantUsageDay.day, day)))
      .groupBy(agentGrantUsageDay.agent, agentGrantUsageDay.audience, agentGrantUsageDay.scope),
    db
      .select({ agent: agentDepthDay.agent, depth: sql<number>`max(${agentDepthDay.maxDepth})` })
      .from(agentDepthDay)
      .where(and(inArray(agentDepthDay.agent, [...agents]), gte(agentDepthDay.day, day)))
      .groupBy(agentDepthDay.agent),
  ])
  const t = new Map(tokens.map((r) => [r.agent, num(r.tokens)]))
  const f = new Map(first.map((r) => [r.agent, num(r.first)]))
  const d = new Map(depths.map((r) => [r.agent, num(r.depth)]))
  const g = new Map<string, WindowUsage['grants'][number][]>()
  for (const r of grants) {
    const list = g.get(r.agent) ?? []
    list.push({ audience: r.audience, scope: r.scope, tokens: num(r.tokens), denials: num(r.denials) })
    g.set(r.agent, list)
  }
  const out = new Map<string, WindowUsage>()
  for (const agent of agents) {
    out.set(agent, { tokens: t.get(agent) ?? 0, firstTokenAt: f.get(agent), grants: g.get(agent) ?? [], maxDepth: d.get(agent) ?? 0 })
  }
  return out
}
