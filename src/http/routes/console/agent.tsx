/**
 * One agent's page: its policy file and the shrink `mandate policy shrink`
 * would suggest, its grants marked used or unused, live instances, recent
 * tokens and denials, delegation chains, kills, attestation and anomalies.
 * Everything is read through the admin API as the signed-in person; Kill
 * links show for responders and admins, Attest for the agent's owners and
 * admins.
 */
import { z } from 'zod'
import { ownsAgent } from '../../../console/roles.js'
import type { UnusedBody } from '../admin-policy-unused.js'
import {
  AnomaliesSection,
  AttestationSection,
  ChainsSection,
  DenialsSection,
  GrantsSection,
  InstancesSection,
  KillsSection,
  TokensSection,
  type AgentDetail,
  type AuditRecords,
} from './agent-sections.js'
import { PolicySection, ShrinkSection, type AgentPolicy } from './agent-policy.js'
import { STATE_LABELS } from './agents.js'
import { consoleApi } from './api.js'
import { agentOf, FORM_REFUSED, formAccepted, formFields, mayKill, type Revocation } from './kill-forms.js'
import { Badge, message, Notice, render, Time } from './layout.js'
import type { ConsolePages } from './pages.js'

const AgentId = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21-\x7e]+$/)
const AttestForm = z.object({ csrf: z.string().max(256).optional(), note: z.string().trim().max(1024).optional() })
const DONE: Record<string, string> = { attested: 'Attested: recorded in the delegation log.' }

export function mountAgent({ app }: ConsolePages): void {
  app.get('/console/agents/:id', async function consoleAgent(c) {
    const parsed = AgentId.safeParse(c.req.param('id'))
    if (!parsed.success) return message(c, 404, 'No such agent', 'That is not an agent id.', 'agents')
    const id = parsed.data
    const e = encodeURIComponent(id)
    const api = consoleApi(app, c)
    const [detail, policy, unused, tokens, revocations] = await Promise.all([
      api.get<AgentDetail>(`/admin/agents/${e}`),
      api.get<AgentPolicy>(`/admin/agents/${e}/policy`),
      api.get<z.infer<typeof UnusedBody>>(`/admin/policy/unused?agent=${e}`),
      api.get<AuditRecords>(`/admin/audit?agent=${e}&event=token.issued&limit=20`),
      api.get<{ revocations: Revocation[] }>('/admin/revocations?limit=1000'),
    ])
    if (!detail.ok) {
      return message(
        c,
        detail.status === 404 ? 404 : detail.status === 403 ? 403 : 503,
        detail.status === 404 ? 'No such agent' : 'Agent unavailable',
        detail.description,
        'agents',
      )
    }
    const a = detail.body
    const session = c.get('consoleSession')!
    const canKill = mayKill(session)
    const canAttest = session.roles.includes('admin') || (session.roles.includes('owner') && a.owner !== null && ownsAgent(session, a.owner))
    const report = unused.ok ? unused.body.agents.find((x) => x.agent === id) : undefined
    const kills = revocations.ok ? revocations.body.revocations.filter((r) => agentOf(r) === id) : undefined
    const state = STATE_LABELS[a.state]
    return render(
      c,
      { title: id, active: 'agents' },
      <>
        <h1>{id}</h1>
        <Notice kind="ok" text={DONE[c.req.query('done') ?? '']} />
        {a.revocations_fresh ? null : <Notice kind="warn" text="The revocation list is stale on this instance: a recent kill may not show." />}
        <dl class="facts">
          <dt>State</dt>
          <dd>
            <Badge state={state.cls} label={state.label} />
          </dd>
          <dt>Owner</dt>
          <dd>{a.owner ?? <span class="muted">none</span>}</dd>
          <dt>Purpose</dt>
          <dd>{a.purpose ?? ''}</dd>
          <dt>Expires</dt>
          <dd>{a.expires === null ? <span class="muted">never</span> : <Time at={a.expires} />}</dd>
          <dt>Tokens 24 h</dt>
          <dd>{`${a.usage.tokens_24h} for ${a.usage.users_24h} users; ${a.usage.denials_24h} denied`}</dd>
        </dl>
        {canKill ? (
          <p class="actions">
            <a class="button danger" href={`/console/kill?agent=${e}`}>
              Kill
            </a>
          </p>
        ) : null}
        <h2>Policy</h2>
        <PolicySection policy={policy} />
        <h2>Grants</h2>
        <GrantsSection agent={a} unused={report?.suggest === true ? report : undefined} />
        <h2>Suggested shrink</h2>
        <ShrinkSection agent={id} policy={policy} unused={{ ...unused, agentReport: report }} />
        <h2>Instances</h2>
        <InstancesSection agent={a} canKill={canKill} />
        <h2>Recent tokens</h2>
        <TokensSection agent={id} tokens={tokens} canKill={canKill} />
        <h2>Recent denials</h2>
        <DenialsSection agent={a} />
        <h2>Chains</h2>
        <ChainsSection agent={a} />
        <h2>Kills</h2>
        <KillsSection agent={a} kills={kills} />
        <h2>Attestation</h2>
        <AttestationSection agent={a} csrf={session.csrf} canAttest={canAttest} />
        <h2>Anomalies</h2>
        <AnomaliesSection agent={a} />
      </>,
    )
  })

  app.post('/console/agents/:id/attest', async function consoleAttest(c) {
    const session = c.get('consoleSession')!
    const form = AttestForm.safeParse(await formFields(c, 4096))
    if (!form.success || !formAccepted(c, session, form.data.csrf)) {
      return message(c, 403, 'Not allowed', FORM_REFUSED, 'agents')
    }
    const id = AgentId.safeParse(c.req.param('id'))
    if (!id.success) return message(c, 404, 'No such agent', 'That is not an agent id.', 'agents')
    const note = form.data.note === undefined || form.data.note === '' ? {} : { note: form.data.note }
    const done = await consoleApi(app, c).send('POST', `/admin/agents/${encodeURIComponent(id.data)}/attest`, form.data.csrf, note)
    if (done.ok) return c.redirect(`/console/agents/${encodeURIComponent(id.data)}?done=attested`, 303)
    const status = done.status === 403 || done.status === 404 || done.status === 400 ? done.status : 503
    return message(c, status, 'Not attested', done.description, 'agents')
  })
}
