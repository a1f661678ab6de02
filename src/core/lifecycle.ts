/**
 * An agent's lifecycle: attestation by its owner, expiry, dormancy and
 * orphaning, evaluated from facts and a clock. Pure: the policy, what the
 * broker remembers of the agent (src/audit/lifecycle-service.ts keeps it)
 * and `now` come in; nothing is read here.
 */
import type { AgentId } from './claims.js'
import { OAuthError } from './errors.js'
import type { LifecycleTransition } from '../audit/port.js'
import type { AgentPolicy } from '../policy/port.js'

/** Warnings (attestation due, expiry near) start this long ahead. */
export const WARN_AHEAD = 14 * 86_400

/** What an agent can be in, at once; each one entered is an `agent.lifecycle` transition of the same name. */
export const LIFECYCLE_CONDITIONS = ['attestation_due', 'attestation_overdue', 'expiry_near', 'expired', 'orphaned', 'dormant'] as const
export type LifecycleCondition = (typeof LIFECYCLE_CONDITIONS)[number]

export interface LifecycleSettings {
  /** Seconds an attestation may be late before the agent gets no tokens. */
  readonly attestationGrace: number
  /** Seconds without a token (and without an attestation) after which an agent is dormant. */
  readonly dormantAfter: number
  readonly onDormant: 'warn' | 'suspend'
  readonly onOrphan: 'warn' | 'suspend'
}

/** What the broker remembers of one agent. */
export interface AgentStanding {
  /** When the broker first loaded the agent's policy: an agent never attested is counted from then. */
  readonly trackedSince: number
  readonly attestedAt: number | undefined
  readonly attestedBy: string | undefined
  /** Whether the last sweep found the agent dormant (dormancy needs the usage summaries, read off the hot path). */
  readonly dormant: boolean
}

export interface LifecycleFacts extends Omit<AgentStanding, 'dormant'> {
  /** The last token issued to the agent, ever; undefined: none (or no summaries to tell). */
  readonly lastTokenAt: number | undefined
  /** Whether the owners directory lists the policy's owner; undefined: no owners directory. */
  readonly ownerListed: boolean | undefined
}

export interface LifecycleEvaluation {
  /** In `LIFECYCLE_CONDITIONS` order. */
  readonly conditions: readonly LifecycleCondition[]
  /** True when one of the conditions keeps the agent from getting tokens (with the settings' actions). */
  readonly suspended: boolean
  /** When the next attestation is due; undefined without `attest_every`. */
  readonly nextDue: number | undefined
}

/** When the agent's next attestation is due: `attest_every` after the last one, or after its policy was first loaded. */
export function attestationDue(policy: AgentPolicy, standing: Pick<AgentStanding, 'trackedSince' | 'attestedAt'>): number | undefined {
  if (policy.attestEvery === undefined) return undefined
  return (standing.attestedAt ?? standing.trackedSince) + policy.attestEvery
}

/**
 * Dormant: no token and no attestation for `dormantAfter`. An agent never
 * issued a token is counted from when its policy was first loaded, so a new
 * agent is not dormant on its first day; an attestation reinstates it.
 */
export function isDormant(facts: Pick<LifecycleFacts, 'trackedSince' | 'attestedAt' | 'lastTokenAt'>, settings: LifecycleSettings, now: number): boolean {
  const active = Math.max(facts.lastTokenAt ?? facts.trackedSince, facts.attestedAt ?? Number.NEGATIVE_INFINITY)
  return now - active > settings.dormantAfter
}

/** Every condition the agent is in now. */
export function evaluateLifecycle(policy: AgentPolicy, facts: LifecycleFacts, settings: LifecycleSettings, now: number): LifecycleEvaluation {
  const held = new Set<LifecycleCondition>()
  const nextDue = attestationDue(policy, facts)
  if (nextDue !== undefined) {
    if (now >= nextDue + settings.attestationGrace) held.add('attestation_overdue')
    else if (now >= nextDue - WARN_AHEAD) held.add('attestation_due')
  }
  if (policy.expires <= now) held.add('expired')
  else if (policy.expires - now <= WARN_AHEAD) held.add('expiry_near')
  if (facts.ownerListed === false) held.add('orphaned')
  if (isDormant(facts, settings, now)) held.add('dormant')
  const conditions = LIFECYCLE_CONDITIONS.filter((c) => held.has(c))
  return { conditions, suspended: conditions.some((c) => suspends(c, settings)), nextDue }
}

