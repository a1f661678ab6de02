/**
 * Anomaly rules (docs/anomalies.md): which rules apply to an agent (the
 * config's, overridden rule by rule by its policy's), and
 * the decision of each rule from what the usage summaries and the committed
 * records show. Pure: no I/O, no clock; the monitor (src/governance/)
 * gathers the observations and acts on the findings.
 */

import { judgeHours, type DeclaredHours } from './hours.js'

/** Who a quarantine's kill and its records name as their maker. */
export const ANOMALY_ACTOR = 'mandate:anomaly'

/** A quarantine: an agent kill an anomaly rule made (its reason `quarantine: RULE`). */
export function isQuarantine(kill: { readonly createdBy: string; readonly reason: string }): boolean {
  return kill.createdBy === ANOMALY_ACTOR && kill.reason.startsWith('quarantine: ')
}

/** Every rule, by its name in config, policies and `agent.anomaly` records. */
export const ANOMALY_RULES = ['rate', 'new_audience', 'denial_burst', 'user_spike', 'outside_hours'] as const
export type AnomalyRuleName = (typeof ANOMALY_RULES)[number]

export type AnomalyAction = 'alert' | 'quarantine'

/** A rule as written in config or a policy: every field optional; `action: off` turns it off. */
export interface AnomalyRuleInput {
  readonly action?: AnomalyAction | 'off' | undefined
  readonly factor?: number | undefined
  readonly min_tokens?: number | undefined
  readonly min_users?: number | undefined
  readonly count?: number | undefined
  readonly window_seconds?: number | undefined
}

export type AnomalyRulesInput = { readonly [R in AnomalyRuleName]?: AnomalyRuleInput | undefined }

/** A rule in force for one agent, every parameter resolved. */
export interface AnomalyRule {
  readonly action: AnomalyAction
  /** `rate`, `user_spike`: how many times the baseline trips it. */
  readonly factor: number
  /** `rate`: tokens in the current hour below which it never trips. */
  readonly minTokens: number
  /** `user_spike`: new users in the current hour below which it never trips. */
  readonly minUsers: number
  /** `denial_burst`: denials within `windowSeconds` that trip it. */
  readonly count: number
  readonly windowSeconds: number
}

export type AgentAnomalyRules = ReadonlyMap<AnomalyRuleName, AnomalyRule>

/** What a rule's unset parameters are. */
export const RULE_DEFAULTS = { action: 'alert', factor: 10, minTokens: 100, minUsers: 20, count: 20, windowSeconds: 60 } as const satisfies AnomalyRule

/** Hours of the baseline: the 7 days before the current hour. */
export const BASELINE_HOURS = 7 * 24

/**
 * The rules in force for an agent: each rule the config or the policy names,
 * the policy's fields over the config's over the defaults, less those whose
 * resulting action is `off`. `outside_hours` needs declared hours.
 */
export function resolveAnomalyRules(global: AnomalyRulesInput, policy: AnomalyRulesInput | undefined, hasHours: boolean): AgentAnomalyRules {
  const rules = new Map<AnomalyRuleName, AnomalyRule>()
  for (const name of ANOMALY_RULES) {
    const g = global[name]
    const p = policy?.[name]
    if (g === undefined && p === undefined) continue
    const action = p?.action ?? g?.action ?? RULE_DEFAULTS.action
    if (action === 'off' || (name === 'outside_hours' && !hasHours)) continue
    const pick = <K extends keyof AnomalyRuleInput>(k: K) => p?.[k] ?? g?.[k]
    rules.set(name, {
      action,
      factor: pick('factor') ?? RULE_DEFAULTS.factor,
      minTokens: pick('min_tokens') ?? RULE_DEFAULTS.minTokens,
      minUsers: pick('min_users') ?? RULE_DEFAULTS.minUsers,
      count: pick('count') ?? RULE_DEFAULTS.count,
      windowSeconds: pick('window_seconds') ?? RULE_DEFAULTS.windowSeconds,
    })
  }
  return rules
}

/** Token counts from the hourly summaries: the current UTC hour so far, and the `BASELINE_HOURS` before it. */
export interface RateObservation {
  readonly currentHour: number
  readonly baseline: number
}

const perHour = (n: number) => n / BASELINE_HOURS

/** `rate`: the current hour's tokens reach `minTokens` and exceed `factor` times the hourly mean of the 7 days before. */
export function rateFinding(rule: AnomalyRule, o: RateObservation): string | undefined {
  const mean = perHour(o.baseline)
  if (o.currentHour < rule.minTokens || o.currentHour <= rule.factor * mean) return undefined
  return `${o.currentHour} tokens this hour; 7-day baseline ${mean.toFixed(2)}/h; trips above ${rule.factor}x the baseline and at ${rule.minTokens} tokens or more`
}

/** `user_spike`: users first served in the current hour, against those first served per hour over the 7 days before. */
export function userSpikeFinding(rule: AnomalyRule, o: { readonly currentHour: number; readonly baseline: number }): string | undefined {
  const mean = perHour(o.baseline)
  if (o.currentHour < rule.minUsers || o.currentHour <= rule.factor * mean) return undefined
  return `${o.currentHour} new users this hour; 7-day baseline ${mean.toFixed(2)}/h; trips above ${rule.factor}x the baseline and at ${rule.minUsers} users or more`
}

/**
 * `denial_burst`: `newest` holds the times (epoch seconds, newest first) of
 * the agent's most recent denials, at most `count` of them; it trips when
 * there are `count` and the oldest is within the window before `now`.
 */
export function denialBurstFinding(rule: AnomalyRule, newest: readonly number[], now: number): string | undefined {
  if (newest.length < rule.count) return undefined
  const oldest = newest[rule.count - 1]!
  if (oldest <= now - rule.windowSeconds) return undefined
  return `${rule.count} denials within ${Math.max(0, now - oldest)} s; trips at ${rule.count} within ${rule.windowSeconds} s`
}

/** `new_audience`: the detail of a first token for an audience. */
export function newAudienceFinding(audience: string): string {
  return `first token for audience ${audience}`
}

/** `outside_hours`: the detail when `at` falls outside every entry of `hours` in their zone, else undefined. */
export function outsideHoursFinding(hours: DeclaredHours, at: number): string | undefined {
  const judged = judgeHours(hours, at)
  return judged.inside ? undefined : `token ${judged.detail}`
}
