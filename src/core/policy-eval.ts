import type { ActClaim, AgentId, Jti, MayActClaim } from './claims.js'
import { actorsOf } from './claims.js'
import { OAuthError, recordable, SUBJECT_TOKEN_UNACCEPTABLE } from './errors.js'
import { judgeHours } from './hours.js'
import type { AgentPolicy, DelegatorRule } from '../policy/port.js'
import type { UserSubject, VerifiedSubject } from '../tokens/port.js'

export interface PolicyInput {
  /** This broker's issuer identifier (for `may_act.iss`). */
  readonly issuer: string
  readonly policy: AgentPolicy
  readonly subject: VerifiedSubject
  /**
   * For a re-delegation, the policies of every agent already in the chain,
   * newest first: `[0]` is the parent's. A missing one refuses the chain.
   */
  readonly chainPolicies: readonly (AgentPolicy | undefined)[]
  /** `resource` and `audience` values together, as sent. */
  readonly audiences: readonly string[]
  /** Requested scopes; undefined when the request left `scope` out. */
  readonly scopes: readonly string[] | undefined
  /** Requested lifetime in seconds, when the request named one. */
  readonly requestedTtl: number | undefined
  /** Epoch seconds. */
  readonly now: number
}

/** What the policy allows for this request: everything the token will carry. */
export interface Grant {
  readonly audience: string
  readonly scopes: readonly string[]
  readonly expiresAt: number
  /** Agents newest first, the requesting agent included. */
  readonly actors: readonly AgentId[]
  /** Ancestor `jti`s, root first; empty on a first hop. */
  readonly ancestors: readonly Jti[]
  /** Issuer of the user's upstream token. */
  readonly userIssuer: string
  /** A re-delegation: the parent token's `act`, the older hops as they were (their instances kept). */
  readonly parentAct?: ActClaim | undefined
}

/**
 * The checks of `evaluatePolicy`, in the order it makes them. `agent.delegator` to `delegation.subagent`
 * apply to one kind of subject each (a user's token, or a parent Mandate token); `policy.hours` and
 * `grant.hours` are made only when the policy, or the grant asked for, has hours.
 */
export const POLICY_CHECKS = [
  'agent.in_force',
  'policy.hours',
  'agent.delegator',
  'subject.not_delegated',
  'subject.may_act',
  'delegation.chain',
  'delegation.depth',
  'delegation.subagent',
  'audience',
  'grant',
  'grant.hours',
  'scope',
  'ttl',
] as const
export type PolicyCheck = (typeof POLICY_CHECKS)[number]

/**
 * Told the name of each check just before it is made: a check it was told of that the evaluation then threw
 * in is the one that refused. Only explain passes one; the exchange's calls cost a test of `undefined` each.
 * `detail` says what a check found when it passes too (the hours checks: the local time and the window).
 */
export type PolicyTrace = (check: PolicyCheck, detail?: string) => void

/** What the token endpoint says when the policy's hours exclude now; the local time and window go in `detail`. */
export const OUTSIDE_AGENT_HOURS = "outside the agent's hours"

/**
 * Decides what an authenticated agent may receive for a verified subject.
 * Pure: no I/O, no clock. Throws `OAuthError` with the code docs/ARCHITECTURE.md names (step 4):
 * `unauthorized_client` for an expired or ownerless policy or outside its hours, `invalid_request`
 * for an unacceptable subject or chain, `invalid_target` for an audience (a grant outside its hours
 * included: it does not apply then), `invalid_scope` for scopes.
 */
