/**
 * The anomaly monitor: told of every group of records the delegation log
 * commits (never on the token path: after the commit, on the writer's
 * loop), it notes which agents were issued or denied tokens, and shortly
 * after evaluates their rules (src/core/anomaly.ts) from the usage
 * summaries and a few bounded reads (anomaly-store.ts). A rule that trips
 * acts once per agent and cool-down, whichever instance saw it first: an
 * `agent.anomaly` record, and for `quarantine` an agent kill through the
 * revocation service first, which every instance enforces from memory as
 * soon as it is applied.
 */
import type { AuditEvent, AuditLog } from '../audit/port.js'
import {
  ANOMALY_ACTOR,
  denialBurstFinding,
  newAudienceFinding,
  outsideHoursFinding,
  rateFinding,
  resolveAnomalyRules,
  userSpikeFinding,
  type AgentAnomalyRules,
  type AnomalyRule,
  type AnomalyAction,
  type AnomalyRuleName,
  type AnomalyRulesInput,
} from '../core/anomaly.js'
import type { AgentId } from '../core/claims.js'
import { agentKills } from '../core/inventory.js'
import type { AgentPolicy, PolicyStore } from '../policy/port.js'
import type { Revocation } from '../revocation/port.js'
import type { RevocationService } from '../revocation/service.js'
import type { Logger } from '../telemetry/log.js'
import type { AnomalyStore, HourCounts } from './anomaly-store.js'

/**
 * Least time between two evaluations: traffic arriving meanwhile is
 * evaluated together, so a busy broker reads the summaries a few times a
 * second rather than once per group; well within the 1 s a quarantine has
 * to take effect.
 */
const EVALUATE_EVERY_MS = 100
/** After a claim another instance won, this instance does not try it again for this long. */
const CLAIM_LOST_BACKOFF_SECONDS = 10

export interface AnomalyMonitorOptions {
  readonly rules: AnomalyRulesInput
  readonly cooldownSeconds: number
  readonly policies: PolicyStore
  readonly store: AnomalyStore
  readonly revocations: RevocationService
  readonly audit: AuditLog
  /** Epoch seconds. */
  readonly now: () => number
  readonly logger: Logger
}

export interface AnomalyMonitor {
  /** The events of a committed group; quick, never throws. */
  observe(events: readonly AuditEvent[]): void
  /** Resolves once everything observed so far is evaluated and acted on (tests, close). */
  settled(): Promise<void>
  close(): Promise<void>
}

/** What the committed records showed of one agent since its last evaluation. */
interface Seen {
  /** Latest `token.issued` time, when any. */
  issuedAt: number | undefined
  /** Earliest `token.issued` time: a batch spans a moment, so its tokens are inside the declared hours when its first and last are. */
  firstIssuedAt: number | undefined
  denied: boolean
  /** Audiences of its tokens, with the first time each was seen. */
  readonly audiences: Map<string, number>
}

/** What evaluations share: the options, and this instance's memory of audiences and of claims. */
interface Evaluator {
  readonly options: AnomalyMonitorOptions
  /** Audiences this instance already recorded, per agent: no SQL for them again. */
  readonly known: Map<string, Set<string>>
  /** (agent, rule) → epoch seconds before which this instance does not try to act again. */
  readonly quiet: Map<string, number>
  /** Each loaded policy's rules, resolved once (a reload makes new policy objects); the config's alone under `undefined`. */
  readonly resolved: WeakMap<AgentPolicy, AgentAnomalyRules>
  readonly configOnly: AgentAnomalyRules
}

function rulesOf(ev: Evaluator, policy: AgentPolicy | undefined): AgentAnomalyRules {
  if (policy === undefined) return ev.configOnly
  let rules = ev.resolved.get(policy)
  if (rules === undefined) {
    rules = resolveAnomalyRules(ev.options.rules, policy.anomalies?.rules, policy.anomalies?.hours !== undefined)
    ev.resolved.set(policy, rules)
  }
  return rules
}

/** True when the agent had a token for an audience this instance has not recorded yet (most evaluations: false, no await). */
function unknownAudiences(ev: Evaluator, agent: string, seen: Seen): boolean {
  const mine = ev.known.get(agent)
  if (mine === undefined) return seen.audiences.size > 0
  for (const audience of seen.audiences.keys()) if (!mine.has(audience)) return true
  return false
}

