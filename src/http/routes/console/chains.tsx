/**
 * The Chains pages: find a delegation chain by a token (`jti`) or by the user
 * it was made for (the user's `token.issued` records, GET /admin/audit,
 * grouped by their root token), and see one chain (GET
 * /admin/audit/chains/{jti}) as a graph with the same tree in text below it,
 * each token's state, and the revocations that touch it.
 */
import type { FC } from 'hono/jsx'
import type { z } from 'zod'
import { tokenStates, type TokenState } from '../../../console/chain-state.js'
import type { AuditPage } from '../../openapi.js'
import { consoleApi } from './api.js'
import { Badge, message, Notice, render, Time } from './layout.js'
import type { ConsolePages } from './pages.js'
import { ChainGraph, duration, STATE_WORDS, tokenAnchor, ttlOf, type TreeBody, type TreeNodeBody } from './tree-graph.js'

type Page = z.infer<typeof AuditPage>
type Entry = Page['records'][number]

// eslint-disable-next-line no-control-regex -- control characters are what it drops
const CONTROL = /[\u0000-\u001f\u007f]/g
const clean = (v: string | undefined, max = 256) => (v === undefined ? '' : v.replace(CONTROL, '').trim().slice(0, max))
const str = (v: unknown) => (typeof v === 'string' ? v : '')

/** Badge classes for a token's state (each also says its word). */
const STATE_BADGE: Record<TokenState['state'], string> = { active: 'active', expired: 'neutral', withheld: 'neutral', killed: 'killed', revoked: 'killed' }

/** One chain found for a user: its root token and what the page of records showed of it. */
interface ChainSummary {
  readonly root: string
  readonly agents: Set<string>
  tokens: number
  /** Epoch seconds of its newest token on the page. */
  readonly latest: number
  readonly audiences: Set<string>
}

/** The user's `token.issued` records (newest first) grouped by root token, the newest chain first. */
export function chainsOf(records: readonly Entry[]): ChainSummary[] {
  const chains = new Map<string, ChainSummary>()
  for (const { record } of records) {
    const root = str(record['root_jti']) || str(record['jti'])
    if (root === '') continue
    let chain = chains.get(root)
    if (chain === undefined) {
      chain = { root, agents: new Set(), tokens: 0, latest: record.at, audiences: new Set() }
      chains.set(root, chain)
    }
    chain.tokens++
    chain.agents.add(str(record['agent']))
    chain.audiences.add(str(record['aud']))
  }
  return [...chains.values()]
}

const TokenList: FC<{ node: TreeNodeBody; states: ReadonlyMap<string, TokenState>; mayKill: boolean }> = ({ node, states, mayKill }) => {
  const state = states.get(node.jti) ?? { state: 'active' as const }
  return (
    <li id={tokenAnchor(node.jti)}>
      <div class="token">
        <strong>{node.agent}</strong> <Badge state={STATE_BADGE[state.state]} label={STATE_WORDS[state.state].toLowerCase()} />
        {state.detail === undefined ? null : <span class="muted"> {state.detail}</span>}
        <dl class="facts">
          <dt>Token</dt>
          <dd class="mono">{node.jti}</dd>
          <dt>Audience</dt>
          <dd>{node.aud}</dd>
          <dt>Scopes</dt>
          <dd>{node.scopes.join(' ') || <span class="muted">none</span>}</dd>
          <dt>Issued</dt>
          <dd>
            <Time at={node.issued_at} />, lifetime {duration(ttlOf(node))} (expires <Time at={node.expires_at} />)
          </dd>
          <dt>Actors</dt>
          <dd>{node.actors.join(' ← ')}</dd>
          <dt>Instance</dt>
          <dd>
            {node.agent_instance ?? <span class="muted">not named</span>} <span class="muted">(written by broker {node.instance})</span>
          </dd>
        </dl>
        <div class="actions">
          <a href={`/console/audit?jti=${encodeURIComponent(node.jti)}`}>Records of this token</a>
          {mayKill && state.state !== 'revoked' ? (
            <a class="button danger" href={`/console/kill?jti=${encodeURIComponent(node.jti)}`}>
              Revoke this token
            </a>
          ) : null}
        </div>
      </div>
      {node.children.length === 0 ? null : (
        <ul class="tree">
          {node.children.map((c) => (
            <TokenList node={c} states={states} mayKill={mayKill} />
          ))}
        </ul>
      )}
    </li>
  )
}

const RevocationTable: FC<{ entries: TreeBody['revocations'] }> = ({ entries }) => (
  <table>
    <caption>
      {entries.length === 0
        ? 'No revocation touches this chain.'
        : `${entries.length} revocation record${entries.length === 1 ? ' touches' : 's touch'} this chain, oldest first`}
    </caption>
    <thead>
      <tr>
        <th scope="col">Time</th>
        <th scope="col">Event</th>
        <th scope="col">Kind</th>
        <th scope="col">Target</th>
        <th scope="col">Reason</th>
        <th scope="col">By</th>
      </tr>
    </thead>
    <tbody>
      {entries.map((e) => {
        const r = (e.record['revocation'] ?? {}) as Record<string, unknown>
        const target = ['agent', 'sub', 'iss', 'jti', 'instance'].flatMap((k) => (typeof r[k] === 'string' ? [`${k} ${str(r[k])}`] : [])).join(', ')
        return (
          <tr>
            <td>
              <a href={`/console/audit/records/${e.id}`}>
                <Time at={e.record.at} />
              </a>
            </td>
            <td>
              <Badge state={e.record.event === 'revocation.lifted' ? 'lifted' : 'killed'} label={e.record.event} />
            </td>
            <td>{str(r['kind'])}</td>
            <td>{target}</td>
            <td>{str(r['reason'])}</td>
            <td>{str(e.record['by'])}</td>
          </tr>
        )
      })}
    </tbody>
  </table>
)

