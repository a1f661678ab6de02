/**
 * Each token of a delegation tree as a responder needs to see it: revoked or
 * killed (and by what), never sent, expired, or live. Revocations are read
 * from the tree's revocation records (`GET /admin/audit/chains/{jti}`) and
 * held against each token by the same revocation index the broker checks
 * tokens with, so the page says what the broker would answer.
 */
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { AgentId, Jti, Subject } from '../core/claims.js'
import type { Revocation, RevocationTarget } from '../revocation/port.js'

/** A tree node as the admin API returns it (src/http/openapi.ts DelegationNode). */
export interface ChainNode {
  readonly jti: string
  readonly agent: string
  readonly actors: readonly string[]
  readonly sub: string
  readonly sub_iss: string | null
  readonly issued_at: string
  readonly expires_at: string
  readonly agent_instance: string | null
  readonly withheld: boolean
  readonly children: readonly ChainNode[]
}

/** A revocation record of the tree (an audit entry's `record`). */
export interface RevocationRecordEntry {
  readonly record: Record<string, unknown>
}

export type TokenState =
  { readonly state: 'killed' | 'revoked'; readonly detail: string } | { readonly state: 'withheld' | 'expired' | 'active'; readonly detail?: undefined }

const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
// Identifiers as the log recorded them: the broker checked each when it wrote the record.
const asAgent = (s: string) => s as AgentId
const asJti = (s: string) => s as Jti
const asSub = (s: string) => s as Subject
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined)

/** The revocation a `revocation.created` / `revocation.lifted` record states, or undefined when it states none. */
export function revocationOf(record: Record<string, unknown>): Revocation | undefined {
  const r = record['revocation'] as Record<string, unknown> | undefined
  if (r === undefined || typeof r !== 'object') return undefined
  const id = text(r['id'])
  const createdAt = num(r['created_at'])
  if (id === undefined || createdAt === undefined) return undefined
  const [a, u, j, instance, iss] = [text(r['agent']), text(r['sub']), text(r['jti']), text(r['instance']), text(r['iss']) ?? null]
  const [agent, sub, jti] = [a === undefined ? a : asAgent(a), u === undefined ? u : asSub(u), j === undefined ? j : asJti(j)]
  let target: RevocationTarget | undefined
  switch (r['kind']) {
    case 'jti':
    case 'chain':
      if (jti !== undefined) target = { kind: r['kind'], jti }
      break
    case 'agent':
      if (agent !== undefined) target = { kind: 'agent', agent }
      break
    case 'sub':
      if (sub !== undefined) target = { kind: 'sub', sub, iss }
      break
    case 'agent_sub':
      if (agent !== undefined && sub !== undefined) target = { kind: 'agent_sub', agent, sub, iss }
      break
    case 'instance':
      if (agent !== undefined && instance !== undefined) target = { kind: 'instance', agent, instance }
      break
  }
  if (target === undefined) return undefined
  return {
    id,
    target,
    reason: text(r['reason']) ?? '',
    createdBy: text(r['created_by']) ?? '',
    createdAt,
    expiresAt: num(r['expires_at']),
    liftedAt: num(r['lifted_at']),
    liftedBy: text(r['lifted_by']),
  }
}

/** Each token's state, by `jti`; `now` is epoch seconds. */
export function tokenStates(root: ChainNode, revocations: readonly RevocationRecordEntry[], now: number): Map<string, TokenState> {
  // At instant 0 no revocation of a token has run out: a token once revoked is shown revoked, expired or not.
  const index = createRevocationMirror(() => 0)
  // Oldest first: a lift replaces its kill (same id).
  for (const entry of revocations) {
    const r = revocationOf(entry.record)
    if (r !== undefined) index.apply(r)
  }
  const states = new Map<string, TokenState>()
  const walk = (n: ChainNode, ancestors: readonly string[], instances: readonly { agent: AgentId; instance: string }[]) => {
    const hops = n.agent_instance === null ? instances : [{ agent: asAgent(n.agent), instance: n.agent_instance }, ...instances]
    const verdict = index.checkToken({
      jti: asJti(n.jti),
      sub: asSub(n.sub),
      subIssuer: n.sub_iss ?? '',
      actors: n.actors.map(asAgent),
      chain: ancestors.map(asJti),
      iat: Math.floor(Date.parse(n.issued_at) / 1000),
      instances: hops,
    })
    if (verdict.state === 'revoked') states.set(n.jti, { state: verdict.detail.includes(' killed') ? 'killed' : 'revoked', detail: verdict.detail })
    else if (n.withheld) states.set(n.jti, { state: 'withheld' })
    else if (Date.parse(n.expires_at) / 1000 <= now) states.set(n.jti, { state: 'expired' })
    else states.set(n.jti, { state: 'active' })
    for (const c of n.children) walk(c, [...ancestors, n.jti], hops)
  }
  walk(root, [], [])
  return states
}
