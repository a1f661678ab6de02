/**
 * The approvals queue (human approval, OpenID CIBA): list and show requests
 * (auditor, admin), and decide one (approver, admin) as the person the key
 * belongs to, who must be the one the request's grant names.
 */
import type { Hono } from 'hono'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import { APPROVAL_STATUSES } from '../../storage/schema.js'
import { decideApproval, type DecideDeps } from '../../approvals/decide.js'
import type { ApprovalRow } from '../../approvals/port.js'
import type { AgentId } from '../../core/claims.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import { AdminNote, readJsonBody, refuseInvalid } from '../admin-input.js'
import type { AppEnv } from '../env.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, parametersOf } from '../openapi.js'
import type { Logger } from '../../telemetry/log.js'

const MAX_PAGE = 500
const ApprovalId = z.string().regex(/^apr_[A-Za-z0-9_-]{16,64}$/)
const Instant = z.iso.datetime()

const ListQuery = z.strictObject({
  status: z.enum(APPROVAL_STATUSES).optional().describe('Only requests in this state (a pending request past its expiry is `expired`).'),
  agent: z.string().min(1).max(128).optional().describe('Only this agent’s requests.'),
  limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(50),
  offset: z.coerce.number().int().min(0).max(1_000_000).default(0),
})

const DecideBody = z.strictObject({
  decision: z.enum(['approve', 'deny']),
  note: AdminNote.optional().describe('Why, kept in the `approval.decided` record.'),
})

export const ApprovalBody = z
  .strictObject({
    id: z.string().describe('The approval’s public id (never the agent’s `auth_req_id`).'),
    status: z.enum(APPROVAL_STATUSES),
    agent: z.string(),
    user: z.strictObject({ iss: z.string(), sub: z.string() }),
    audience: z.string(),
    scopes: z.array(z.string()),
    authorization_details: z.array(z.record(z.string(), z.unknown())).describe('RFC 9396 details, as validated against the grant’s schemas.'),
    binding_message: z.string().nullable().describe('What the agent shows its user: the approver compares it.'),
    purpose: z.string().nullable().describe('The agent’s purpose, from its policy (null when the policy is gone).'),
    owner: z.string().nullable(),
    approvers: z.string().describe('`user`, `owner` or `group:NAME`.'),
    created_at: Instant,
    expires_at: Instant,
    decided_at: Instant.nullable(),
    decided_by: z.string().nullable(),
    decided_via: z.enum(['admin_api', 'link', 'reuse', 'revocation']).nullable(),
    note: z.string().nullable(),
  })
  .meta({ id: 'Approval' })
const ApprovalList = z.strictObject({ approvals: z.array(ApprovalBody), total: z.int() }).meta({ id: 'ApprovalList' })

const adminKey = [{ adminKey: [] }]
const idParam = parametersOf('path', z.object({ id: ApprovalId.describe('The approval id.') }))
const listDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'listApprovals',
  summary: 'The approvals queue (auditor, admin)',
  security: adminKey,
  parameters: parametersOf('query', ListQuery),
  responses: { 200: { description: 'A page of requests, newest first.', content: jsonContent(ApprovalList) }, ...adminErrors(400, 401, 403, 503) },
})
const showDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'showApproval',
  summary: 'One approval request (auditor, admin)',
  security: adminKey,
  parameters: idParam,
  responses: { 200: { description: 'The request.', content: jsonContent(ApprovalBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})
const decideDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'decideApproval',
  summary: 'Approve or deny a pending request (approver, admin)',
  description:
    'Decided as the person the admin key belongs to (`admin.keys[].approver`): the request’s user (same issuer and sub), the agent’s owner ' +
    '(their email or the key’s name equals the policy’s `owner`), or a member of the group the grant names. Anyone else: 403, logged. ' +
    'Writes an `approval.decided` record; the agent’s next poll gets the token (or `access_denied`).',
  security: adminKey,
  parameters: idParam,
  requestBody: { content: jsonContent(DecideBody) },
  responses: { 200: { description: 'Decided.', content: jsonContent(ApprovalBody) }, ...adminErrors(400, 401, 403, 404, 409, 503) },
})