export function mountChains({ app, deps }: ConsolePages): void {
  app.get('/console/chains', async function consoleChains(c) {
    const token = clean(c.req.query('token'))
    const user = clean(c.req.query('user'))
    const iss = clean(c.req.query('iss'), 1024)
    if (token !== '') return c.redirect(`/console/chains/${encodeURIComponent(token)}`, 302)
    let found: ChainSummary[] | undefined
    let note: string | undefined
    if (user !== '') {
      const query = new URLSearchParams({ event: 'token.issued', limit: '500' })
      query.set('sub', user)
      if (iss !== '') query.set('iss', iss)
      const page = await consoleApi(app, c).get<Page>(`/admin/audit?${query.toString()}`)
      if (!page.ok) return message(c, page.status === 403 ? 403 : page.status === 400 ? 400 : 503, 'Chains unavailable', page.description, 'chains')
      found = chainsOf(page.body.records)
      if (page.body.next !== null) note = 'Only the chains of the user’s latest 500 tokens are listed.'
    }
    return render(
      c,
      { title: 'Chains', active: 'chains' },
      <>
        <h1>Chains</h1>
        <p>A delegation chain: the token an agent got for a user, and every token delegated from it, by sub-agents at any depth.</p>
        <form class="search" method="get" action="/console/chains" role="search">
          <label>
            Token (jti)
            <input type="text" name="token" value="" placeholder="any token of the chain" />
          </label>
          <label>
            User (sub)
            <input type="text" name="user" value={user} placeholder="the user the chain acts for" />
          </label>
          <label>
            User’s issuer (optional)
            <input type="text" name="iss" value={iss} placeholder="https://idp.example" />
          </label>
          <button type="submit" class="primary">
            Find
          </button>
        </form>
        <Notice kind="info" text={note} />
        {found === undefined ? null : (
          <table>
            <caption>
              {found.length === 0 ? `No token was issued for ${user}.` : `${found.length} chain${found.length === 1 ? '' : 's'} of ${user}, newest first`}
            </caption>
            <thead>
              <tr>
                <th scope="col">Chain (root token)</th>
                <th scope="col">Agents</th>
                <th scope="col">Audiences</th>
                <th scope="col" class="num">
                  Tokens
                </th>
                <th scope="col">Latest token</th>
              </tr>
            </thead>
            <tbody>
              {found.map((ch) => (
                <tr>
                  <td class="mono">
                    <a href={`/console/chains/${encodeURIComponent(ch.root)}`}>{ch.root}</a>
                  </td>
                  <td>{[...ch.agents].join(', ')}</td>
                  <td>{[...ch.audiences].join(', ')}</td>
                  <td class="num">{ch.tokens}</td>
                  <td>
                    <Time at={ch.latest} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </>,
    )
  })

  app.get('/console/chains/:jti', async function consoleChain(c) {
    const jti = clean(c.req.param('jti'), 1024)
    const answer = await consoleApi(app, c).get<TreeBody>(`/admin/audit/chains/${encodeURIComponent(jti)}`)
    if (!answer.ok) {
      if (answer.status === 404) return message(c, 404, 'No such chain', 'No token with that id was issued (no token.issued record has it).', 'chains')
      return message(c, answer.status === 403 ? 403 : answer.status === 400 ? 400 : 503, 'Chain unavailable', answer.description, 'chains')
    }
    const tree = answer.body
    const states = tokenStates(tree.root, tree.revocations, deps.now())
    const session = c.get('consoleSession')!
    const mayKill = session.roles.includes('responder') || session.roles.includes('admin')
    const root = tree.root
    return render(
      c,
      { title: `Chain ${root.jti}`, active: 'chains' },
      <>
        <h1>Delegation chain</h1>
        <dl class="facts">
          <dt>User</dt>
          <dd>
            {root.sub}
            {root.sub_iss === null ? null : <span class="muted"> of {root.sub_iss}</span>}
          </dd>
          <dt>Root token</dt>
          <dd class="mono">{root.jti}</dd>
          <dt>Tokens</dt>
          <dd>{tree.tokens}</dd>
          {tree.jti === root.jti ? null : (
            <>
              <dt>Asked about</dt>
              <dd class="mono">
                <a href={`#${tokenAnchor(tree.jti)}`}>{tree.jti}</a>
              </dd>
            </>
          )}
        </dl>
        {mayKill ? (
          <div class="actions">
            <a class="button danger" href={`/console/kill?chain=${encodeURIComponent(root.jti)}`}>
              Kill this chain
            </a>
          </div>
        ) : null}
        <h2>Graph</h2>
        <div class="graph-scroll">
          <ChainGraph tree={tree} states={states} />
        </div>
        <h2>Tokens</h2>
        <ul class="tree" aria-label="The delegation tree">
          <li>
            <strong>User {root.sub}</strong>
            <ul class="tree">
              <TokenList node={root} states={states} mayKill={mayKill} />
            </ul>
          </li>
        </ul>
        <h2>Revocations</h2>
        <RevocationTable entries={tree.revocations} />
      </>,
    )
  })
}
