/**
 * Anomaly rules (docs/anomalies.md): which rules apply to an agent (the
 * config's, overridden rule by rule by its policy's), declared hours, and
 * the decision of each rule from what the usage summaries and the committed
 * records show. Pure: no I/O, no clock; the monitor (src/governance/)
 * gathers the observations and acts on the findings.
 */

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

/* Declared hours: `Mon-Fri 08:00-18:00`, entries separated by commas. */

const DAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const
const DAY = '(Mon|Tue|Wed|Thu|Fri|Sat|Sun)'
const TIME = '([01][0-9]|2[0-3]):([0-5][0-9])'
const END = '([01][0-9]|2[0-3]):([0-5][0-9])|24:00'
const ENTRY = new RegExp(`^${DAY}(?:-${DAY})? ${TIME}-(${END})$`)

/** One entry of declared hours: on these weekdays (0 = Sunday), from `from` to `to` minutes after local midnight. */
export interface HoursEntry {
  readonly days: ReadonlySet<number>
  readonly from: number
  readonly to: number
}

/** Declared hours, parsed; `undefined` when malformed. A day range may wrap (`Fri-Mon`); a time range may not (`to` > `from`). */
export function parseHours(text: string): readonly HoursEntry[] | undefined {
  const entries: HoursEntry[] = []
  for (const part of text.split(',')) {
    const m = ENTRY.exec(part.trim())
    if (m === null) return undefined
    const first = DAY_NAMES.indexOf(m[1] as (typeof DAY_NAMES)[number])
    const last = m[2] === undefined ? first : DAY_NAMES.indexOf(m[2] as (typeof DAY_NAMES)[number])
    const days = new Set<number>()
    for (let d = first; ; d = (d + 1) % 7) {
      days.add(d)
      if (d === last) break
    }
    const from = Number(m[3]) * 60 + Number(m[4])
    const to = m[5] === '24:00' ? 24 * 60 : Number(m[6]) * 60 + Number(m[7])
    if (to <= from) return undefined
    entries.push({ days, from, to })
  }
  return entries
}

/** True when `timeZone` is an IANA zone name the runtime knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone })
    return true
  } catch {
    return false
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>()

/** Weekday (0 = Sunday) and minutes after midnight of `at` (epoch seconds) in `timeZone`, by the runtime's time-zone data. */
export function localTime(at: number, timeZone: string): { readonly weekday: number; readonly minutes: number; readonly text: string } {
  let f = formatters.get(timeZone)
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
    formatters.set(timeZone, f)
  }
  const part = (type: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === type)?.value ?? ''
  const parts = f.formatToParts(new Date(at * 1000))
  const [day, hour, minute] = [part('weekday'), part('hour'), part('minute')]
  const weekday = DAY_NAMES.indexOf(day as (typeof DAY_NAMES)[number])
  return { weekday, minutes: Number(hour) * 60 + Number(minute), text: `${day} ${hour}:${minute}` }
}

/** A policy's declared hours: as written, parsed, and the IANA zone they are in. */
export interface DeclaredHours {
  readonly text: string
  readonly entries: readonly HoursEntry[]
  readonly timeZone: string
}

/** `outside_hours`: the detail when `at` falls outside every entry of `hours` in their zone, else undefined. */
export function outsideHoursFinding(hours: DeclaredHours, at: number): string | undefined {
  const t = localTime(at, hours.timeZone)
  if (hours.entries.some((e) => e.days.has(t.weekday) && t.minutes >= e.from && t.minutes < e.to)) return undefined
  return `token at ${t.text} ${hours.timeZone}, outside ${hours.text}`
}
