import type { ActorInstance, AgentId, Jti, Subject } from './claims.js'
import type { Revocation, RevocationMirror, RevocationQuery, RevocationVerdict, TokenFacts, UserIssuer } from './revocation.js'

/** Aggregate of every kill record on one target: the latest kill instant, and how many are in force. */
interface Kill {
  readonly ids: Set<string>
  latestAt: number
  inForce: number
}

const CLEAR: RevocationVerdict = { state: 'clear' }

/**
 * The in-memory revocation index: O(1) lookups per agent, user (issuer and
 * `sub`), agent+user and `jti`, so the hot path checks a token's whole chain
 * without a network round trip. Kills are keyed on issue time: a token
 * issued at or before a kill's instant is dead for good, and while a kill is
 * in force nothing new is issued. `jti`/`chain` entries are dropped once
 * past `expiresAt`.
 *
 * `now` is epoch seconds.
 */
export function createRevocationMirror(now: () => number): RevocationMirror {
  // Long, not split: a factory whose short methods share the indexes (records, kills, tokens, chains) that every check reads.
  const byId = new Map<string, Revocation>()
  const kills = new Map<string, Kill>()
  /** jti → expiresAt, for `jti` and `chain` kinds. */
  const tokens = new Map<Jti, number>()
  const chains = new Map<Jti, number>()

  // A user is (issuer, sub); a kill without an issuer holds the `sub` at every issuer and has
  // keys of its own, so a check costs two lookups per user key, never a scan. No issuer holds
  // NUL (the log and the codec refuse it), so `iss` then `sub` cannot be read two ways.
  const agentKey = (agent: AgentId) => `a\u0000${agent}`
  const subKey = (iss: UserIssuer, sub: Subject) => (iss === null ? `S\u0000${sub}` : `s\u0000${iss}\u0000${sub}`)
  const instanceKey = (agent: AgentId, instance: string) => `i\u0000${agent}\u0000${instance}`
  const pairKey = (agent: AgentId, iss: UserIssuer, sub: Subject) => (iss === null ? `P\u0000${agent}\u0000${sub}` : `p\u0000${agent}\u0000${iss}\u0000${sub}`)

  function killKey(r: Revocation): string | undefined {
    const t = r.target
    switch (t.kind) {
      case 'agent':
        return agentKey(t.agent)
      case 'sub':
        return subKey(t.iss, t.sub)
      case 'agent_sub':
        return pairKey(t.agent, t.iss, t.sub)
      case 'instance':
        return instanceKey(t.agent, t.instance)
      case 'jti':
      case 'chain':
        return undefined
    }
  }

  function recompute(key: string): void {
    const kill = kills.get(key)
    if (kill === undefined) return
    kill.latestAt = -Infinity
    kill.inForce = 0
    for (const id of kill.ids) {
      const r = byId.get(id)
      if (r === undefined) continue
      kill.latestAt = Math.max(kill.latestAt, r.createdAt)
      if (r.liftedAt === undefined) kill.inForce++
    }
  }

  function remove(r: Revocation): void {
    byId.delete(r.id)
    const key = killKey(r)
    if (key !== undefined) {
      kills.get(key)?.ids.delete(r.id)
      recompute(key)
      return
    }
    const t = r.target as { kind: 'jti' | 'chain'; jti: Jti }
    const map = t.kind === 'jti' ? tokens : chains
    // Only forget the jti if no other record still names it.
    if (![...byId.values()].some((o) => o.target.kind === t.kind && (o.target as { jti: Jti }).jti === t.jti)) map.delete(t.jti)
  }

  function apply(r: Revocation): void {
    const previous = byId.get(r.id)
    if (previous !== undefined) remove(previous)
    if (r.expiresAt !== undefined && r.expiresAt <= now()) return
    byId.set(r.id, r)
    const key = killKey(r)
    if (key !== undefined) {
      let kill = kills.get(key)
      if (kill === undefined) {
        kill = { ids: new Set(), latestAt: -Infinity, inForce: 0 }
        kills.set(key, kill)
      }
      kill.ids.add(r.id)
      recompute(key)
      return
    }
    const t = r.target as { kind: 'jti' | 'chain'; jti: Jti }
    const map = t.kind === 'jti' ? tokens : chains
    map.set(t.jti, Math.max(map.get(t.jti) ?? -Infinity, r.expiresAt ?? Infinity))
  }

  const live = (map: Map<Jti, number>, jti: Jti) => {
    const exp = map.get(jti)
    return exp !== undefined && exp > now()
  }

  /** Dead if the kill is in force, or was made at or after the token's issue time. */
  const killed = (key: string, issuedAt: number): boolean => {
    const kill = kills.get(key)
    return kill !== undefined && kill.ids.size > 0 && (kill.inForce > 0 || issuedAt <= kill.latestAt)
  }
  const inForceKill = (key: string): boolean => (kills.get(key)?.inForce ?? 0) > 0

  function checkChain(
    actors: readonly AgentId[],
    instances: readonly ActorInstance[] | undefined,
    iss: string,
    sub: Subject,
    chain: readonly Jti[],
    issuedAt: number,
  ): string | undefined {
    if (killed(subKey(iss, sub), issuedAt) || killed(subKey(null, sub), issuedAt)) return `user ${sub} of ${iss} killed`
    for (const actor of actors) {
      if (killed(agentKey(actor), issuedAt)) return `chain agent ${actor} killed`
      if (killed(pairKey(actor, iss, sub), issuedAt) || killed(pairKey(actor, null, sub), issuedAt)) {
        return `chain agent ${actor} killed for ${sub} of ${iss}`
      }
    }
    // An instance kill covers every token a hop of which that copy asked for, like an agent kill.
    for (const hop of instances ?? []) {
      if (killed(instanceKey(hop.agent, hop.instance), issuedAt)) return `chain agent ${hop.agent} instance ${hop.instance} killed`
    }
    for (const jti of chain) if (live(chains, jti)) return `ancestor chain ${jti} revoked`
    return undefined
  }

  // Periodic pruning keeps expired jti/chain entries from accumulating.
  let nextPrune = 0
  function prune(): void {
    const t = now()
    if (t < nextPrune) return
    nextPrune = t + 60
    for (const r of [...byId.values()]) if (r.expiresAt !== undefined && r.expiresAt <= t) remove(r)
  }

  return {
    apply(record) {
      prune()
      apply(record)
    },
    replaceAll(records) {
      byId.clear()
      kills.clear()
      tokens.clear()
      chains.clear()
      for (const r of records) apply(r)
    },
    records: () => [...byId.values()].sort((a, b) => a.createdAt - b.createdAt),

    check(q: RevocationQuery): RevocationVerdict {
      if (inForceKill(agentKey(q.agent))) return { state: 'revoked', what: 'agent', detail: `agent ${q.agent} killed` }
      if (q.instance !== undefined && inForceKill(instanceKey(q.agent, q.instance))) {
        return { state: 'revoked', what: 'agent', detail: `agent ${q.agent} instance ${q.instance} killed` }
      }
      if (inForceKill(pairKey(q.agent, q.subIssuer, q.sub)) || inForceKill(pairKey(q.agent, null, q.sub))) {
        return { state: 'revoked', what: 'agent', detail: `agent ${q.agent} killed for ${q.sub} of ${q.subIssuer}` }
      }
      // The subject token (user token or parent) and everything above it.
      const detail = checkChain(q.actors, q.actorInstances, q.subIssuer, q.sub, q.ancestors, q.subjectIssuedAt)
      if (detail !== undefined) return { state: 'revoked', what: 'subject', detail }
      // A token revoked alone may not be the parent of new tokens either.
      for (const jti of q.ancestors) {
        if (live(tokens, jti)) return { state: 'revoked', what: 'subject', detail: `ancestor token ${jti} revoked` }
      }
      return CLEAR
    },

    checkToken(t: TokenFacts): RevocationVerdict {
      if (live(tokens, t.jti) || live(chains, t.jti)) return { state: 'revoked', what: 'subject', detail: `token ${t.jti} revoked` }
      const detail = checkChain(t.actors, t.instances, t.subIssuer, t.sub, t.chain, t.iat)
      return detail === undefined ? CLEAR : { state: 'revoked', what: 'subject', detail }
    },
  }
}