export function evaluatePolicy(input: PolicyInput, trace?: PolicyTrace): Grant {
  const { policy, subject, now } = input
  trace?.('agent.in_force')
  checkPolicyInForce(policy, now, 'agent')
  // Only a policy with hours pays for reading the local time.
  if (policy.hours !== undefined) {
    const judged = judgeHours(policy.hours, now)
    trace?.('policy.hours', judged.detail)
    if (!judged.inside) throw new OAuthError('unauthorized_client', OUTSIDE_AGENT_HOURS, { detail: judged.detail })
  }

  const { actors, ancestors, userIssuer, parentAct } = checkDelegation(input, trace)
  trace?.('audience')
  const audience = selectAudience(input)
  trace?.('grant')
  const grant = policy.grants.get(audience)
  if (grant === undefined) {
    throw new OAuthError('invalid_target', AUDIENCE_NOT_PERMITTED, { detail: `aud=${recordable(audience)}` })
  }
  if (grant.hours !== undefined) {
    const judged = judgeHours(grant.hours, now)
    trace?.('grant.hours', judged.detail)
    // Outside its hours the grant does not apply: the same answer as an audience never granted (RFC 8707 §2).
    if (!judged.inside) throw new OAuthError('invalid_target', AUDIENCE_NOT_PERMITTED, { detail: `aud=${audience} ${judged.detail}` })
  }

  trace?.('scope')
  const authority = subjectAuthority(subject)
  const allowed = authority === undefined ? grant.scopes : intersect(grant.scopes, authority)
  let scopes: string[]
  if (input.scopes === undefined) {
    scopes = grant.defaultScopes.filter((s) => allowed.has(s))
    if (scopes.length === 0) {
      throw new OAuthError('invalid_scope', 'no default scope is available; request one', { detail: `aud=${audience}` })
    }
  } else {
    if (input.scopes.length === 0) throw new OAuthError('invalid_scope', 'scope is empty')
    const beyond = input.scopes.filter((s) => !allowed.has(s))
    if (beyond.length > 0) {
      throw new OAuthError('invalid_scope', 'requested scope exceeds what this agent may get for this user', {
        detail: `beyond=${beyond.map(recordable).join(' ')}`,
      })
    }
    scopes = [...input.scopes]
  }

  trace?.('ttl')
  const ttl = Math.min(input.requestedTtl ?? policy.ttl.default, policy.ttl.max)
  // A minted token never outlives its subject token (first hop included), nor the policy that allowed it.
  // Whole seconds: JWT times may be fractional, RFC 6749 expires_in may not.
  const expiresAt = Math.floor(Math.min(now + ttl, subjectExpiry(subject), policy.expires))
  if (expiresAt <= now) {
    throw new OAuthError('invalid_request', SUBJECT_TOKEN_UNACCEPTABLE, { detail: 'subject token has no lifetime left' })
  }
  return { audience, scopes, expiresAt, actors, ancestors, userIssuer, ...(parentAct === undefined ? {} : { parentAct }) }
}

const AUDIENCE_NOT_PERMITTED = 'audience not permitted for this agent'

function checkPolicyInForce(policy: AgentPolicy, now: number, who: string): void {
  if (policy.owner.trim() === '') {
    throw new OAuthError('unauthorized_client', 'agent policy has no owner', { detail: `${who}=${policy.agent}` })
  }
  if (now >= policy.expires) {
    throw new OAuthError('unauthorized_client', 'agent policy has expired', { detail: `${who}=${policy.agent}` })
  }
}

function unacceptable(detail: string): OAuthError {
  return new OAuthError('invalid_request', SUBJECT_TOKEN_UNACCEPTABLE, { detail })
}

type Delegation = Pick<Grant, 'actors' | 'ancestors' | 'userIssuer' | 'parentAct'>

