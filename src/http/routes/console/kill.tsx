/**
 * Kill, from the console: a form (what to kill, the target, a required
 * reason), then a page that says exactly what will stop, then the kill
 * itself through POST /admin/revocations as the signed-in person (the
 * record's `created_by` is `console:<their email>`), then the kill's own
 * page. Each step is a POST carrying the session's CSRF token.
 */
import type { Context } from 'hono'
import type { z } from 'zod'
import type { AppEnv } from '../../env.js'
import type { AgentDetailBody } from '../admin-agents.js'
import { consoleApi, type ApiAnswer } from './api.js'
import {
  FIELD_LABELS,
  formAccepted,
  FORM_REFUSED,
  formFields,
  formOf,
  KILL_FORMS,
  KillFormBody,
  kindFromQuery,
  mayKill,
  missingFields,
  revokeBody,
  targetText,
  type KillChoice,
  type KillKind,
  type Revocation,
  type TargetField,
} from './kill-forms.js'
import { message, Notice, render } from './layout.js'
import type { ConsolePages } from './pages.js'

type AgentDetail = z.infer<typeof AgentDetailBody>
type Values = Partial<Record<TargetField | 'reason', string>>

const TARGET_FIELDS: readonly TargetField[] = ['agent', 'sub', 'iss', 'instance', 'jti', 'chain']

function KillFormPage({ csrf, kind, values, error }: { csrf: string; kind: KillKind; values: Values; error?: string | undefined }) {
  return (
    <>
      <h1>Kill</h1>
      <Notice kind="error" text={error} />
      <form method="post" action="/console/kill" class="kill">
        <input type="hidden" name="csrf" value={csrf} />
        <fieldset>
          <legend>What to kill</legend>
          {KILL_FORMS.map((f) => (
            <label class="choice">
              <input type="radio" name="kind" value={f.kind} checked={f.kind === kind} required />
              {` ${f.label}`} <span class="muted">({f.fields.map((x) => FIELD_LABELS[x]).join(', ')})</span>
            </label>
          ))}
        </fieldset>
        <fieldset>
          <legend>Target</legend>
          <p class="muted">
            Fill in the fields the chosen kind names; the others are ignored. A user’s issuer may be left empty when the broker trusts one issuer for users.
          </p>
          <div class="fields">
            {TARGET_FIELDS.map((f) => (
              <label>
                {FIELD_LABELS[f]}
                <input type="text" name={f} value={values[f] ?? ''} autocomplete="off" spellcheck={false} />
              </label>
            ))}
          </div>
        </fieldset>
        <label for="kill-reason">Reason</label>
        <textarea id="kill-reason" name="reason" required maxlength={500} aria-describedby="kill-reason-hint">
          {values.reason ?? ''}
        </textarea>
        <p id="kill-reason-hint" class="muted">
          Kept with the kill and shown to everyone who looks at it (at most 500 characters).
        </p>
        <div class="actions">
          <button type="submit" class="danger">
            Kill
          </button>
          <a href="/console/kills">Cancel</a>
        </div>
      </form>
    </>
  )
}

/** What the agent's kill will reach, in numbers, for the confirm page. */
function AgentReach({ kind, choice, agent }: { kind: KillKind; choice: KillChoice; agent: ApiAnswer<AgentDetail> | undefined }) {
  if (agent === undefined) return null
  if (!agent.ok) return <p class="muted">What the agent runs now is not known: {agent.description}.</p>
  const live = agent.body.instances.filter((i) => !i.killed)
  const instance = kind === 'instance' ? agent.body.instances.find((i) => i.instance === choice.instance) : undefined
  return (
    <ul>
      <li>
        {`${agent.body.agent} has ${live.length} live instance${live.length === 1 ? '' : 's'} (issued a token in the last hour) and was issued ${agent.body.usage.tokens_24h} token${agent.body.usage.tokens_24h === 1 ? '' : 's'} in the last 24 hours, for ${agent.body.usage.users_24h} user${agent.body.usage.users_24h === 1 ? '' : 's'}.`}
      </li>
      {kind === 'instance' ? (
        <li>
          {instance === undefined
            ? 'That instance was not seen in the last hour: the kill holds for it from its first request.'
            : `That instance was issued ${instance.tokens} token${instance.tokens === 1 ? '' : 's'} in the last hour.`}
        </li>
      ) : null}
      {agent.body.kills.length > 0 ? (
        <li>{`The agent is already killed (${agent.body.kills.length} kill${agent.body.kills.length === 1 ? '' : 's'} in force).`}</li>
      ) : null}
    </ul>
  )
}

