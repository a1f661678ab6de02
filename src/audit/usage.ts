/**
 * The usage summaries (storage/schema.ts: agent_usage_day, agent_usage_hour,
 * agent_grant_usage_day, agent_users, agent_depth_day), kept by the very statement that
 * writes a group of records (group-insert.ts): the group's `token.issued`
 * and `token.denied` records are aggregated here, in memory, into one row
 * per key, and the statement upserts those rows next to the records. So the
 * summaries commit exactly when the records do, cost no round trip, and a
 * group touches each summary row once (ON CONFLICT DO UPDATE may not touch
 * one row twice in a statement).
 */
import type { StatementParam } from '../storage/database.js'
import { MAX_RECORDED_AUDIENCES, MAX_RECORDED_SCOPES, type AuditEvent } from './port.js'

export const DAY = 86_400
export const HOUR = 3_600

/**
 * Distinct users are counted to the minute: a writer leaves an (agent, user)
 * row out of a group when it committed that row's `last_at` less than this
 * many seconds before, so an agent serving one user many times a minute
 * costs one row update a minute, not one per token (each row an upsert is a
 * hot-row update, the summaries' dearest part). `first_at` stays exact: a
 * pair's first token always writes its row.
 */
export const USER_PRECISION = 60

/** The (agent, user) rows one writer committed in the last minute or two, with the `last_at` each got. */
export class RecentUsers {
  private current = new Map<string, number>()
  private previous = new Map<string, number>()
  private rotatedAt = 0

  /** Bounded: past `max` pairs a minute, the rest are written every time. */
  constructor(private readonly max = 100_000) {}

  /** The committed row already says what `first`..`last` would: `first_at` ≤ `first` and `last_at` within the precision. */
  covers(key: string, first: number, last: number): boolean {
    const at = this.current.get(key) ?? this.previous.get(key)
    return at !== undefined && first >= at && last - at < USER_PRECISION
  }

  /** Rows a group wrote, once it committed. */
  remember(rows: readonly UserRow[]): void {
    for (const r of rows) {
      if (r.last - this.rotatedAt >= USER_PRECISION) {
        this.previous = this.current
        this.current = new Map()
        this.rotatedAt = r.last
      }
      if (this.current.size < this.max) this.current.set(userKey(r), r.last)
    }
  }
}

export interface UserRow {
  readonly agent: string
  readonly iss: string
  readonly sub: string
  first: number
  last: number
}

// NUL cannot be in stored text (the edge refuses it), so it separates key parts safely.
const userKey = (r: { agent: string; iss: string; sub: string }) => `${r.agent}\u0000${r.iss}\u0000${r.sub}`

/**
 * The upserts, as data-modifying CTEs placed before the group's INSERT
 * (PostgreSQL runs every one to completion, read or not). Parameters from
 * `$first` on, in the order `usageParams` returns them.
 */
export function usageCtes(first: number): string {
  const p = (i: number) => `$${first + i}`
  return `with usage_day as (
    insert into agent_usage_day as u (agent, day, tokens, denials, last_token_at)
      select * from unnest(${p(0)}::text[], ${p(1)}::int[], ${p(2)}::bigint[], ${p(3)}::bigint[], ${p(4)}::bigint[])
    on conflict (agent, day) do update set tokens = u.tokens + excluded.tokens, denials = u.denials + excluded.denials,
      last_token_at = greatest(u.last_token_at, excluded.last_token_at)
  ), usage_hour as (
    insert into agent_usage_hour as u (agent, hour, tokens, denials)
      select * from unnest(${p(5)}::text[], ${p(6)}::int[], ${p(7)}::bigint[], ${p(8)}::bigint[])
    on conflict (agent, hour) do update set tokens = u.tokens + excluded.tokens, denials = u.denials + excluded.denials
  ), usage_grant as (
    insert into agent_grant_usage_day as u (agent, audience, scope, day, tokens, denials, last_token_at)
      select * from unnest(${p(9)}::text[], ${p(10)}::text[], ${p(11)}::text[], ${p(12)}::int[], ${p(13)}::bigint[], ${p(20)}::bigint[], ${p(14)}::bigint[])
    on conflict (agent, audience, scope, day) do update set tokens = u.tokens + excluded.tokens, denials = u.denials + excluded.denials,
      last_token_at = greatest(u.last_token_at, excluded.last_token_at)
  ), usage_users as (
    insert into agent_users as u (agent, sub_iss, sub, first_at, last_at)
      select * from unnest(${p(15)}::text[], ${p(16)}::text[], ${p(17)}::text[], ${p(18)}::bigint[], ${p(19)}::bigint[])
    on conflict (agent, sub_iss, sub) do update set first_at = least(u.first_at, excluded.first_at), last_at = greatest(u.last_at, excluded.last_at)
  ), usage_depth as (
    insert into agent_depth_day as u (agent, day, max_depth)
      select * from unnest(${p(21)}::text[], ${p(22)}::int[], ${p(23)}::int[])
    on conflict (agent, day) do update set max_depth = greatest(u.max_depth, excluded.max_depth)
  )
  `
}

/** Parameters `usageCtes` reads. */
export const USAGE_PARAMS = 24

