/**
 * The agent inventory: every agent a policy names and every agent id the
 * usage summaries hold, with its state and usage. Pure: the policies, the
 * summaries (src/audit/inventory.ts reads them), the kills and the clock
 * come in; nothing is read here.
 */
import type { AgentId } from './claims.js'
import type { AgentLifecycleView, LifecycleReads } from './lifecycle.js'
import type { AgentPolicy } from '../policy/port.js'
import type { Revocation } from '../revocation/port.js'
import type { LeastPrivilegeReads } from './least-privilege.js'
import { isQuarantine } from './anomaly.js'

export const AGENT_STATES = ['active', 'expiring', 'expired', 'killed', 'dormant', 'unknown', 'attestation_overdue', 'orphaned', 'quarantined'] as const
export type AgentState = (typeof AGENT_STATES)[number]

/** An agent is `expiring` this close to its policy's `expires`. */
export const EXPIRING_WITHIN = 14 * 86_400
/** And `dormant` after this long without a token (never issued one: counted from nothing, so it is not dormant). */
export const DORMANT_AFTER = 90 * 86_400

/** One agent's usage, as the summaries hold it. */
export interface AgentUsage {
  readonly tokens24h: number
  /** Tokens in each of the 24 hours of the 24 h window, the oldest first. */
  readonly tokensByHour: readonly number[]
  readonly denials24h: number
  readonly users24h: number
  readonly tokens30d: number
  readonly denials30d: number
  readonly users30d: number
  /** Epoch seconds of the last `token.issued`, ever. */
  readonly lastTokenAt: number | undefined
}

export const NO_USAGE: AgentUsage = {
  tokens24h: 0,
  tokensByHour: new Array<number>(24).fill(0),
  denials24h: 0,
  users24h: 0,
  tokens30d: 0,
  denials30d: 0,
  users30d: 0,
  lastTokenAt: undefined,
}

/** Reads of the usage summaries the inventory needs (src/audit/inventory.ts). */
export interface UsageReads extends LeastPrivilegeReads {
  /** Every agent the summaries name, with its usage up to `now` (epoch seconds). */
  usage(now: number): Promise<ReadonlyMap<string, AgentUsage>>
  /** One agent's usage, its grants' usage over 30 days, its recent denials and the delegation chains it is in. */
  detail(agent: string, now: number): Promise<AgentDetailUsage>
}

export interface GrantUsage {
  readonly audience: string
  readonly scope: string
  readonly tokens30d: number
  readonly lastTokenAt: number
}

export interface Denial {
  readonly at: number
  readonly error: string
  readonly reason: string
  readonly sub: string | undefined
}

export interface ChainAppearance {
  readonly jti: string
  readonly rootJti: string
  readonly at: number
  /** Newest first. */
  readonly actors: readonly string[]
}

/** An `agent.anomaly` record: a rule that tripped on the agent's traffic (docs/anomalies.md). */
export interface AnomalySeen {
  readonly at: number
  readonly rule: string
  readonly action: string
  readonly detail: string
  readonly revocationId: string | undefined
}

export interface AgentDetailUsage {
  readonly usage: AgentUsage
  readonly grants: readonly GrantUsage[]
  readonly denials: readonly Denial[]
  readonly chains: readonly ChainAppearance[]
  /** Its latest anomalies, newest first. */
  readonly anomalies?: readonly AnomalySeen[]
  /** The running copies of it issued a token in the last hour (`INSTANCE_WINDOW`), the latest first. */
  readonly instances?: readonly InstanceSeen[]
}

/** How far back `mandate agents show` looks for live instances: an hour, in seconds. */
export const INSTANCE_WINDOW = 3600

/** One running copy of an agent (its `act.instance`) and the tokens issued to it in the window. */
export interface InstanceSeen {
  readonly instance: string
  readonly tokens: number
  /** Epoch seconds of its first and latest token in the window. */
  readonly firstAt: number
  readonly lastAt: number
}

export interface InventoryEntry {
  readonly agent: string
  readonly state: AgentState
  readonly owner: string | undefined
  readonly purpose: string | undefined
  readonly expires: number | undefined
  /** Whole days to `expires` (negative once past); undefined without a policy. */
  readonly daysLeft: number | undefined
  readonly authentication: AgentPolicy['authentication']['method'] | undefined
  readonly usage: AgentUsage
  /** Audience → granted scopes, sorted. */
  readonly grants: readonly { readonly audience: string; readonly scopes: readonly string[] }[]
  /** Agent kills in force. */
  readonly kills: readonly Revocation[]
  /** The last attestation and when the next is due; undefined without a policy (or without the lifecycle). */
  readonly attestation?: { readonly lastAttestedAt: number | undefined; readonly by: string | undefined; readonly nextDue: number | undefined } | undefined
}

/**
 * The state of one agent: a kill wins (`quarantined` when every kill in force is an anomaly rule's), then expiry, an overdue attestation, an owner gone,
 * expiry near, then dormancy. With the lifecycle, dormancy is its (`governance.dormant_after`); without, 90 days.
 */