export function createAnomalyMonitor(options: AnomalyMonitorOptions): AnomalyMonitor {
  const ev: Evaluator = {
    options,
    known: new Map(),
    quiet: new Map(),
    resolved: new WeakMap(),
    configOnly: resolveAnomalyRules(options.rules, undefined, false),
  }
  let pending = new Map<string, Seen>()
  let running: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined
  let lastRun = 0
  let closed = false

  const schedule = () => {
    if (closed || running !== undefined || timer !== undefined) return
    const wait = Math.max(0, lastRun + EVALUATE_EVERY_MS - performance.now())
    timer = setTimeout(() => {
      timer = undefined
      lastRun = performance.now()
      const batch = pending
      pending = new Map()
      running = evaluateAll(ev, batch).finally(() => {
        running = undefined
        if (pending.size > 0) schedule()
      })
    }, wait)
  }

  return {
    observe(events) {
      if (closed) return
      for (const e of events) {
        if (e.type !== 'token.issued' && e.type !== 'token.denied') continue
        let seen = pending.get(e.agent)
        if (seen === undefined) pending.set(e.agent, (seen = { issuedAt: undefined, firstIssuedAt: undefined, denied: false, audiences: new Map() }))
        if (e.type === 'token.denied') {
          seen.denied = true
          continue
        }
        seen.issuedAt = Math.max(seen.issuedAt ?? e.at, e.at)
        seen.firstIssuedAt = Math.min(seen.firstIssuedAt ?? e.at, e.at)
        if (!seen.audiences.has(e.audience)) seen.audiences.set(e.audience, e.at)
      }
      if (pending.size > 0) schedule()
    },
    async settled() {
      while (timer !== undefined || running !== undefined) {
        if (timer !== undefined) await new Promise((r) => setTimeout(r, EVALUATE_EVERY_MS))
        await running
      }
    },
    async close() {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
      await running
    },
  }
}

/** One agent to evaluate: what was seen of it, and its rules. */
interface Plan {
  readonly agent: AgentId
  readonly seen: Seen
  readonly rules: AgentAnomalyRules
  readonly newAudiences: readonly string[]
}

async function evaluateAll(ev: Evaluator, batch: ReadonlyMap<string, Seen>): Promise<void> {
  const { options } = ev
  // A failure is most likely the database's: the rest of the batch would only fail alike and flood the log, so it ends here.
  const warn = (agent: string | undefined, err: unknown) =>
    options.logger.warn({ agent, code: (err as { code?: unknown }).code ?? (err as Error).name }, 'anomaly rules not evaluated')
  const kills = agentKills(options.revocations.records())
  const now = options.now()
  const plans: Plan[] = []
  for (const [id, seen] of batch) {
    const agent = id as AgentId
    try {
      const rules = rulesOf(ev, options.policies.get(agent))
      const newAudiences = unknownAudiences(ev, agent, seen) ? await recordAudiences(ev, agent, seen) : []
      // A killed agent's requests are refused, and its denials expected: nothing to add until the kill is lifted.
      if (rules.size > 0 && !kills.has(agent)) plans.push({ agent, seen, rules, newAudiences })
    } catch (err) {
      return warn(agent, err)
    }
  }
  if (plans.length === 0) return
  // The summary reads of every agent at once: one statement per rule, however many agents.
  const wanting = (rule: AnomalyRuleName) => plans.filter((p) => p.seen.issuedAt !== undefined && ruleOf(ev, p, rule, now) !== undefined).map((p) => p.agent)
  let counts: Counts
  try {
    const [tokens, users] = await Promise.all([options.store.tokenCounts(wanting('rate'), now), options.store.newUserCounts(wanting('user_spike'), now)])
    counts = { tokens, users }
  } catch (err) {
    return warn(undefined, err)
  }
  for (const plan of plans) {
    try {
      for (const [rule, detail] of await findings(ev, plan, now, counts)) {
        const acted = await act(ev, plan.agent, rule, plan.rules.get(rule)!.action, detail)
        if (acted === 'quarantine') break // killed now: the other rules would only repeat it
      }
    } catch (err) {
      return warn(plan.agent, err)
    }
  }
}

interface Counts {
  readonly tokens: ReadonlyMap<string, HourCounts>
  readonly users: ReadonlyMap<string, HourCounts>
}

