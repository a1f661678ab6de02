/**
 * The Agents page: the inventory (GET /admin/agents) as a table a responder
 * can search by agent, owner or purpose, by a user the agent acted for
 * (GET /admin/audit), or by state; with each agent's state, owner, last use
 * and a sparkline of its tokens over the last 24 hours.
 */
import type { z } from 'zod'
import { AGENT_STATES } from '../../../core/inventory.js'
import type { AgentListBody } from '../admin-agents.js'
import type { AuditPage } from '../../openapi.js'
import { consoleApi } from './api.js'
import { Badge, message, Notice, render, Sparkline, Time } from './layout.js'
import type { ConsolePages } from './pages.js'

type AgentList = z.infer<typeof AgentListBody>
type AgentEntry = AgentList['agents'][number]

/** A state's badge class and words: attention states stand out, and each says its word. */
export const STATE_LABELS: Record<AgentEntry['state'], { cls: string; label: string }> = {
  active: { cls: 'active', label: 'active' },
  expiring: { cls: 'expiring', label: 'expiring' },
  expired: { cls: 'neutral', label: 'expired' },
  killed: { cls: 'killed', label: 'killed' },
  dormant: { cls: 'dormant', label: 'dormant' },
  unknown: { cls: 'neutral', label: 'no policy' },
  attestation_overdue: { cls: 'overdue', label: 'attestation overdue' },
  orphaned: { cls: 'neutral', label: 'orphaned' },
  quarantined: { cls: 'quarantined', label: 'quarantined' },
}

/** Query text a person typed: bounded, printable. */
// eslint-disable-next-line no-control-regex -- control characters are what it drops
const CONTROL = /[\u0000-\u001f\u007f]/g
const clean = (v: string | undefined, max = 256) => (v === undefined ? '' : v.replace(CONTROL, '').trim().slice(0, max))

export function mountAgentList({ app }: ConsolePages): void {
  app.get('/console/agents', async function consoleAgents(c) {
    const q = clean(c.req.query('q')).toLowerCase()
    const user = clean(c.req.query('user'))
    const stateParam = c.req.query('state')
    const state = AGENT_STATES.find((s) => s === stateParam)
    const api = consoleApi(app, c)
    const list = await api.get<AgentList>(`/admin/agents?limit=500${state === undefined ? '' : `&state=${state}`}`)
    if (!list.ok) return message(c, list.status === 403 ? 403 : 503, 'Agents unavailable', list.description, 'agents')
    let agents = list.body.agents
    if (q !== '') agents = agents.filter((a) => [a.agent, a.owner ?? '', a.purpose ?? ''].some((t) => t.toLowerCase().includes(q)))
    let userNote: string | undefined
    if (user !== '') {
      // The agents issued a token for this user, from the latest thousand such records of the log.
      const seen = await api.get<z.infer<typeof AuditPage>>(`/admin/audit?sub=${encodeURIComponent(user)}&event=token.issued&limit=1000`)
      if (!seen.ok) userNote = `Searching by user needs the delegation log: ${seen.description}`
      else {
        const acted = new Set(seen.body.records.map((r) => String((r.record as { agent?: unknown }).agent)))
        agents = agents.filter((a) => acted.has(a.agent))
      }
    }
    return render(
      c,
      { title: 'Agents', active: 'agents' },
      <>
        <h1>Agents</h1>
        {list.body.revocations_fresh ? null : (
          <Notice kind="warn" text="The revocation list is stale on this instance: a recent kill may not show. Tokens are refused meanwhile." />
        )}
        <Notice kind="warn" text={userNote} />
        <form class="search" method="get" action="/console/agents" role="search">
          <label>
            Search
            <input type="search" name="q" value={q} placeholder="agent, owner or purpose" />
          </label>
          <label>
            User
            <input type="text" name="user" value={user} placeholder="sub the agent acted for" />
          </label>
          <label>
            State
            <select name="state">
              <option value="">any</option>
              {AGENT_STATES.map((s) => (
                <option value={s} selected={s === state}>
                  {STATE_LABELS[s].label}
                </option>
              ))}
            </select>
          </label>
          <button type="submit" class="primary">
            Find
          </button>
        </form>
        <table data-sortable="">
          <caption>
            {agents.length} of {list.body.total} agents
          </caption>
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">State</th>
              <th scope="col">Owner</th>
              <th scope="col">Purpose</th>
              <th scope="col">Last token</th>
              <th scope="col" class="num">
                Tokens 24 h
              </th>
              <th scope="col">Last 24 h</th>
              <th scope="col" class="num">
                Denials 24 h
              </th>
              <th scope="col">Expires</th>
            </tr>
          </thead>
          <tbody>
            {agents.map((a) => (
              <tr>
                <td class="id">
                  <a href={`/console/agents/${encodeURIComponent(a.agent)}`}>{a.agent}</a>
                </td>
                <td data-sort={a.state}>
                  <Badge state={STATE_LABELS[a.state].cls} label={STATE_LABELS[a.state].label} />
                </td>
                <td>{a.owner ?? <span class="muted">none</span>}</td>
                <td>{a.purpose ?? ''}</td>
                <td data-sort={a.last_token_at ?? ''}>
                  <Time at={a.last_token_at} />
                </td>
                <td class="num">{a.usage.tokens_24h}</td>
                <td data-sort={a.usage.tokens_24h}>
                  <Sparkline values={a.usage.tokens_by_hour} label={`${a.usage.tokens_24h} tokens in 24 hours`} />
                </td>
                <td class="num">{a.usage.denials_24h}</td>
                <td data-sort={a.expires ?? ''}>{a.expires === null ? <span class="muted">never</span> : <Time at={a.expires} />}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </>,
    )
  })
}
