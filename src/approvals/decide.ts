/**
 * A person's decision on an approval request, wherever it is made (the admin
 * API with an approver's key, or the sign-in page): entitlement first (the
 * person the grant names, and nobody else), then one conditional update, then
 * the `approval.decided` record. An approval that cannot be recorded is
 * cancelled: no token may follow a decision the log does not hold.
 */
import { isEntitled, parseApprovers, type Approver } from '../core/approval.js'
import type { AgentId, Subject } from '../core/claims.js'
import type { AuditLog } from '../audit/port.js'
import type { PolicyStore } from '../policy/port.js'
import type { ApprovalRow, ApprovalStore, DecidedVia } from './port.js'

export interface DecideDeps {
  readonly approvals: ApprovalStore
  readonly audit: AuditLog
  readonly policies: PolicyStore
  readonly now: () => number
}

export interface Decision {
  readonly id: string
  readonly decision: 'approved' | 'denied'
  readonly approver: Approver
  readonly via: Extract<DecidedVia, 'admin_api' | 'link'>
  readonly note?: string | undefined
  readonly clientAddress?: string | undefined
  readonly traceId?: string | undefined
  readonly requestId?: string | undefined
}

export type DecideOutcome =
  | { readonly outcome: 'decided'; readonly row: ApprovalRow }
  | { readonly outcome: 'unknown' }
  | { readonly outcome: 'not_entitled'; readonly row: ApprovalRow }
  | { readonly outcome: 'not_pending'; readonly row: ApprovalRow }
  | { readonly outcome: 'unrecorded' }

export async function decideApproval(d: Decision, deps: DecideDeps): Promise<DecideOutcome> {
  const row = await deps.approvals.get(d.id)
  if (row === undefined) return { outcome: 'unknown' }
  // The owner as the policy says it now: an owner who handed the agent over no longer decides for it.
  const owner = deps.policies.snapshot().get(row.agent as AgentId)?.owner ?? ''
  if (!isEntitled(parseApprovers(row.approvers), { userIssuer: row.subIss, sub: row.sub, owner }, d.approver)) return { outcome: 'not_entitled', row }
  const now = deps.now()
  const decided = await deps.approvals.decide(d.id, d.decision, d.approver.label, d.via, d.note, now)
  if (decided === undefined) return { outcome: 'not_pending', row: (await deps.approvals.get(d.id)) ?? row }
  try {
    await deps.audit.append({
      type: 'approval.decided',
      at: now,
      agent: row.agent as AgentId,
      sub: row.sub as Subject,
      subIssuer: row.subIss,
      approval: row.id,
      decision: d.decision,
      by: d.approver.label,
      via: d.via,
      note: d.note,
      clientAddress: d.clientAddress,
      traceId: d.traceId,
      requestId: d.requestId,
    })
  } catch {
    await deps.approvals.cancel({ kind: 'id', id: row.id }, 'decision not recorded', now).catch(() => {})
    return { outcome: 'unrecorded' }
  }
  return { outcome: 'decided', row: decided }
}