function ConfirmKillPage({ csrf, choice, agent }: { csrf: string; choice: KillChoice; agent: ApiAnswer<AgentDetail> | undefined }) {
  const form = formOf(choice.kind)
  const target = revokeBody(choice)
  const back = new URLSearchParams({ kind: choice.kind, ...target })
  return (
    <>
      <h1>Confirm kill</h1>
      <div class="panel">
        <p>
          <strong>{`You are about to kill ${targetText(choice.kind, target)}.`}</strong>
        </p>
        <p>{`This stops ${form.stops}. It takes effect at once on this broker, and on every instance and verifier within the revocation lag.`}</p>
        <AgentReach kind={choice.kind} choice={choice} agent={agent} />
        <p>
          Reason: <q>{choice.reason}</q>
        </p>
      </div>
      <form method="post" action="/console/kill">
        <input type="hidden" name="csrf" value={csrf} />
        <input type="hidden" name="kind" value={choice.kind} />
        {Object.entries(target).map(([k, v]) => (
          <input type="hidden" name={k} value={v} />
        ))}
        <input type="hidden" name="confirm" value="yes" />
        <div class="actions">
          <button type="submit" class="danger">
            Confirm kill
          </button>
          <a href={`/console/kill?${back.toString()}`}>Back</a>
        </div>
      </form>
    </>
  )
}

const refused = (c: Context<AppEnv>, text: string) => message(c, 403, 'Not allowed', text, 'kills')

export function mountKill({ app }: ConsolePages): void {
  app.get('/console/kill', async function consoleKillForm(c) {
    const session = c.get('consoleSession')!
    if (!mayKill(session)) return refused(c, 'Your console role may not kill: responders and admins may.')
    const q = c.req.query()
    const values: Values = {}
    for (const f of TARGET_FIELDS) {
      const v = q[f]?.trim()
      if (v !== undefined && v !== '') values[f] = v.slice(0, 2048)
    }
    return render(
      c,
      { title: 'Kill', active: 'kills' },
      <KillFormPage csrf={session.csrf} kind={kindFromQuery({ ...values, kind: q['kind'] })} values={values} />,
    )
  })

  app.post('/console/kill', async function consoleKill(c) {
    const session = c.get('consoleSession')!
    const fields = await formFields(c)
    if (!formAccepted(c, session, fields['csrf'])) return refused(c, FORM_REFUSED)
    if (!mayKill(session)) return refused(c, 'Your console role may not kill: responders and admins may.')
    const again = (status: 400 | 503, error: string) =>
      render(
        c,
        { title: 'Kill', active: 'kills', status },
        <KillFormPage csrf={session.csrf} kind={KILL_FORMS.find((f) => f.kind === fields['kind'])?.kind ?? 'agent'} values={fields} error={error} />,
      )
    const parsed = KillFormBody.safeParse(fields)
    if (!parsed.success) return again(400, parsed.error.issues.map((i) => `${String(i.path[0] ?? 'form')}: ${i.message}`).join('; '))
    const choice = parsed.data
    const missing = missingFields(choice)
    if (missing.length > 0) return again(400, `${formOf(choice.kind).label} needs: ${missing.map((f) => FIELD_LABELS[f]).join(', ')}.`)
    const api = consoleApi(app, c)
    if (choice.confirm !== 'yes') {
      const agent =
        choice.agent === undefined || formOf(choice.kind).fields[0] !== 'agent'
          ? undefined
          : await api.get<AgentDetail>(`/admin/agents/${encodeURIComponent(choice.agent)}`)
      if (agent !== undefined && !agent.ok && agent.status === 404)
        return again(400, `No policy names agent ${choice.agent ?? ''}, and the log holds no use of it.`)
      return render(c, { title: 'Confirm kill', active: 'kills' }, <ConfirmKillPage csrf={session.csrf} choice={choice} agent={agent} />)
    }
    const done = await api.send<Revocation>('POST', '/admin/revocations', fields['csrf'], revokeBody(choice))
    if (done.ok) return c.redirect(`/console/kills/${encodeURIComponent(done.body.id)}`, 303)
    if (done.status === 403) return refused(c, done.description)
    return again(done.status === 503 ? 503 : 400, `Nothing was killed: ${done.description}`)
  })
}
