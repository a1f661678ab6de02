/**
 * What the anomaly monitor reads and writes in SQL (PostgreSQL or PGlite
 * alike): bounded reads of the usage summaries (src/audit/usage.ts keeps
 * them) and of an agent's latest denials (the partial index on denials by
 * agent), the audiences each agent had tokens for, and the conditional
 * write that lets one instance only act per agent, rule and cool-down.
 */
import { and, desc, eq, gt, gte, inArray, lt, lte, ne, sql } from 'drizzle-orm'
import { BASELINE_HOURS } from '../core/anomaly.js'
import type { Db } from '../storage/database.js'
import { agentGrantUsageDay, agentUsageHour, agentUsers, anomalyActions, anomalyAudiences, auditLog, revocations } from '../storage/schema.js'

const HOUR = 3_600
const DAY = 86_400

export interface AnomalyStore {
  /** Per agent: its tokens in the UTC hour of `now`, and in the `BASELINE_HOURS` before it. */
  tokenCounts(agents: readonly string[], now: number): Promise<ReadonlyMap<string, HourCounts>>
  /** Per agent: the users it first served in the UTC hour of `now`, and in the `BASELINE_HOURS` before it. */
  newUserCounts(agents: readonly string[], now: number): Promise<ReadonlyMap<string, HourCounts>>
  /** Times (epoch seconds) of the agent's `limit` latest denials, newest first. */
  latestDenials(agent: string, limit: number): Promise<number[]>
  /**
   * Records that the agent had a token for `audience` at `at`; true when
   * this call is the first to record it, the agent had another audience
   * before, and the summaries hold no token of the agent for this one on an
   * earlier day (a new audience).
   */
  recordAudience(agent: string, audience: string, at: number): Promise<boolean>
  /**
   * Claims the right to act for (agent, rule) at `now`: true for exactly
   * one caller, on any instance, per cool-down, and never while the
   * quarantine the rule made last is in force or within a cool-down of its
   * lift.
   */
  claim(agent: string, rule: string, now: number, cooldownSeconds: number): Promise<boolean>
  /** Gives a claim back (its action could not be carried out), so that the next evaluation may act. */
  release(agent: string, rule: string, actedAt: number): Promise<void>
  /** Ties the claim to the quarantine it made. */
  quarantined(agent: string, rule: string, revocationId: string): Promise<void>
}

/** Counts of one agent: the current UTC hour so far, and the `BASELINE_HOURS` before it. */
export interface HourCounts {
  readonly currentHour: number
  readonly baseline: number
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v))

/**
 * The baselines of the hour, per agent: the hours before the current one
 * are complete, so each agent's baseline is read once an hour and every
 * later evaluation reads only the current hour's counts, for every agent in
 * one statement.
 */
function baselineCache(read: (agents: string[], hour: number) => Promise<Map<string, number>>) {
  let hour = -1
  let known = new Map<string, number>()
  return async (agents: readonly string[], now: number): Promise<Map<string, number>> => {
    const h = Math.floor(now / HOUR)
    if (h !== hour) {
      hour = h
      known = new Map()
    }
    const missing = agents.filter((a) => !known.has(a))
    if (missing.length > 0) {
      const counts = await read(missing, h)
      for (const a of missing) known.set(a, counts.get(a) ?? 0)
    }
    return known
  }
}