export function stateOf(
  policy: AgentPolicy | undefined,
  usage: AgentUsage,
  kills: readonly Revocation[],
  now: number,
  lifecycle?: AgentLifecycleView,
): AgentState {
  if (policy === undefined) return 'unknown'
  if (kills.length > 0) return kills.every(isQuarantine) ? 'quarantined' : 'killed'
  if (policy.expires <= now) return 'expired'
  if (lifecycle?.conditions.includes('attestation_overdue') === true) return 'attestation_overdue'
  if (lifecycle?.conditions.includes('orphaned') === true) return 'orphaned'
  if (policy.expires - now <= EXPIRING_WITHIN) return 'expiring'
  if (lifecycle !== undefined) return lifecycle.conditions.includes('dormant') ? 'dormant' : 'active'
  if (usage.lastTokenAt !== undefined && now - usage.lastTokenAt > DORMANT_AFTER) return 'dormant'
  return 'active'
}

/** Agent kills in force (kind `agent`, not lifted), by agent. */
export function agentKills(records: readonly Revocation[]): Map<string, Revocation[]> {
  const kills = new Map<string, Revocation[]>()
  for (const r of records) {
    if (r.target.kind !== 'agent' || r.liftedAt !== undefined) continue
    const list = kills.get(r.target.agent) ?? []
    list.push(r)
    kills.set(r.target.agent, list)
  }
  return kills
}

/** Every agent of `policies` and of `usage`, each once, in agent-id order. */
export function buildInventory(
  policies: readonly AgentPolicy[],
  usage: ReadonlyMap<string, AgentUsage>,
  kills: ReadonlyMap<string, readonly Revocation[]>,
  now: number,
  lifecycle?: LifecycleReads,
): InventoryEntry[] {
  const byAgent = new Map<string, AgentPolicy>(policies.map((p) => [p.agent, p]))
  const ids = [...new Set([...byAgent.keys(), ...usage.keys()])].sort()
  return ids.map((agent) => entryOf(agent as AgentId, byAgent.get(agent), usage.get(agent) ?? NO_USAGE, kills.get(agent) ?? [], now, lifecycle))
}

export function entryOf(
  agent: AgentId,
  policy: AgentPolicy | undefined,
  usage: AgentUsage,
  kills: readonly Revocation[],
  now: number,
  lifecycle?: LifecycleReads,
): InventoryEntry {
  const view = policy === undefined ? undefined : lifecycle?.view(policy, now)
  return {
    agent,
    state: stateOf(policy, usage, kills, now, view),
    owner: policy?.owner,
    purpose: policy?.purpose,
    expires: policy?.expires,
    daysLeft: policy === undefined ? undefined : Math.floor((policy.expires - now) / 86_400),
    authentication: policy?.authentication.method,
    usage,
    grants:
      policy === undefined
        ? []
        : [...policy.grants.values()].map((g) => ({ audience: g.audience, scopes: [...g.scopes].sort() })).sort((a, b) => cmp(a.audience, b.audience)),
    kills,
    attestation: view === undefined ? undefined : { lastAttestedAt: view.attestedAt, by: view.attestedBy, nextDue: view.nextDue },
  }
}

export const INVENTORY_SORTS = ['agent', 'owner', 'expires', 'last_token', 'tokens_24h', 'tokens_30d'] as const
export type InventorySort = (typeof INVENTORY_SORTS)[number]

export interface InventoryFilter {
  readonly owner?: string | undefined
  readonly state?: AgentState | undefined
  /** Agents whose policy expires within this many seconds (expired ones included). */
  readonly expiringWithin?: number | undefined
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/** Filters, then sorts (ties by agent id, so pages are stable); busiest and latest first for the usage sorts. */
export function selectInventory(entries: readonly InventoryEntry[], filter: InventoryFilter, sort: InventorySort, now: number): InventoryEntry[] {
  const kept = entries.filter(
    (e) =>
      (filter.owner === undefined || e.owner === filter.owner) &&
      (filter.state === undefined || e.state === filter.state) &&
      (filter.expiringWithin === undefined || (e.expires !== undefined && e.expires - now <= filter.expiringWithin)),
  )
  const key = (e: InventoryEntry): number | string => {
    switch (sort) {
      case 'agent':
        return ''
      case 'owner':
        return e.owner ?? '\uffff'
      case 'expires':
        return e.expires ?? Number.MAX_SAFE_INTEGER
      case 'last_token':
        return -(e.usage.lastTokenAt ?? -1)
      case 'tokens_24h':
        return -e.usage.tokens24h
      case 'tokens_30d':
        return -e.usage.tokens30d
    }
  }
  return kept.sort((a, b) => {
    const ka = key(a)
    const kb = key(b)
    const c = typeof ka === 'number' && typeof kb === 'number' ? ka - kb : cmp(String(ka), String(kb))
    return c !== 0 ? c : cmp(a.agent, b.agent)
  })
}