interface GrantRow {
  agent: string
  audience: string
  scope: string
  day: number
  tokens: number
  denials: number
  last: number | null
}

/** Adds one token (or one denial) to the grant row of its key. */
function countGrant(grants: Map<string, GrantRow>, agent: string, audience: string, scope: string, day: number, issuedAt: number | null): void {
  const gk = `${agent}\u0000${audience}\u0000${scope}\u0000${day}`
  let g = grants.get(gk)
  if (g === undefined) grants.set(gk, (g = { agent, audience, scope, day, tokens: 0, denials: 0, last: null }))
  if (issuedAt === null) g.denials++
  else {
    g.tokens++
    g.last = Math.max(g.last ?? issuedAt, issuedAt)
  }
}

/**
 * A denial counts against each audience and scope it asked for (as its
 * record keeps them: record.ts caps both); one that left `scope` out counts
 * under scope `''`.
 */
function countDenial(grants: Map<string, GrantRow>, e: Extract<AuditEvent, { type: 'token.denied' }>, day: number): void {
  const scopes = e.scopes === undefined ? [''] : e.scopes.slice(0, MAX_RECORDED_SCOPES)
  for (const audience of e.audiences?.slice(0, MAX_RECORDED_AUDIENCES) ?? []) {
    for (const scope of scopes) countGrant(grants, e.agent, audience, scope, day, null)
  }
}

/**
 * Depth 1 is every issuance's, so only longer chains get a row: each agent
 * of the chain (RFC 8693 §4.1 actors) needed its `max_depth` to allow it.
 */
function countDepth(depths: Map<string, { agent: string; day: number; depth: number }>, actors: readonly string[], day: number): void {
  if (actors.length < 2) return
  for (const agent of actors) {
    const k = `${agent}\u0000${day}`
    const d = depths.get(k)
    if (d === undefined) depths.set(k, { agent, day, depth: actors.length })
    else d.depth = Math.max(d.depth, actors.length)
  }
}

/**
 * The group's summary rows, one per key, as the column arrays `usageCtes`
 * reads, and the user rows among them (for `RecentUsers.remember` once the
 * group commits). User rows `recent` covers are left out.
 */
export function usageParams(events: readonly AuditEvent[], recent?: RecentUsers): { params: StatementParam[]; users: UserRow[] } {
  const days = new Map<string, { agent: string; day: number; tokens: number; denials: number; last: number | null }>()
  const hours = new Map<string, { agent: string; hour: number; tokens: number; denials: number }>()
  const grants = new Map<string, GrantRow>()
  const users = new Map<string, UserRow>()
  const depths = new Map<string, { agent: string; day: number; depth: number }>()
  for (const e of events) {
    if (e.type !== 'token.issued' && e.type !== 'token.denied') continue
    const day = Math.floor(e.at / DAY)
    const hour = Math.floor(e.at / HOUR)
    const dk = `${e.agent}\u0000${day}`
    let d = days.get(dk)
    if (d === undefined) days.set(dk, (d = { agent: e.agent, day, tokens: 0, denials: 0, last: null }))
    const hk = `${e.agent}\u0000${hour}`
    let h = hours.get(hk)
    if (h === undefined) hours.set(hk, (h = { agent: e.agent, hour, tokens: 0, denials: 0 }))
    if (e.type === 'token.denied') {
      d.denials++
      h.denials++
      if (e.audiences !== undefined) countDenial(grants, e, day)
      continue
    }
    d.tokens++
    h.tokens++
    d.last = Math.max(d.last ?? e.at, e.at)
    for (const scope of e.scopes) countGrant(grants, e.agent, e.audience, scope, day, e.at)
    countDepth(depths, e.actors, day)
    const row = { agent: e.agent, iss: e.subIssuer, sub: e.sub, first: e.at, last: e.at }
    const uk = userKey(row)
    const u = users.get(uk)
    if (u === undefined) users.set(uk, row)
    else {
      u.first = Math.min(u.first, e.at)
      u.last = Math.max(u.last, e.at)
    }
  }
  const d = [...days.values()]
  const h = [...hours.values()]
  const g = [...grants.values()]
  const u = recent === undefined ? [...users.values()] : [...users.entries()].filter(([k, r]) => !recent.covers(k, r.first, r.last)).map(([, r]) => r)
  const x = [...depths.values()]
  const params = [
    d.map((r) => r.agent),
    d.map((r) => r.day),
    d.map((r) => r.tokens),
    d.map((r) => r.denials),
    d.map((r) => r.last),
    h.map((r) => r.agent),
    h.map((r) => r.hour),
    h.map((r) => r.tokens),
    h.map((r) => r.denials),
    g.map((r) => r.agent),
    g.map((r) => r.audience),
    g.map((r) => r.scope),
    g.map((r) => r.day),
    g.map((r) => r.tokens),
    g.map((r) => r.last),
    u.map((r) => r.agent),
    u.map((r) => r.iss),
    u.map((r) => r.sub),
    u.map((r) => r.first),
    u.map((r) => r.last),
    g.map((r) => r.denials),
    x.map((r) => r.agent),
    x.map((r) => r.day),
    x.map((r) => r.depth),
  ]
  return { params, users: u }
}