function checkDelegation(input: PolicyInput, trace: PolicyTrace | undefined): Delegation {
  const { policy, subject } = input
  if (subject.kind === 'user') {
    trace?.('agent.delegator')
    if (!policy.delegators.some((rule) => admits(rule, subject))) {
      throw unacceptable(`user ${subject.sub} of ${subject.issuer} may not delegate to ${policy.agent}`)
    }
    // An upstream token that is itself delegated would lose its actor here; refuse rather than drop it.
    trace?.('subject.not_delegated')
    if (subject.claims['act'] !== undefined) throw unacceptable('subject token is already delegated (act)')
    trace?.('subject.may_act')
    checkMayAct(readMayAct(subject.claims['may_act']), policy.agent, input.issuer)
    trace?.('delegation.depth')
    if (policy.delegation.maxDepth < 1) throw unacceptable('delegation depth exceeded')
    return { actors: [policy.agent], ancestors: [], userIssuer: subject.issuer }
  }

  // The user's may_act named the first agent; from there its policy (sub_agents, max_depth) decides who
  // acts next. A parent minted before may_act stopped being copied may still carry one: it is ignored.
  trace?.('delegation.chain')
  const parent = subject.claims
  const previous = actorsOf(parent.act)
  if (previous[0] !== parent.client_id) throw unacceptable('parent act does not name its client')
  if (previous.includes(policy.agent)) throw unacceptable(`cyclic delegation: ${policy.agent} already in chain`)
  const depth = previous.length + 1
  trace?.('delegation.depth')
  if (depth > policy.delegation.maxDepth) throw unacceptable(`delegation depth ${depth} exceeds ${policy.agent}'s limit`)
  // Every agent already in the chain must still be in force, and its depth limit holds for the whole chain.
  trace?.('delegation.chain')
  previous.forEach((agent, i) => {
    const p = input.chainPolicies[i]
    if (p === undefined || p.agent !== agent) throw unacceptable(`no policy for chain agent ${agent}`)
    try {
      checkPolicyInForce(p, input.now, 'chain agent')
    } catch (err) {
      throw unacceptable((err as OAuthError).detail ?? 'chain policy not in force')
    }
    if (depth > p.delegation.maxDepth) throw unacceptable(`delegation depth ${depth} exceeds ${agent}'s limit`)
  })
  trace?.('delegation.subagent')
  if (!input.chainPolicies[0]!.delegation.subAgents.has(policy.agent)) {
    throw unacceptable(`${parent.client_id} may not delegate to ${policy.agent}`)
  }
  return {
    actors: [policy.agent, ...previous],
    ancestors: [...(parent.chain ?? []), parent.jti],
    userIssuer: parent.sub_id.iss,
    parentAct: parent.act,
  }
}

function admits(rule: DelegatorRule, subject: UserSubject): boolean {
  if (rule.issuer !== subject.issuer) return false
  for (const [name, accepted] of Object.entries(rule.claims)) {
    const value = subject.claims[name]
    const held = typeof value === 'string' ? [value] : Array.isArray(value) ? value : []
    if (!held.some((v) => typeof v === 'string' && accepted.includes(v))) return false
  }
  return true
}

/** Reads a user token's `may_act` (RFC 8693 §4.4); anything malformed refuses the subject. */
function readMayAct(value: unknown): MayActClaim | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw unacceptable('malformed may_act')
  const { sub, iss } = value as Record<string, unknown>
  if (typeof sub !== 'string' || (iss !== undefined && typeof iss !== 'string')) throw unacceptable('malformed may_act')
  return iss === undefined ? { sub: sub as AgentId } : { sub: sub as AgentId, iss }
}

/** RFC 8693 §4.4: when the user named who may act for it, that must be this agent (of this broker). */
function checkMayAct(mayAct: MayActClaim | undefined, agent: AgentId, issuer: string): void {
  if (mayAct === undefined) return
  if (mayAct.sub !== agent) throw unacceptable(`may_act names another actor`)
  if (mayAct.iss !== undefined && mayAct.iss !== issuer) throw unacceptable(`may_act names another issuer`)
}

function selectAudience(input: PolicyInput): string {
  const distinct = [...new Set(input.audiences)]
  const [audience] = distinct
  if (audience === undefined) throw new OAuthError('invalid_request', 'resource or audience is required')
  if (distinct.length > 1) {
    throw new OAuthError('invalid_target', 'exactly one audience may be requested', { detail: distinct.map(recordable).join(' ') })
  }
  if (input.subject.kind === 'mandate' && input.subject.claims.aud !== audience) {
    throw new OAuthError('invalid_target', 'audience must equal the parent token audience', {
      detail: `aud=${recordable(audience)} parent=${input.subject.claims.aud}`,
    })
  }
  return audience
}

function subjectAuthority(subject: VerifiedSubject): ReadonlySet<string> | undefined {
  return subject.kind === 'user' ? subject.scopes : new Set(subject.claims.scope.split(' '))
}

function subjectExpiry(subject: VerifiedSubject): number {
  return subject.kind === 'user' ? subject.exp : subject.claims.exp
}

function intersect(a: ReadonlySet<string>, b: ReadonlySet<string>): Set<string> {
  const out = new Set<string>()
  for (const x of a) if (b.has(x)) out.add(x)
  return out
}
