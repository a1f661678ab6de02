import { createHash } from 'node:crypto'
import canonicalize from 'canonicalize'
import { weekMinutes, type DeclaredHours } from '../core/hours.js'
import type { AgentAuthentication, AgentPolicy, RateLimit } from './port.js'

/** One difference of one agent: `widens` when the new policy lets the agent get something the old one did not. */
export interface PolicyChange {
  readonly what: string
  readonly change: 'gains' | 'loses' | 'changes'
  readonly widens: boolean
  readonly old?: string
  readonly new?: string
}

export interface AgentDiff {
  readonly agent: string
  readonly status: 'added' | 'removed' | 'changed'
  readonly changes: readonly PolicyChange[]
}

export interface PolicyDiff {
  readonly agents: readonly AgentDiff[]
  readonly widens: boolean
}

const iso = (t: number) => new Date(t * 1000).toISOString().slice(0, 10)

/** Every credential the policy accepts, one string each: a credential in `new` not in `old` is a new way in. */
function credentials(a: AgentAuthentication): string[] {
  switch (a.method) {
    case 'client_secret_basic':
      return a.secretHashes.map((h) => `client_secret_basic secret ${createHash('sha256').update(h).digest('hex').slice(0, 12)}`)
    case 'private_key_jwt':
      if (a.jwksUri !== undefined) return [`private_key_jwt jwks_uri ${a.jwksUri}`]
      return a.keys.map((k) => {
        const jwk = k.key.export({ format: 'jwk' })
        const thumb = createHash('sha256')
          .update(canonicalize(jwk) ?? '')
          .digest('base64url')
          .slice(0, 12)
        return `private_key_jwt key ${k.kid ?? '(no kid)'} ${k.alg} ${thumb}`
      })
    case 'workload_identity':
      return [`workload_identity ${a.issuer} ${a.subject}`]
    case 'spiffe':
      return [`spiffe ${a.prefix ? 'under ' : ''}${a.spiffeId}`]
  }
}