/** The agent's rule, unless this instance acted on it (or lost the claim) too recently to try again. */
function ruleOf(ev: Evaluator, plan: Plan, name: AnomalyRuleName, now: number): AnomalyRule | undefined {
  return (ev.quiet.get(quietKey(plan.agent, name)) ?? 0) > now ? undefined : plan.rules.get(name)
}

async function recordAudiences(ev: Evaluator, agent: AgentId, seen: Seen): Promise<string[]> {
  let mine = ev.known.get(agent)
  if (mine === undefined) ev.known.set(agent, (mine = new Set()))
  const fresh: string[] = []
  for (const [audience, at] of seen.audiences) {
    if (mine.has(audience)) continue
    if (await ev.options.store.recordAudience(agent, audience, at)) fresh.push(audience)
    mine.add(audience)
  }
  return fresh
}

/** The rules that trip, quarantines first (once one acts the agent is killed). */
async function findings(ev: Evaluator, plan: Plan, now: number, counts: Counts): Promise<[AnomalyRuleName, string][]> {
  const { agent, seen, rules } = plan
  const out: [AnomalyRuleName, string | undefined][] = []
  const hours = ev.options.policies.get(agent)?.anomalies?.hours
  const rule = (name: AnomalyRuleName) => ruleOf(ev, plan, name, now)
  const denialBurst = rule('denial_burst')
  if (denialBurst !== undefined && seen.denied) {
    out.push(['denial_burst', denialBurstFinding(denialBurst, await ev.options.store.latestDenials(agent, denialBurst.count), now)])
  }
  if (seen.issuedAt !== undefined) {
    if (rule('outside_hours') !== undefined && hours !== undefined) {
      out.push(['outside_hours', outsideHoursFinding(hours, seen.firstIssuedAt ?? seen.issuedAt) ?? outsideHoursFinding(hours, seen.issuedAt)])
    }
    if (rule('new_audience') !== undefined && plan.newAudiences.length > 0) out.push(['new_audience', newAudienceFinding(plan.newAudiences.join(', '))])
    const rate = rule('rate')
    const tokens = counts.tokens.get(agent)
    if (rate !== undefined && tokens !== undefined) out.push(['rate', rateFinding(rate, tokens)])
    const users = rule('user_spike')
    const newUsers = counts.users.get(agent)
    if (users !== undefined && newUsers !== undefined) out.push(['user_spike', userSpikeFinding(users, newUsers)])
  }
  const found = out.filter((f): f is [AnomalyRuleName, string] => f[1] !== undefined)
  const quarantines = (name: AnomalyRuleName) => Number(rules.get(name)!.action === 'quarantine')
  return found.sort((a, b) => quarantines(b[0]) - quarantines(a[0]))
}

const quietKey = (agent: string, rule: string) => `${agent}\u0000${rule}`

/** Acts on a finding if this instance wins the claim: for a quarantine the kill first, then the records. */
async function act(ev: Evaluator, agent: AgentId, rule: AnomalyRuleName, action: AnomalyAction, detail: string): Promise<AnomalyAction | undefined> {
  const { options, quiet } = ev
  const now = options.now()
  if (!(await options.store.claim(agent, rule, now, options.cooldownSeconds))) {
    quiet.set(quietKey(agent, rule), now + CLAIM_LOST_BACKOFF_SECONDS)
    return undefined
  }
  quiet.set(quietKey(agent, rule), now + options.cooldownSeconds)
  let revocationId: string | undefined
  if (action === 'quarantine') {
    let kill: Revocation
    try {
      kill = await options.revocations.revoke({ target: { kind: 'agent', agent }, reason: `quarantine: ${rule}`, createdBy: ANOMALY_ACTOR })
    } catch (err) {
      // Not killed, or durable but not yet on every instance: evaluate again at the next traffic rather than wait a cool-down.
      quiet.delete(quietKey(agent, rule))
      await options.store.release(agent, rule, now).catch(() => {})
      throw err
    }
    revocationId = kill.id
    await options.store.quarantined(agent, rule, kill.id)
    await options.audit.append({ type: 'revocation.created', at: now, by: ANOMALY_ACTOR, revocation: kill })
  }
  await options.audit.append({ type: 'agent.anomaly', at: now, agent, rule, action, detail, revocationId })
  options.logger.warn({ agent, rule, action, detail, revocation: revocationId }, 'anomaly')
  return action
}
