/**
 * The Approvals page: human-approval requests (OpenID CIBA) waiting for a
 * person, each shown exactly as the agent asked (RFC 9396 authorization
 * details, the binding message to compare), with Approve and Deny; and the
 * latest decided ones. Deciding goes through POST /admin/approvals/{id} as
 * the signed-in person, who must be one the grant's `approvers` name.
 */
import { z } from 'zod'
import { isEntitled, parseApprovers } from '../../../core/approval.js'
import type { ApprovalBody } from '../admin-approvals.js'
import { consoleApi } from './api.js'
import { Badge, message, Notice, render, Time } from './layout.js'
import type { ConsolePages } from './pages.js'

type Approval = z.infer<typeof ApprovalBody>
type ApprovalList = { approvals: Approval[]; total: number }

const DecideForm = z.strictObject({
  csrf: z.string().min(1).max(128),
  decision: z.enum(['approve', 'deny']),
  note: z.string().max(500).optional(),
})
const APPROVAL_ID = /^apr_[A-Za-z0-9_-]{16,64}$/

const DONE: Record<string, string> = { approved: 'Approved: the agent’s next poll gets its token.', denied: 'Denied: the agent is told so at its next poll.' }

export function mountApprovalQueue({ app }: ConsolePages): void {
  app.get('/console/approvals', async function consoleApprovals(c) {
    const session = c.get('consoleSession')!
    const api = consoleApi(app, c)
    const [pending, recent] = await Promise.all([
      api.get<ApprovalList>('/admin/approvals?status=pending&limit=100'),
      api.get<ApprovalList>('/admin/approvals?limit=20'),
    ])
    if (!pending.ok) {
      if (pending.status === 404) return message(c, 404, 'Approvals', 'Human approval is not enabled on this broker (it needs the SQL database).', 'approvals')
      return message(c, pending.status === 403 ? 403 : 503, 'Approvals unavailable', pending.description, 'approvals')
    }
    const done = c.req.query('done')
    const decided = recent.ok ? recent.body.approvals.filter((a) => a.status !== 'pending') : []
    return render(
      c,
      { title: 'Approvals', active: 'approvals' },
      <>
        <h1>Approvals</h1>
        <Notice kind="ok" text={done === undefined ? undefined : DONE[done]} />
        <h2>Waiting ({pending.body.approvals.length})</h2>
        {pending.body.approvals.length === 0 ? <p class="muted">No request is waiting for a decision.</p> : null}
        {pending.body.approvals.map((a) => {
          const mine = isEntitled(parseApprovers(a.approvers), { userIssuer: a.user.iss, sub: a.user.sub, owner: a.owner ?? '' }, session)
          return (
            <section class="panel" aria-labelledby={`h-${a.id}`}>
              <h3 id={`h-${a.id}`}>
                {a.agent} asks to act for {a.user.sub}
              </h3>
              {a.binding_message === null ? null : (
                <p>
                  Binding message (the agent shows its user the same): <strong class="mono">{a.binding_message}</strong>
                </p>
              )}
              <dl class="facts">
                <dt>Agent</dt>
                <dd>
                  <a href={`/console/agents/${encodeURIComponent(a.agent)}`}>{a.agent}</a> — {a.purpose ?? '(its policy is gone)'}
                </dd>
                <dt>For the user</dt>
                <dd>
                  {a.user.sub} <span class="muted">of {a.user.iss}</span>
                </dd>
                <dt>At</dt>
                <dd class="mono">{a.audience}</dd>
                <dt>Scopes</dt>
                <dd class="mono">{a.scopes.join(' ')}</dd>
                <dt>Who decides</dt>
                <dd>{a.approvers}</dd>
                <dt>Asked</dt>
                <dd>
                  <Time at={a.created_at} />
                </dd>
                <dt>Expires</dt>
                <dd>
                  <Time at={a.expires_at} />
                </dd>
              </dl>
              <p>What it will do (authorization_details, exactly as asked):</p>
              <pre>{JSON.stringify(a.authorization_details, null, 2)}</pre>
              {mine ? (
                <form method="post" action={`/console/approvals/${a.id}`} class="actions">
                  <input type="hidden" name="csrf" value={session.csrf} />
                  <label>
                    Note (optional) <input type="text" name="note" maxlength={500} />
                  </label>
                  <button type="submit" name="decision" value="approve" class="primary">
                    Approve
                  </button>
                  <button type="submit" name="decision" value="deny" class="danger">
                    Deny
                  </button>
                </form>
              ) : (
                <p class="notice info">You are not an approver of this request ({a.approvers} decides).</p>
              )}
            </section>
          )
        })}
        <h2>Recently decided</h2>
        <table>
          <caption>The latest decided or expired requests</caption>
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">User</th>
              <th scope="col">Status</th>
              <th scope="col">By</th>
              <th scope="col">When</th>
              <th scope="col">Note</th>
            </tr>
          </thead>
          <tbody>
            {decided.map((a) => (
              <tr>
                <td>{a.agent}</td>
                <td>{a.user.sub}</td>
                <td>
                  <Badge state={a.status} />
                </td>
                <td>{a.decided_by ?? ''}</td>
                <td>
                  <Time at={a.decided_at ?? a.expires_at} />
                </td>
                <td>{a.note ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </>,
    )
  })

  app.post('/console/approvals/:id', async function consoleDecide(c) {
    const id = c.req.param('id')
    if (!APPROVAL_ID.test(id)) return message(c, 404, 'Unknown request', 'There is no such approval request.', 'approvals')
    const form = DecideForm.safeParse(Object.fromEntries(new URLSearchParams((await c.req.text()).slice(0, 4096))))
    // Without its CSRF token the form is not this session's: refused as the admin API would refuse it.
    if (!form.success)
      return message(c, form.error.issues.some((i) => i.path[0] === 'csrf') ? 403 : 400, 'Not accepted', 'The form is incomplete.', 'approvals')
    const note = form.data.note?.trim()
    const answer = await consoleApi(app, c).send<Approval>('POST', `/admin/approvals/${id}`, form.data.csrf, {
      decision: form.data.decision,
      ...(note === undefined || note === '' ? {} : { note }),
    })
    if (!answer.ok) {
      const status = answer.status === 403 || answer.status === 404 || answer.status === 409 || answer.status === 400 ? answer.status : 503
      return message(c, status, 'Not decided', answer.description, 'approvals')
    }
    return c.redirect(`/console/approvals?done=${answer.body.status === 'denied' ? 'denied' : 'approved'}`, 303)
  })
}
