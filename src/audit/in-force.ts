/**
 * The audit records of what is in force: each agent's policy file (by hash)
 * as the set is loaded and reloaded, and the signing key as it changes.
 */
import type { AgentId } from '../core/claims.js'
import type { AgentPolicy } from '../policy/port.js'
import type { ReloadablePolicyStore } from '../policy/watch.js'
import type { Logger } from '../telemetry/log.js'
import type { SigningKeyRing } from '../tokens/keys.js'
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

export interface InForceSources {
  readonly audit: AuditLog
  /** The set loaded at start, and the watcher that reloads it. */
  readonly policies: { readonly initial: readonly AgentPolicy[]; readonly store: Pick<ReloadablePolicyStore, 'subscribe'> }
  readonly keys: Pick<SigningKeyRing, 'current' | 'onSwitch'>
  /** The `kid` the durable log last recorded; undefined when the log keeps no history across starts. */
  readonly lastRecordedKid: (() => Promise<string | undefined>) | undefined
  /** Epoch seconds. */
  readonly now: () => number
  readonly logger: Logger
}

/**
 * Records what is in force at start (the policy set; the signing key when
 * it differs from the one the log last recorded) and at every later reload
 * or key switch. Resolves once the start records are durable; a later record
 * that cannot be written is logged, and the change stands.
 */
export async function recordInForce(o: InForceSources): Promise<void> {
  const recordPolicies = policyRecorder(o.audit, o.now)
  await recordPolicies(o.policies.initial)
  o.policies.store.subscribe({
    onLoaded: (_agents, set) =>
      void recordPolicies(set).catch((err: unknown) =>
        o.logger.error({ module: 'policy', error: 'audit_unavailable', code: codeOf(err) }, 'policy reload not recorded in the audit log'),
      ),
  })
  if (o.lastRecordedKid !== undefined) await recordKeyInForce(o.audit, o.keys.current.kid, await o.lastRecordedKid(), o.now())
  o.keys.onSwitch(
    (key, previous) =>
      void recordKeyInForce(o.audit, key.kid, previous.kid, o.now()).catch((err: unknown) =>
        o.logger.error({ module: 'keys', kid: key.kid, code: codeOf(err) }, 'key rotation not recorded in the audit log'),
      ),
  )
}

const codeOf = (err: unknown) => (err as { code?: string }).code
