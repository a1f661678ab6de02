import type { AgentId, Jti, Subject } from '../core/claims.js'
import type { RevocationQuery, RevocationStore, RevocationVerdict } from './port.js'

/**
 * In-memory revocation list for the embedded default and tests. Kills are
 * keyed on time: a token issued before a kill stays dead after it is lifted.
 */
export interface MemoryRevocationStore extends RevocationStore {
  /** Stops new issuance to `agent` and kills its tokens issued before `at` (epoch seconds). */
  killAgent(agent: AgentId, at: number): void
  liftAgent(agent: AgentId): void
  killUser(sub: Subject, at: number): void
  liftUser(sub: Subject): void
  revokeToken(jti: Jti): void
}

interface Kill {
  at: number
  inForce: boolean
}

export function createMemoryRevocationStore(): MemoryRevocationStore {
  const agents = new Map<AgentId, Kill>()
  const users = new Map<Subject, Kill>()
  const tokens = new Set<Jti>()

  // A subject token is dead if its user, or any agent in its chain, was killed after it was issued.
  const killedSince = (kill: Kill | undefined, issuedAt: number): boolean =>
    kill !== undefined && (kill.inForce || issuedAt <= kill.at)

  return {
    check(q: RevocationQuery): RevocationVerdict {
      if (agents.get(q.agent)?.inForce) return { state: 'revoked', what: 'agent', detail: `agent ${q.agent} killed` }
      if (killedSince(users.get(q.sub), q.subjectIssuedAt)) {
        return { state: 'revoked', what: 'subject', detail: `user ${q.sub} killed` }
      }
      for (const actor of q.actors) {
        if (killedSince(agents.get(actor), q.subjectIssuedAt)) {
          return { state: 'revoked', what: 'subject', detail: `ancestor agent ${actor} killed` }
        }
      }
      for (const jti of q.ancestors) {
        if (tokens.has(jti)) return { state: 'revoked', what: 'subject', detail: `ancestor token ${jti} revoked` }
      }
      return { state: 'clear' }
    },
    killAgent: (agent, at) => void agents.set(agent, { at, inForce: true }),
    liftAgent: (agent) => lift(agents.get(agent)),
    killUser: (sub, at) => void users.set(sub, { at, inForce: true }),
    liftUser: (sub) => lift(users.get(sub)),
    revokeToken: (jti) => void tokens.add(jti),
  }
}

function lift(kill: Kill | undefined): void {
  if (kill !== undefined) kill.inForce = false
}
