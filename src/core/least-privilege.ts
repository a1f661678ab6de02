/**
 * Least privilege from the usage summaries: what an agent's policy grants
 * that it did not use in a window (audiences, scopes, delegation depth), and
 * the grants it asked for that were only ever denied. Pure: the policies,
 * the window's usage (src/audit/inventory.ts reads it) and the clock come
 * in; nothing is read here.
 *
 * Removing a grant is only suggested on enough evidence: the agent must
 * have been seen for at least the whole window and have been issued at
 * least a minimum of tokens in it. Otherwise the report says why not.
 */
import type { AgentPolicy } from '../policy/port.js'

export const DAY_SECONDS = 86_400

/** One agent's use of its grants in a window, as the summaries hold it. */
export interface WindowUsage {
  /** Tokens issued to the agent in the window. */
  readonly tokens: number
  /** Epoch seconds of the agent's first token ever; undefined when it was never issued one. */
  readonly firstTokenAt: number | undefined
  /** Per audience and scope asked for in the window: tokens carrying it and denials of requests asking for it (scope `''`: none named). */
  readonly grants: readonly { readonly audience: string; readonly scope: string; readonly tokens: number; readonly denials: number }[]
  /** Longest delegation chain the agent was part of in the window (1 when it was issued tokens only directly, 0 when none). */
  readonly maxDepth: number
}

/** Reads of the summaries `policy unused` needs (src/audit/inventory.ts). */
export interface LeastPrivilegeReads {
  /** Usage of each agent in `agents` from epoch second `from` up to now. */
  windowUsage(agents: readonly string[], from: number): Promise<ReadonlyMap<string, WindowUsage>>
}

export const NO_WINDOW_USAGE: WindowUsage = { tokens: 0, firstTokenAt: undefined, grants: [], maxDepth: 0 }

/** Why nothing is suggested for an agent. */
export type NoSuggestion = 'never_issued' | 'younger_than_window' | 'too_few_tokens'

export interface UnusedReport {
  readonly agent: string
  readonly windowDays: number
  readonly tokens: number
  readonly firstTokenAt: number | undefined
  /** Undefined when removals are suggested; otherwise why not, and the lists of unused grants are empty. */
  readonly noSuggestion: NoSuggestion | undefined
  /** Why not, for people. */
  readonly noSuggestionReason: string | undefined
  /** Granted audiences no token in the window was issued for: the whole grant can go. */
  readonly unusedAudiences: readonly string[]
  /** Granted scopes of audiences otherwise in use that no token in the window carried. */
  readonly unusedScopes: readonly { readonly audience: string; readonly scope: string }[]
  /** `delegation.max_depth` granted and the depth used in the window; `unused` when the latter is lower. */
  readonly depth: { readonly granted: number; readonly used: number; readonly unused: boolean }
  /** Granted audiences and scopes that requests asked for in the window and that were only ever denied (scope `''`: the audience, no scope named). */
  readonly onlyDenied: readonly { readonly audience: string; readonly scope: string; readonly denials: number }[]
}

export interface UnusedOptions {
  /** Epoch seconds. */
  readonly now: number
  readonly windowDays: number
  /** Fewer tokens than this in the window: nothing is suggested. */
  readonly minTokens: number
}

function whyNot(usage: WindowUsage, o: UnusedOptions): { code: NoSuggestion; reason: string } | undefined {
  if (usage.firstTokenAt === undefined) return { code: 'never_issued', reason: 'never issued a token: no usage to judge its grants by' }
  const ageDays = Math.floor((o.now - usage.firstTokenAt) / DAY_SECONDS)
  if (ageDays < o.windowDays) {
    return {
      code: 'younger_than_window',
      reason: `first issued a token ${ageDays} day(s) ago, less than the ${o.windowDays}-day window: too young to judge`,
    }
  }
  if (usage.tokens < o.minTokens) {
    return {
      code: 'too_few_tokens',
      reason: `${usage.tokens} token(s) in the window, fewer than governance.shrink_min_tokens (${o.minTokens}): too little evidence`,
    }
  }
  return undefined
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/** What `policy` grants and `usage` shows unused, and what was only denied. */
export function unusedGrants(policy: AgentPolicy, usage: WindowUsage, o: UnusedOptions): UnusedReport {
  const tokens = new Map<string, number>()
  const denials = new Map<string, number>()
  const key = (audience: string, scope: string) => `${audience}\u0000${scope}`
  for (const g of usage.grants) {
    tokens.set(key(g.audience, g.scope), (tokens.get(key(g.audience, g.scope)) ?? 0) + g.tokens)
    denials.set(key(g.audience, g.scope), (denials.get(key(g.audience, g.scope)) ?? 0) + g.denials)
    tokens.set(g.audience, (tokens.get(g.audience) ?? 0) + g.tokens)
  }
  const onlyDenied: { audience: string; scope: string; denials: number }[] = []
  const unusedAudiences: string[] = []
  const unusedScopes: { audience: string; scope: string }[] = []
  const grants = [...policy.grants.values()].sort((a, b) => cmp(a.audience, b.audience))
  for (const grant of grants) {
    const audienceUsed = (tokens.get(grant.audience) ?? 0) > 0
    if (!audienceUsed) unusedAudiences.push(grant.audience)
    for (const scope of ['', ...[...grant.scopes].sort()]) {
      const used = (tokens.get(key(grant.audience, scope)) ?? 0) > 0
      const denied = denials.get(key(grant.audience, scope)) ?? 0
      if (denied > 0 && !used && (scope !== '' || !audienceUsed)) onlyDenied.push({ audience: grant.audience, scope, denials: denied })
      if (scope !== '' && audienceUsed && !used) unusedScopes.push({ audience: grant.audience, scope })
    }
  }
  const used = usage.tokens > 0 ? Math.max(1, usage.maxDepth) : usage.maxDepth
  const granted = policy.delegation.maxDepth
  const why = whyNot(usage, o)
  return {
    agent: policy.agent,
    windowDays: o.windowDays,
    tokens: usage.tokens,
    firstTokenAt: usage.firstTokenAt,
    noSuggestion: why?.code,
    noSuggestionReason: why?.reason,
    unusedAudiences: why === undefined ? unusedAudiences : [],
    unusedScopes: why === undefined ? unusedScopes : [],
    depth: { granted, used, unused: why === undefined && used < granted },
    onlyDenied,
  }
}