/** Whether `condition` keeps an agent from getting tokens: overdue and expired always, dormant and orphaned as configured. */
export function suspends(condition: LifecycleCondition, settings: LifecycleSettings): boolean {
  switch (condition) {
    case 'attestation_overdue':
    case 'expired':
      return true
    case 'dormant':
      return settings.onDormant === 'suspend'
    case 'orphaned':
      return settings.onOrphan === 'suspend'
    case 'attestation_due':
    case 'expiry_near':
      return false
  }
}

export interface Transition {
  readonly transition: LifecycleTransition
  readonly suspended: boolean
  readonly detail: string
}

/**
 * The transitions from what was recorded to what holds now: each condition
 * entered, and `reinstated` when the agent was suspended and no longer is.
 * A condition left (an attestation made, an expiry moved) is no transition of
 * its own: the record of what changed it (`agent.attested`, `policy.loaded`) says so.
 */
export function transitionsOf(
  previous: { readonly conditions: readonly string[]; readonly suspended: boolean },
  next: LifecycleEvaluation,
  policy: AgentPolicy,
  facts: LifecycleFacts,
  settings: LifecycleSettings,
): Transition[] {
  const out: Transition[] = []
  for (const c of next.conditions) {
    if (!previous.conditions.includes(c)) out.push({ transition: c, suspended: next.suspended, detail: detailOf(c, policy, facts, next, settings) })
  }
  if (previous.suspended && !next.suspended) {
    out.push({ transition: 'reinstated', suspended: false, detail: 'no condition keeps the agent from getting tokens any more' })
  }
  return out
}

const day = (t: number) => new Date(t * 1000).toISOString().slice(0, 10)

function detailOf(c: LifecycleCondition, policy: AgentPolicy, facts: LifecycleFacts, e: LifecycleEvaluation, settings: LifecycleSettings): string {
  switch (c) {
    case 'attestation_due':
      return `attestation due ${day(e.nextDue!)}; tokens stop ${day(e.nextDue! + settings.attestationGrace)} unless the owner attests`
    case 'attestation_overdue':
      return `attestation was due ${day(e.nextDue!)}; no tokens until the owner attests`
    case 'expiry_near':
      return `policy expires ${day(policy.expires)}`
    case 'expired':
      return `policy expired ${day(policy.expires)}`
    case 'orphaned':
      return `owner ${policy.owner} is not in the owners directory${settings.onOrphan === 'suspend' ? '; no tokens until an owner listed there is named' : ''}`
    case 'dormant':
      return `${facts.lastTokenAt === undefined ? 'no token ever' : `no token since ${day(facts.lastTokenAt)}`}${
        settings.onDormant === 'suspend' ? '; no tokens until attested' : ''
      }`
  }
}

/** The lifecycle's answer to "may this agent be issued a token now?", from memory (the token endpoint asks it). */
export interface LifecycleStanding {
  /** The refusal for `policy`'s agent now, or undefined. Never does I/O. */
  refusal(policy: AgentPolicy, now: number): OAuthError | undefined
}

/** The lifecycle of one agent as the inventory shows it. */
export interface AgentLifecycleView {
  readonly attestedAt: number | undefined
  readonly attestedBy: string | undefined
  readonly nextDue: number | undefined
  readonly conditions: readonly LifecycleCondition[]
}

export interface LifecycleReads {
  view(policy: AgentPolicy, now: number): AgentLifecycleView
}

/**
 * The refusal an agent's standing calls for (RFC 6749 §5.2 `unauthorized_client`: this client may not use
 * this grant now): an overdue attestation, then dormancy and orphaning when their action is `suspend`.
 * `ownerListed` undefined: no owners directory.
 */
export function standingRefusal(
  policy: AgentPolicy,
  standing: AgentStanding,
  ownerListed: boolean | undefined,
  settings: LifecycleSettings,
  now: number,
): OAuthError | undefined {
  const due = attestationDue(policy, standing)
  const agent: AgentId = policy.agent
  if (due !== undefined && now >= due + settings.attestationGrace) {
    return new OAuthError('unauthorized_client', 'attestation overdue', { detail: `agent=${agent} attestation due=${day(due)}` })
  }
  if (standing.dormant && settings.onDormant === 'suspend') {
    return new OAuthError('unauthorized_client', 'agent dormant', { detail: `agent=${agent} dormant; attest to reinstate` })
  }
  if (ownerListed === false && settings.onOrphan === 'suspend') {
    return new OAuthError('unauthorized_client', 'agent orphaned', { detail: `agent=${agent} owner not in the owners directory` })
  }
  return undefined
}
