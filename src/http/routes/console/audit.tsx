/**
 * The Audit pages: the delegation log searched by agent, user, event and
 * time (GET /admin/audit, newest first, a page at a time), each hash chain's
 * verification state (GET /admin/audit/verification: "verified up to record
 * N at T"), and one record in full (GET /admin/audit/records/{id}).
 */
import type { FC } from 'hono/jsx'
import type { z } from 'zod'
import type { AuditPage, AuditVerification } from '../../openapi.js'
import { consoleApi } from './api.js'
import { eventBadge, EVENT_CHOICES, summarize } from './audit-summary.js'
import { Badge, message, Notice, render, Time } from './layout.js'
import type { ConsolePages } from './pages.js'

type Page = z.infer<typeof AuditPage>
type Entry = Page['records'][number]
type Verification = z.infer<typeof AuditVerification>

/** Records a page shows. */
const PAGE_SIZE = 50

// eslint-disable-next-line no-control-regex -- control characters are what it drops
const CONTROL = /[\u0000-\u001f\u007f]/g
const clean = (v: string | undefined, max = 256) => (v === undefined ? '' : v.replace(CONTROL, '').trim().slice(0, max))
const str = (v: unknown) => (typeof v === 'string' ? v : '')

/** A `datetime-local` value, read as UTC, as RFC 3339; undefined when it is none. */
const LOCAL = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(:\d{2})?$/
export function utcInstant(value: string): string | undefined {
  const m = LOCAL.exec(value)
  return m === null ? undefined : `${m[1]!}${m[2] ?? ':00'}Z`
}

interface Filters {
  agent: string
  user: string
  event: string
  jti: string
  from: string
  to: string
}

/** Altered chains first, then those not yet verified to the end; otherwise as listed. */
const needsAttention = (a: Verification['chains'][number], b: Verification['chains'][number]) => {
  const rank = (ch: typeof a) => (!ch.ok ? 0 : ch.verified_through_seq < ch.last_seq ? 1 : 2)
  return rank(a) - rank(b)
}