const delegatorText = (r: AgentPolicy['delegators'][number]) => {
  const claims = Object.entries(r.claims)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${[...v].sort().join('|')}`)
  return claims.length === 0 ? r.issuer : `${r.issuer} with ${claims.join(', ')}`
}

type Delegator = AgentPolicy['delegators'][number]

/** `narrow` admits no user `wide` does not: the same issuer, and each of `wide`'s claim rules held at least as tightly. */
const covers = (wide: Delegator, narrow: Delegator) =>
  wide.issuer === narrow.issuer && Object.entries(wide.claims).every(([claim, accepted]) => narrow.claims[claim]?.every((v) => accepted.includes(v)) === true)

/** A user rule gained widens only when no old rule already admitted every user it admits. */
function delegatorChanges(o: readonly Delegator[], n: readonly Delegator[]): PolicyChange[] {
  return setChanges('users', o.map(delegatorText), n.map(delegatorText)).map((c) => {
    if (c.change !== 'gains') return c
    const rule = n.find((r) => delegatorText(r) === c.new)!
    return o.some((old) => covers(old, rule)) ? { ...c, widens: false } : c
  })
}

const rateText = (r: RateLimit | undefined) => (r === undefined ? 'none' : `${r.perSecond}/s burst ${r.burst}`)
/** A limit removed, a faster rate or a larger burst lets more through. */
const rateWidens = (o: RateLimit | undefined, n: RateLimit | undefined) =>
  n === undefined ? o !== undefined : o !== undefined && (n.perSecond > o.perSecond || n.burst > o.burst)

const hoursText = (h: DeclaredHours | undefined) => (h === undefined ? 'always' : `${h.text} ${h.timeZone}`)

/** `n` admits an instant `o` did not: no window any more, or one not inside the old (another zone counts as not inside). */
function hoursWiden(o: DeclaredHours | undefined, n: DeclaredHours | undefined): boolean {
  if (n === undefined) return o !== undefined
  if (o === undefined) return false
  if (o.timeZone !== n.timeZone) return true
  const [before, after] = [weekMinutes(o), weekMinutes(n)]
  return after.some((m, i) => m === 1 && before[i] === 0)
}

/** A window gained narrows; one lost widens (the agent gets tokens at any time); one changed widens unless it only shrank. */
function hoursChanges(what: string, o: DeclaredHours | undefined, n: DeclaredHours | undefined): PolicyChange[] {
  const [a, b] = [hoursText(o), hoursText(n)]
  if (a === b) return []
  const widens = hoursWiden(o, n)
  return [{ what, change: o === undefined ? 'gains' : n === undefined ? 'loses' : 'changes', widens, old: a, new: b }]
}

function setChanges(what: string, o: Iterable<string>, n: Iterable<string>): PolicyChange[] {
  const before = new Set(o)
  const after = new Set(n)
  const out: PolicyChange[] = []
  for (const x of [...after].sort()) if (!before.has(x)) out.push({ what, change: 'gains', widens: true, new: x })
  for (const x of [...before].sort()) if (!after.has(x)) out.push({ what, change: 'loses', widens: false, old: x })
  return out
}

function numberChange(what: string, o: number, n: number, text: (x: number) => string = String): PolicyChange[] {
  if (o === n) return []
  return [{ what, change: n > o ? 'gains' : 'loses', widens: n > o, old: text(o), new: text(n) }]
}

/** What `n` grants that `o` did not (and the reverse), agent by agent. */
function agentChanges(o: AgentPolicy, n: AgentPolicy): PolicyChange[] {
  const changes: PolicyChange[] = []
  changes.push(...setChanges('audience', o.grants.keys(), n.grants.keys()))
  for (const [aud, g] of n.grants) {
    const before = o.grants.get(aud)
    if (before !== undefined) {
      changes.push(...setChanges(`scope at ${aud}`, before.scopes, g.scopes), ...hoursChanges(`hours at ${aud}`, before.hours, g.hours))
    } else changes.push(...[...g.scopes].sort().map((s): PolicyChange => ({ what: `scope at ${aud}`, change: 'gains', widens: true, new: s })))
  }
  changes.push(...numberChange('ttl max (s)', o.ttl.max, n.ttl.max), ...numberChange('ttl default (s)', o.ttl.default, n.ttl.default))
  changes.push(...numberChange('delegation depth', o.delegation.maxDepth, n.delegation.maxDepth))
  changes.push(...setChanges('sub-agent', o.delegation.subAgents, n.delegation.subAgents))
  changes.push(...delegatorChanges(o.delegators, n.delegators))
  if (o.authentication.method !== n.authentication.method) {
    changes.push({ what: 'authentication', change: 'changes', widens: true, old: o.authentication.method, new: n.authentication.method })
  }
  changes.push(...setChanges('credential', credentials(o.authentication), credentials(n.authentication)))
  changes.push(...numberChange('expiry', o.expires, n.expires, iso))
  changes.push(...hoursChanges('hours', o.hours, n.hours))
  for (const scope of ['agent', 'user'] as const) {
    const [a, b] = [o.rateLimit[scope], n.rateLimit[scope]]
    if (rateText(a) !== rateText(b)) {
      const widens = rateWidens(a, b)
      changes.push({ what: `rate limit (${scope})`, change: widens ? 'gains' : 'loses', widens, old: rateText(a), new: rateText(b) })
    }
  }
  if (o.owner !== n.owner) changes.push({ what: 'owner', change: 'changes', widens: false, old: o.owner, new: n.owner })
  return changes
}

/** Compares two policy sets: a new agent, or anything an existing one gains, widens. */
export function diffPolicies(old: readonly AgentPolicy[], now: readonly AgentPolicy[]): PolicyDiff {
  const before = new Map(old.map((p) => [p.agent as string, p]))
  const after = new Map(now.map((p) => [p.agent as string, p]))
  const agents: AgentDiff[] = []
  for (const id of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const o = before.get(id)
    const n = after.get(id)
    if (o === undefined) {
      agents.push({ agent: id, status: 'added', changes: [{ what: 'agent', change: 'gains', widens: true, new: n!.source }] })
    } else if (n === undefined) {
      agents.push({ agent: id, status: 'removed', changes: [{ what: 'agent', change: 'loses', widens: false, old: o.source }] })
    } else {
      const changes = agentChanges(o, n)
      if (changes.length > 0) agents.push({ agent: id, status: 'changed', changes })
    }
  }
  return { agents, widens: agents.some((a) => a.changes.some((c) => c.widens)) }
}