export function createSqlAnomalyStore(db: Db): AnomalyStore {
  const h = agentUsageHour
  const u = agentUsers
  const tokenBaselines = baselineCache(async (agents, hour) => {
    const rows = await db
      .select({ agent: h.agent, n: sql<string>`sum(${h.tokens})` })
      .from(h)
      .where(and(inArray(h.agent, agents), gte(h.hour, hour - BASELINE_HOURS), lt(h.hour, hour)))
      .groupBy(h.agent)
    return new Map(rows.map((r) => [r.agent, num(r.n)]))
  })
  const userBaselines = baselineCache(async (agents, hour) => {
    const start = hour * HOUR
    const since = start - BASELINE_HOURS * HOUR
    // A user first served since `since` was last served since then too: the (agent, last_at) index bounds the read.
    const rows = await db
      .select({ agent: u.agent, n: sql<string>`count(*)` })
      .from(u)
      .where(and(inArray(u.agent, agents), gte(u.lastAt, since), gte(u.firstAt, since), lt(u.firstAt, start)))
      .groupBy(u.agent)
    return new Map(rows.map((r) => [r.agent, num(r.n)]))
  })
  const merge = (agents: readonly string[], current: Map<string, number>, baselines: Map<string, number>) =>
    new Map(agents.map((a) => [a, { currentHour: current.get(a) ?? 0, baseline: baselines.get(a) ?? 0 }]))

  return {
    async tokenCounts(agents, now) {
      if (agents.length === 0) return new Map()
      const baselines = await tokenBaselines(agents, now)
      const rows = await db
        .select({ agent: h.agent, n: h.tokens })
        .from(h)
        .where(and(inArray(h.agent, [...agents]), eq(h.hour, Math.floor(now / HOUR))))
      return merge(agents, new Map(rows.map((r) => [r.agent, num(r.n)])), baselines)
    },

    async newUserCounts(agents, now) {
      if (agents.length === 0) return new Map()
      const baselines = await userBaselines(agents, now)
      const start = Math.floor(now / HOUR) * HOUR
      const rows = await db
        .select({ agent: u.agent, n: sql<string>`count(*)` })
        .from(u)
        .where(and(inArray(u.agent, [...agents]), gte(u.lastAt, start), gte(u.firstAt, start), lt(u.firstAt, start + HOUR)))
        .groupBy(u.agent)
      return merge(agents, new Map(rows.map((r) => [r.agent, num(r.n)])), baselines)
    },

    async latestDenials(agent, limit) {
      const rows = await db
        .select({ at: auditLog.at })
        .from(auditLog)
        .where(and(eq(auditLog.agent, agent), eq(auditLog.event, 'token.denied')))
        .orderBy(desc(auditLog.id))
        .limit(limit)
      return rows.map((r) => r.at).sort((a, b) => b - a)
    },

    ...audiencesOn(db),
    ...claimsOn(db),
  }
}

/** The audiences each agent had tokens for. */
function audiencesOn(db: Db): Pick<AnomalyStore, 'recordAudience'> {
  return {
    async recordAudience(agent, audience, at) {
      const inserted = await db
        .insert(anomalyAudiences)
        .values({ agent, audience, firstAt: at })
        .onConflictDoNothing()
        .returning({ agent: anomalyAudiences.agent })
      if (inserted.length === 0) return false
      // An agent's first audience is no change of behaviour: there is nothing before it to differ from.
      const other = await db
        .select({ audience: anomalyAudiences.audience })
        .from(anomalyAudiences)
        .where(and(eq(anomalyAudiences.agent, agent), ne(anomalyAudiences.audience, audience), lte(anomalyAudiences.firstAt, at)))
        .limit(1)
      if (other.length === 0) return false
      // Rows without tokens hold only denials: asking for an audience is not having had a token for it.
      const g = agentGrantUsageDay
      const earlier = await db
        .select({ day: g.day })
        .from(g)
        .where(and(eq(g.agent, agent), eq(g.audience, audience), lt(g.day, Math.floor(at / DAY)), gt(g.tokens, 0)))
        .limit(1)
      return earlier.length === 0
    },
  }
}

/** The conditional write that lets one instance act per agent, rule and cool-down. */
function claimsOn(db: Db): Pick<AnomalyStore, 'claim' | 'release' | 'quarantined'> {
  return {
    async claim(agent, rule, now, cooldownSeconds) {
      const a = anomalyActions
      const since = now - cooldownSeconds
      // One statement: the row lock of ON CONFLICT DO UPDATE serializes instances racing for
      // the same (agent, rule), and the loser re-reads the winner's acted_at, which fails the WHERE.
      const rows = await db
        .insert(a)
        .values({ agent, rule, actedAt: now })
        .onConflictDoUpdate({
          target: [a.agent, a.rule],
          set: { actedAt: now, revocationId: null },
          setWhere: sql`${a.actedAt} <= ${since} and not exists (
            select 1 from ${revocations} r where r.id = ${a.revocationId}
              and (r.lifted_at is null or r.lifted_at > to_timestamp(${since})))`,
        })
        .returning({ agent: a.agent })
      return rows.length === 1
    },

    async release(agent, rule, actedAt) {
      const a = anomalyActions
      await db
        .update(a)
        .set({ actedAt: 0 })
        .where(and(eq(a.agent, agent), eq(a.rule, rule), eq(a.actedAt, actedAt)))
    },

    async quarantined(agent, rule, revocationId) {
      const a = anomalyActions
      await db
        .update(a)
        .set({ revocationId })
        .where(and(eq(a.agent, agent), eq(a.rule, rule)))
    },
  }
}