const VerificationTable: FC<{ v: Verification }> = ({ v }) => (
  <>
    <table>
      <caption>
        {v.complete ? 'Every chain is verified to its last record.' : 'Not every chain is verified to its last record yet: reload to carry on.'}
      </caption>
      <thead>
        <tr>
          <th scope="col">Chain</th>
          <th scope="col">Instance</th>
          <th scope="col">State</th>
          <th scope="col">Verified</th>
          <th scope="col">Problem</th>
        </tr>
      </thead>
      <tbody>
        {[...v.chains].sort(needsAttention).map((ch) => (
          <tr>
            <td class="mono">{ch.chain}</td>
            <td>{ch.instance}</td>
            <td>
              {!ch.ok ? (
                <Badge state="killed" label="altered" />
              ) : ch.verified_through_seq === ch.last_seq ? (
                <Badge state="verified" label="verified" />
              ) : (
                <Badge state="pending" label="catching up" />
              )}
            </td>
            <td>
              {`verified up to record ${ch.verified_through_seq} of ${ch.last_seq}`}
              {ch.at === null ? null : (
                <>
                  {' at '}
                  <Time at={ch.at} />
                </>
              )}
            </td>
            <td>
              {ch.problem === null ? (
                <span class="muted">none</span>
              ) : ch.problem.id === null ? (
                ch.problem.message
              ) : (
                <a href={`/console/audit/records/${ch.problem.id}`}>{ch.problem.message}</a>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
    <p class="muted">Checked: {v.checked}.</p>
  </>
)

const RecordTable: FC<{ records: readonly Entry[] }> = ({ records }) => (
  <table>
    <caption>{records.length === 0 ? 'No record matches.' : `${records.length} record${records.length === 1 ? '' : 's'}, newest first`}</caption>
    <thead>
      <tr>
        <th scope="col">Time</th>
        <th scope="col">Event</th>
        <th scope="col">Agent</th>
        <th scope="col">User</th>
        <th scope="col">Summary</th>
        <th scope="col">Record</th>
      </tr>
    </thead>
    <tbody>
      {records.map((e) => (
        <tr>
          <td>
            <Time at={e.record.at} />
          </td>
          <td>
            <Badge state={eventBadge(e.record.event)} label={e.record.event} />
          </td>
          <td>{str(e.record['agent'])}</td>
          <td>{str(e.record['sub'])}</td>
          <td>{summarize(e.record)}</td>
          <td>
            <a href={`/console/audit/records/${e.id}`}>{`#${e.id}`}</a>
          </td>
        </tr>
      ))}
    </tbody>
  </table>
)

const FilterForm: FC<{ f: Filters }> = ({ f }) => (
  <form class="search" method="get" action="/console/audit" role="search">
    <label>
      Agent
      <input type="text" name="agent" value={f.agent} />
    </label>
    <label>
      User (sub)
      <input type="text" name="user" value={f.user} />
    </label>
    <label>
      Event
      <select name="event">
        <option value="">any</option>
        {EVENT_CHOICES.map((o) => (
          <option value={o.value} selected={o.value === f.event}>
            {o.label}
          </option>
        ))}
      </select>
    </label>
    <label>
      From (UTC)
      <input type="datetime-local" name="from" value={f.from} />
    </label>
    <label>
      To (UTC)
      <input type="datetime-local" name="to" value={f.to} />
    </label>
    {f.jti === '' ? null : <input type="hidden" name="jti" value={f.jti} />}
    <button type="submit" class="primary">
      Search
    </button>
  </form>
)

export function mountAudit({ app }: ConsolePages): void {
  app.get('/console/audit', async function consoleAudit(c) {
    const f: Filters = {
      agent: clean(c.req.query('agent')),
      user: clean(c.req.query('user')),
      event: EVENT_CHOICES.find((o) => o.value === c.req.query('event'))?.value ?? '',
      jti: clean(c.req.query('jti'), 1024),
      from: clean(c.req.query('from'), 32),
      to: clean(c.req.query('to'), 32),
    }
    const before = /^[1-9]\d{0,17}$/.test(c.req.query('before') ?? '') ? c.req.query('before')! : ''
    const problems: string[] = []
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) })
    if (f.agent !== '') query.set('agent', f.agent)
    if (f.user !== '') query.set('sub', f.user)
    if (f.event !== '') query.set('event', f.event)
    if (f.jti !== '') query.set('jti', f.jti)
    for (const key of ['from', 'to'] as const) {
      if (f[key] === '') continue
      const at = utcInstant(f[key])
      if (at === undefined) problems.push(`“${key}” is not a date and time`)
      else query.set(key, at)
    }
    if (before !== '') query.set('before', before)
    const api = consoleApi(app, c)
    const page = problems.length > 0 ? undefined : await api.get<Page>(`/admin/audit?${query.toString()}`)
    if (page?.ok === false) {
      if (page.status === 403) return message(c, 403, 'Audit unavailable', page.description, 'audit')
      problems.push(page.description)
    }
    const verification = await api.get<Verification>('/admin/audit/verification')
    const next = page?.ok === true ? page.body.next : null
    const older = new URLSearchParams(Object.entries(f).filter(([, v]) => v !== ''))
    if (next !== null) older.set('before', next)
    return render(
      c,
      { title: 'Audit', active: 'audit', status: problems.length > 0 ? 400 : 200 },
      <>
        <h1>Audit</h1>
        <h2>Chain verification</h2>
        {verification.ok ? <VerificationTable v={verification.body} /> : <Notice kind="warn" text={`Verification unavailable: ${verification.description}`} />}
        <h2>Records</h2>
        <FilterForm f={f} />
        {f.jti === '' ? null : <Notice kind="info" text={`Only the records of token ${f.jti}.`} />}
        <Notice kind="error" text={problems.length === 0 ? undefined : `The search was not run: ${problems.join('; ')}.`} />
        {page?.ok === true ? <RecordTable records={page.body.records} /> : null}
        {next === null ? null : (
          <p>
            <a href={`/console/audit?${older.toString()}`}>Older records</a>
          </p>
        )}
      </>,
    )
  })

  app.get('/console/audit/records/:id', async function consoleAuditRecord(c) {
    const id = c.req.param('id')
    if (!/^[1-9]\d{0,17}$/.test(id)) return message(c, 404, 'No such record', 'A record id is a number, as the Audit page shows it.', 'audit')
    const answer = await consoleApi(app, c).get<Entry>(`/admin/audit/records/${id}`)
    if (!answer.ok) {
      if (answer.status === 404) return message(c, 404, 'No such record', `No record has id ${id}.`, 'audit')
      return message(c, answer.status === 403 ? 403 : 503, 'Record unavailable', answer.description, 'audit')
    }
    const e = answer.body
    const rec = e.record
    const jti = str(rec['jti'])
    const agent = str(rec['agent'])
    return render(
      c,
      { title: `Record ${e.id}`, active: 'audit' },
      <>
        <h1>{`Record ${e.id}: ${rec.event}`}</h1>
        <dl class="facts">
          <dt>Chain</dt>
          <dd class="mono">{e.chain}</dd>
          <dt>Seq</dt>
          <dd>{e.seq}</dd>
          <dt>Hash</dt>
          <dd class="mono">{e.hash}</dd>
          <dt>Time</dt>
          <dd>
            <Time at={rec.at} />
          </dd>
        </dl>
        <div class="actions">
          {agent === '' ? null : <a href={`/console/agents/${encodeURIComponent(agent)}`}>Agent {agent}</a>}
          {rec.event === 'token.issued' && jti !== '' ? <a href={`/console/chains/${encodeURIComponent(jti)}`}>Its delegation chain</a> : null}
          {jti === '' ? null : <a href={`/console/audit?jti=${encodeURIComponent(jti)}`}>Every record of token {jti}</a>}
        </div>
        <h2>Fields</h2>
        <dl class="facts">
          {Object.entries(rec).map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd class={typeof v === 'string' ? undefined : 'mono'}>{typeof v === 'string' ? v : JSON.stringify(v)}</dd>
            </>
          ))}
        </dl>
        <h2>The record</h2>
        <p class="muted">
          Pretty-printed here; it is written as canonical JSON (RFC 8785), and its hash is SHA-256 over the previous record’s hash, a newline and that text.
        </p>
        <pre>{JSON.stringify(rec, null, 2)}</pre>
      </>,
    )
  })
}