export interface AdminApprovalsDeps extends DecideDeps {
  readonly keys: readonly AdminKey[]
  readonly logger: Logger
}

const iso = (t: number | null) => (t === null ? null : new Date(t * 1000).toISOString())

function approvalJson(r: ApprovalRow, deps: AdminApprovalsDeps, now: number): z.infer<typeof ApprovalBody> {
  const policy = deps.policies.snapshot().get(r.agent as AgentId)
  return {
    id: r.id,
    status: r.status === 'pending' && r.expiresAt <= now ? 'expired' : r.status,
    agent: r.agent,
    user: { iss: r.subIss, sub: r.sub },
    audience: r.audience,
    scopes: r.scopes,
    authorization_details: JSON.parse(r.details) as Record<string, unknown>[],
    binding_message: r.bindingMessage,
    purpose: policy?.purpose ?? null,
    owner: policy?.owner ?? null,
    approvers: r.approvers,
    created_at: iso(r.createdAt)!,
    expires_at: iso(r.expiresAt)!,
    decided_at: iso(r.decidedAt),
    decided_by: r.decidedBy,
    decided_via: r.decidedVia,
    note: r.note,
  }
}

const unavailable = () => {
  throw new AdminError('temporarily_unavailable', 'the approvals store is unavailable; try again')
}

export function mountAdminApprovals(app: Hono<AppEnv>, deps: AdminApprovalsDeps): void {
  app.get('/admin/approvals', listDoc, requireAdmin(deps.keys, 'read'), async function listApprovals(c) {
    const q = ListQuery.safeParse(c.req.query())
    if (!q.success) refuseInvalid(q.error, 'query')
    const now = deps.now()
    const { rows, total } = await deps.approvals.list({ ...q.data, now }).catch(unavailable)
    return c.json({ approvals: rows.map((r) => approvalJson(r, deps, now)), total }, 200, NO_STORE)
  })

  app.get('/admin/approvals/:id', showDoc, requireAdmin(deps.keys, 'read'), async function showApproval(c) {
    const id = ApprovalId.safeParse(c.req.param('id'))
    if (!id.success) throw new AdminError('invalid_request', 'invalid id')
    const row = await deps.approvals.get(id.data).catch(unavailable)
    if (row === undefined) throw new AdminError('not_found', 'no such approval request')
    return c.json(approvalJson(row, deps, deps.now()), 200, NO_STORE)
  })

  app.post('/admin/approvals/:id', decideDoc, requireAdmin(deps.keys, 'approve'), async function decide(c) {
    const id = ApprovalId.safeParse(c.req.param('id'))
    if (!id.success) throw new AdminError('invalid_request', 'invalid id')
    const body = DecideBody.safeParse(await readJsonBody(c))
    if (!body.success) refuseInvalid(body.error, 'body')
    const keyName = c.get('adminKey')
    const approver = c.get('adminPrincipal').approver
    if (approver === undefined) {
      throw new AdminError('forbidden', 'this key belongs to no approver (admin.keys[].approver)', `key=${keyName}`)
    }
    const done = await decideApproval(
      {
        id: id.data,
        decision: body.data.decision === 'approve' ? 'approved' : 'denied',
        approver,
        via: 'admin_api',
        note: body.data.note,
        clientAddress: c.get('clientAddress'),
        traceId: c.get('traceId'),
        requestId: c.get('requestId'),
      },
      deps,
    ).catch(unavailable)
    switch (done.outcome) {
      case 'unknown':
        throw new AdminError('not_found', 'no such approval request')
      case 'not_entitled':
        deps.logger.warn(
          { approval: id.data, key: keyName, approvers: done.row.approvers, agent: done.row.agent },
          'approval refused: not an approver this grant names',
        )
        throw new AdminError('forbidden', 'you are not an approver of this request', `key=${keyName}`)
      case 'not_pending':
        throw new AdminError('conflict', `the request is ${approvalJson(done.row, deps, deps.now()).status}, not pending`)
      case 'unrecorded':
        throw new AdminError('temporarily_unavailable', 'the decision could not be recorded; the request was cancelled')
      case 'decided':
        return c.json(approvalJson(done.row, deps, deps.now()), 200, NO_STORE)
    }
  })
}
