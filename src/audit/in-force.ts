/**
 * The audit records of what is in force: each agent's policy file (by hash)
 * as the set is loaded and reloaded, and the signing key as it changes.
 */
import type { AgentId } from '../core/claims.js'
import type { AgentPolicy } from '../policy/port.js'
import type { AuditLog } from './port.js'

/**
 * Returns the function to call with every policy set loaded: it appends a
 * `policy.loaded` record for each file new or changed since the last set, a
 * `policy.unloaded` record for each agent gone, and resolves once all are
 * durable.
 */
export function policyRecorder(audit: AuditLog, now: () => number): (set: readonly AgentPolicy[]) => Promise<void> {
  const inForce = new Map<AgentId, AgentPolicy>()
  return async (set) => {
    const at = now()
    const seen = new Set<AgentId>()
    const writes: Promise<unknown>[] = []
    for (const p of set) {
      seen.add(p.agent)
      const before = inForce.get(p.agent)
      if (before?.sourceHash === p.sourceHash && before.source === p.source) continue
      inForce.set(p.agent, p)
      writes.push(audit.append({ type: 'policy.loaded', at, agent: p.agent, source: p.source, sha256: p.sourceHash }))
    }
    for (const [agent, p] of inForce) {
      if (seen.has(agent)) continue
      inForce.delete(agent)
      writes.push(audit.append({ type: 'policy.unloaded', at, agent, source: p.source, sha256: p.sourceHash }))
    }
    await Promise.all(writes)
  }
}

/** Appends `key.rotated` when the key that signs now is not the one the log last recorded (`previousKid`). */
export async function recordKeyInForce(audit: AuditLog, kid: string, previousKid: string | undefined, at: number): Promise<void> {
  if (previousKid !== kid) await audit.append({ type: 'key.rotated', at, kid, previousKid })
}
