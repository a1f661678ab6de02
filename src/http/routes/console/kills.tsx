/**
 * The Kills pages: the kills in force and the recent lifted ones
 * (GET /admin/revocations), one kill with where it has reached
 * (GET /admin/revocations/{id}/propagation), and its lift (a confirm page,
 * then DELETE /admin/revocations/{id} as the signed-in person).
 */
import type { Context } from 'hono'
import type { AppEnv } from '../../env.js'
import { consoleApi, type ApiAnswer } from './api.js'
import { FORM_REFUSED, formAccepted, formFields, KILL_FORMS, LIFTABLE, mayKill, targetText, type Revocation } from './kill-forms.js'
import { Propagation } from './kill-propagation.js'
import { Badge, message, Notice, render, Time } from './layout.js'
import type { ConsolePages } from './pages.js'

/** How many of the latest revocations the Kills page reads. */
export const KILLS_PAGE = 200

const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`
const kindLabel = (r: Revocation) => KILL_FORMS.find((f) => f.kind === r.kind)?.label ?? r.kind
const killHref = (r: Revocation) => `/console/kills/${encodeURIComponent(r.id)}`
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** A revocation's state as a badge: in force, lifted, or (a token or chain) revoked. */
export const KillState = ({ r }: { r: Revocation }) =>
  r.in_force === null ? (
    <Badge state="neutral" label="revoked" />
  ) : r.in_force ? (
    <Badge state="killed" label="in force" />
  ) : (
    <Badge state="lifted" label="lifted" />
  )

function KillsTable({ label, rows, lifted }: { label: string; rows: readonly Revocation[]; lifted: boolean }) {
  return (
    <table>
      <caption>{label}</caption>
      <thead>
        <tr>
          <th scope="col">Kind</th>
          <th scope="col">Target</th>
          <th scope="col">Reason</th>
          <th scope="col">By</th>
          <th scope="col">When</th>
          {lifted ? <th scope="col">Lifted by</th> : null}
          {lifted ? <th scope="col">Lifted</th> : null}
          <th scope="col">Kill</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr>
            <td>{kindLabel(r)}</td>
            <td class="mono">{targetText(r.kind, r.target)}</td>
            <td>{r.reason}</td>
            <td>{r.created_by}</td>
            <td>
              <Time at={r.created_at} />
            </td>
            {lifted ? <td>{r.lifted_by ?? ''}</td> : null}
            {lifted ? (
              <td>
                <Time at={r.lifted_at} />
              </td>
            ) : null}
            <td>
              <a href={killHref(r)} aria-label={`details of the kill of ${targetText(r.kind, r.target)}`}>
                details
              </a>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  )
}

function KillPage({ r, canLift, done, propagation }: { r: Revocation; canLift: boolean; done: string | undefined; propagation: ApiAnswer<unknown> }) {
  return (
    <>
      <h1>{`Kill of ${targetText(r.kind, r.target)}`}</h1>
      <Notice kind="ok" text={done === 'lifted' ? 'The kill was lifted.' : undefined} />
      <dl class="facts">
        <dt>State</dt>
        <dd>
          <KillState r={r} />
        </dd>
        <dt>Kind</dt>
        <dd>{kindLabel(r)}</dd>
        <dt>Target</dt>
        <dd class="mono">{targetText(r.kind, r.target)}</dd>
        <dt>Reason</dt>
        <dd>{r.reason}</dd>
        <dt>By</dt>
        <dd>{r.created_by}</dd>
        <dt>When</dt>
        <dd>
          <Time at={r.created_at} />
        </dd>
        {r.lifted_at === null ? null : (
          <>
            <dt>Lifted</dt>
            <dd>
              <Time at={r.lifted_at} /> by {r.lifted_by ?? 'unknown'}
            </dd>
          </>
        )}
        <dt>Id</dt>
        <dd class="mono">{r.id}</dd>
      </dl>
      {canLift && r.in_force === true && LIFTABLE.has(r.kind) ? (
        <form method="get" action={`/console/kills/${encodeURIComponent(r.id)}/lift`} class="actions">
          <button type="submit" class="primary">
            Lift
          </button>
        </form>
      ) : null}
      <h2>Propagation</h2>
      <Propagation answer={propagation} />
      <p>
        <a href="/console/kills">All kills</a>
      </p>
    </>
  )
}

async function revocationOf(app: ConsolePages['app'], c: Context<AppEnv>, id: string) {
  if (!UUID.test(id)) return { ok: false as const, status: 404, description: 'no revocation has that id' }
  return consoleApi(app, c).get<Revocation>(`/admin/revocations/${id}`)
}

export function mountKills({ app }: ConsolePages): void {
  app.get('/console/kills', async function consoleKills(c) {
    const list = await consoleApi(app, c).get<{ revocations: Revocation[]; next: string | null }>(`/admin/revocations?limit=${KILLS_PAGE}`)
    if (!list.ok) return message(c, list.status === 403 ? 403 : 503, 'Kills unavailable', list.description, 'kills')
    const all = list.body.revocations
    const active = all.filter((r) => r.in_force === true)
    const lifted = all.filter((r) => r.in_force === false)
    const tokens = all.filter((r) => r.in_force === null)
    const session = c.get('consoleSession')!
    return render(
      c,
      { title: 'Kills', active: 'kills' },
      <>
        <h1>Kills</h1>
        {mayKill(session) ? (
          <p>
            <a class="button danger" href="/console/kill">
              New kill
            </a>
          </p>
        ) : null}
        <p class="muted">
          {list.body.next === null
            ? `All ${count(all.length, 'revocation')} there are.`
            : `From the latest ${count(all.length, 'revocation')}; older ones: mandate revoke list, or GET /admin/revocations?before=${list.body.next}.`}
        </p>
        <h2>In force</h2>
        {active.length === 0 ? <p>No kill is in force.</p> : <KillsTable label={`${count(active.length, 'kill')} in force`} rows={active} lifted={false} />}
        <h2>Lifted</h2>
        {lifted.length === 0 ? (
          <p>No kill was lifted.</p>
        ) : (
          <KillsTable label={`${count(lifted.length, 'lifted kill')}, the latest first`} rows={lifted} lifted={true} />
        )}
        <h2>Revoked tokens and chains</h2>
        {tokens.length === 0 ? (
          <p>No token or chain was revoked.</p>
        ) : (
          <KillsTable
            label={`${count(tokens.length, 'revocation')} of a token or chain, the latest first (they cannot be lifted)`}
            rows={tokens}
            lifted={false}
          />
        )}
      </>,
    )
  })

  app.get('/console/kills/:id', async function consoleKill(c) {
    const id = c.req.param('id')
    const r = await revocationOf(app, c, id)
    if (!r.ok) return message(c, r.status === 404 ? 404 : r.status === 403 ? 403 : 503, 'Kill unavailable', r.description, 'kills')
    const propagation = await consoleApi(app, c).get<unknown>(`/admin/revocations/${id}/propagation`)
    const done = c.req.query('done')
    return render(
      c,
      { title: `Kill ${r.body.id}`, active: 'kills' },
      <KillPage r={r.body} canLift={mayKill(c.get('consoleSession')!)} done={done} propagation={propagation} />,
    )
  })

  app.get('/console/kills/:id/lift', async function consoleLiftConfirm(c) {
    const session = c.get('consoleSession')!
    if (!mayKill(session)) return message(c, 403, 'Not allowed', 'Your console role may not lift kills: responders and admins may.', 'kills')
    const r = await revocationOf(app, c, c.req.param('id'))
    if (!r.ok) return message(c, r.status === 404 ? 404 : r.status === 403 ? 403 : 503, 'Kill unavailable', r.description, 'kills')
    if (r.body.in_force !== true)
      return message(c, 409, 'Nothing to lift', 'This is not a kill in force: it was lifted, or it revoked a token, which stays revoked.', 'kills')
    return render(
      c,
      { title: 'Confirm lift', active: 'kills' },
      <>
        <h1>Confirm lift</h1>
        <div class="panel">
          <p>
            <strong>{`You are about to lift the kill of ${targetText(r.body.kind, r.body.target)}.`}</strong>
          </p>
          <p>New tokens can be issued again at once. Tokens issued before the kill stay dead.</p>
          <p>
            It was killed by {r.body.created_by} (<Time at={r.body.created_at} />) because: <q>{r.body.reason}</q>
          </p>
        </div>
        <form method="post" action={`/console/kills/${encodeURIComponent(r.body.id)}/lift`}>
          <input type="hidden" name="csrf" value={session.csrf} />
          <div class="actions">
            <button type="submit" class="primary">
              Confirm lift
            </button>
            <a href={killHref(r.body)}>Back</a>
          </div>
        </form>
      </>,
    )
  })

  app.post('/console/kills/:id/lift', async function consoleLift(c) {
    const session = c.get('consoleSession')!
    const fields = await formFields(c, 1024)
    if (!formAccepted(c, session, fields['csrf'])) {
      return message(c, 403, 'Not allowed', FORM_REFUSED, 'kills')
    }
    const id = c.req.param('id')
    if (!UUID.test(id)) return message(c, 404, 'Kill unavailable', 'no revocation has that id', 'kills')
    const done = await consoleApi(app, c).send<Revocation>('DELETE', `/admin/revocations/${id}`, fields['csrf'])
    if (done.ok) return c.redirect(`/console/kills/${id}?done=lifted`, 303)
    const status = done.status === 403 || done.status === 404 || done.status === 409 ? done.status : 503
    return message(c, status, 'Not lifted', done.description, 'kills')
  })
}
