/**
 * A kill of an agent or a user cancels its pending (and approved, not yet
 * redeemed) approval requests, so that the queue stops showing what can no
 * longer be issued. Every instance hears every kill; the conditional update
 * (store.ts) cancels each request once, and only the instance whose update
 * did writes its `approval.cancelled` record. A poll refuses a killed agent
 * or user anyway: this is for the approvers, not the guarantee.
 */
import type { AuditLog } from '../audit/port.js'
import type { AgentId, Subject } from '../core/claims.js'
import type { Revocation } from '../revocation/port.js'
import type { RevocationService } from '../revocation/service.js'
import type { Logger } from '../telemetry/log.js'
import type { ApprovalStore, CancelTarget } from './port.js'

function targetOf(r: Revocation): CancelTarget | undefined {
  const t = r.target
  switch (t.kind) {
    case 'agent':
      return { kind: 'agent', agent: t.agent }
    case 'sub':
      return { kind: 'sub', iss: t.iss, sub: t.sub }
    case 'agent_sub':
      return { kind: 'agent_sub', agent: t.agent, iss: t.iss, sub: t.sub }
    default:
      // A token or a chain: no request waits on one. An instance: a request is the agent's, and its
      // other copies may still redeem it (the killed copy's poll is refused).
      return undefined
  }
}

/** Starts cancelling on every kill in force; returns the stop function. */
export function cancelApprovalsOnKill(o: {
  revocations: RevocationService
  approvals: ApprovalStore
  audit: AuditLog
  now: () => number
  logger: Logger
}): () => void {
  return o.revocations.subscribe((r) => {
    const now = o.now()
    if (r.liftedAt !== undefined || (r.expiresAt !== undefined && r.expiresAt <= now)) return
    const target = targetOf(r)
    if (target === undefined) return
    const reason = `revoked (${r.target.kind} kill ${r.id})`
    void o.approvals
      .cancel(target, reason, now)
      .then((rows) =>
        Promise.all(
          rows.map((row) =>
            o.audit.append({
              type: 'approval.cancelled',
              at: now,
              agent: row.agent as AgentId,
              sub: row.sub as Subject,
              subIssuer: row.subIss,
              approval: row.id,
              reason,
            }),
          ),
        ),
      )
      .catch((err: unknown) => o.logger.warn({ revocation: r.id, cause: (err as Error).message }, 'approval requests not cancelled after a kill'))
  })
}
