/**
 * The sections of an agent's console page (agent.tsx reads what they show).
 * A link or button a person's role cannot use is not rendered.
 */
import type { z } from 'zod'
import type { AgentDetailBody } from '../admin-agents.js'
import type { UnusedAgentBody } from '../admin-policy-unused.js'
import type { AuditPage } from '../../openapi.js'
import type { ApiAnswer } from './api.js'
import { KillState } from './kills.js'
import { KILL_FORMS, targetText, type Revocation } from './kill-forms.js'
import { Badge, Time } from './layout.js'

export type AgentDetail = z.infer<typeof AgentDetailBody>
export type UnusedAgent = z.infer<typeof UnusedAgentBody>
export type AuditRecords = z.infer<typeof AuditPage>

const enc = encodeURIComponent
const killLink = (q: Record<string, string>) => `/console/kill?${new URLSearchParams(q).toString()}`
export const Unavailable = ({ what, answer }: { what: string; answer: { description: string } }) => (
  <p class="muted">{`${what} unavailable: ${answer.description}.`}</p>
)

/** Each granted scope with whether the agent used it in the unused report's window (none judged when the report suggests nothing). */
export function GrantsSection({ agent, unused }: { agent: AgentDetail; unused: UnusedAgent | undefined }) {
  const used = (audience: string, scope: string) =>
    unused === undefined
      ? undefined
      : !unused.unused_audiences.includes(audience) && !unused.unused_scopes.some((s) => s.audience === audience && s.scope === scope)
  return (
    <table>
      <caption>Granted audiences and scopes, with their use in the last 30 days</caption>
      <thead>
        <tr>
          <th scope="col">Audience</th>
          <th scope="col">Scope</th>
          <th scope="col">Use</th>
          <th scope="col" class="num">
            Tokens 30 d
          </th>
          <th scope="col">Last token</th>
        </tr>
      </thead>
      <tbody>
        {agent.grants.flatMap((g) =>
          g.scopes.map((scope) => {
            const u = agent.grant_usage.find((x) => x.audience === g.audience && x.scope === scope)
            const mark = used(g.audience, scope)
            return (
              <tr>
                <td class="mono">{g.audience}</td>
                <td class="mono">{scope}</td>
                <td>
                  {mark === undefined ? (
                    <Badge state="neutral" label="not judged" />
                  ) : mark ? (
                    <Badge state="active" label="used" />
                  ) : (
                    <Badge state="dormant" label="unused" />
                  )}
                </td>
                <td class="num">{u?.tokens_30d ?? 0}</td>
                <td>
                  <Time at={u?.last_token_at} />
                </td>
              </tr>
            )
          }),
        )}
      </tbody>
    </table>
  )
}

export function InstancesSection({ agent, canKill }: { agent: AgentDetail; canKill: boolean }) {
  if (agent.instances.length === 0) return <p>No instance of this agent was issued a token in the last hour.</p>
  return (
    <table>
      <caption>Instances issued a token in the last hour, the latest first</caption>
      <thead>
        <tr>
          <th scope="col">Instance</th>
          <th scope="col">State</th>
          <th scope="col" class="num">
            Tokens 1 h
          </th>
          <th scope="col">First seen</th>
          <th scope="col">Last seen</th>
          {canKill ? <th scope="col">Action</th> : null}
        </tr>
      </thead>
      <tbody>
        {agent.instances.map((i) => (
          <tr>
            <td class="mono">{i.instance}</td>
            <td>{i.killed ? <Badge state="killed" label="killed" /> : <Badge state="active" label="live" />}</td>
            <td class="num">{i.tokens}</td>
            <td>
              <Time at={i.first_seen} />
            </td>
            <td>
              <Time at={i.last_seen} />
            </td>
            {canKill ? (
              <td>
                {i.killed ? null : (
                  <a href={killLink({ agent: agent.agent, instance: i.instance })} aria-label={`Kill this instance: ${i.instance}`}>
                    Kill this instance
                  </a>
                )}
              </td>
            ) : null}
          </tr>
        ))}
      </tbody>
    </table>
  )
}

const text = (v: unknown) => (typeof v === 'string' ? v : '')

export function TokensSection({ agent, tokens, canKill }: { agent: string; tokens: ApiAnswer<AuditRecords>; canKill: boolean }) {
  if (!tokens.ok) return <Unavailable what="The delegation log is" answer={tokens} />
  const rows = tokens.body.records.map((r) => r.record)
  if (rows.length === 0) return <p>No token was issued to this agent.</p>
  return (
    <table>
      <caption>{`The latest ${rows.length} tokens issued to ${agent}`}</caption>
      <thead>
        <tr>
          <th scope="col">Issued</th>
          <th scope="col">User</th>
          <th scope="col">Audience</th>
          <th scope="col">Scopes</th>
          <th scope="col">Instance</th>
          <th scope="col">Token</th>
          {canKill ? <th scope="col">Action</th> : null}
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => {
          const jti = text(r['jti'])
          return (
            <tr>
              <td>
                <Time at={r.at} />
              </td>
              <td>{text(r['sub'])}</td>
              <td class="mono">{text(r['aud'])}</td>
              <td class="mono">{Array.isArray(r['scopes']) ? r['scopes'].map(String).join(' ') : ''}</td>
              <td class="mono">{text(r['agent_instance'])}</td>
              <td class="mono">{jti}</td>
              {canKill ? (
                <td>
                  <a href={killLink({ jti })} aria-label={`Kill token ${jti}`}>
                    Kill token
                  </a>
                  {text(r['sub']) === '' ? null : (
                    <>
                      {' · '}
                      <a href={killLink({ agent, sub: text(r['sub']), iss: text(r['sub_iss']) })} aria-label={`Kill for this user: ${text(r['sub'])}`}>
                        Kill for this user
                      </a>
                    </>
                  )}
                </td>
              ) : null}
            </tr>
          )
        })}
      </tbody>
    </table>
  )
}

export function DenialsSection({ agent }: { agent: AgentDetail }) {
  if (agent.recent_denials.length === 0) return <p>No request of this agent was denied.</p>
  return (
    <table>
      <caption>The latest denials, with their reasons</caption>
      <thead>
        <tr>
          <th scope="col">When</th>
          <th scope="col">Error</th>
          <th scope="col">Reason</th>
          <th scope="col">User</th>
        </tr>
      </thead>
      <tbody>
        {agent.recent_denials.map((d) => (
          <tr>
            <td>
              <Time at={d.at} />
            </td>
            <td class="mono">{d.error}</td>
            <td>{d.reason}</td>
            <td>{d.sub ?? ''}</td>
          </tr>
        ))}
      </tbody>
    </table>
  )
}

export function ChainsSection({ agent }: { agent: AgentDetail }) {
  if (agent.chains.length === 0) return <p>This agent is in no delegation chain.</p>
  return (
    <table>
      <caption>Delegated tokens this agent is in, the latest first</caption>
      <thead>
        <tr>
          <th scope="col">Token</th>
          <th scope="col">Issued</th>
          <th scope="col">Actors, newest first</th>
        </tr>
      </thead>
      <tbody>
        {agent.chains.map((ch) => (
          <tr>
            <td class="mono">
              <a href={`/console/chains/${enc(ch.jti)}`} aria-label={`Chain of token ${ch.jti}`}>
                {ch.jti}
              </a>
            </td>
            <td>
              <Time at={ch.at} />
            </td>
            <td>{ch.actors.join(' ← ')}</td>
          </tr>
        ))}
      </tbody>
    </table>
  )
}

/** The agent's kills: those in force, then the lifted ones, from the revocations read (or, without them, the detail's kills in force). */
export function KillsSection({ agent, kills }: { agent: AgentDetail; kills: readonly Revocation[] | undefined }) {
  if (kills === undefined) {
    if (agent.kills.length === 0) return <p>No kill of this agent is in force (its kill history is unavailable).</p>
    return (
      <ul>
        {agent.kills.map((k) => (
          <li>
            <a href={`/console/kills/${enc(k.id)}`}>{`Killed by ${k.created_by}`}</a>: {k.reason} (<Time at={k.created_at} />)
          </li>
        ))}
      </ul>
    )
  }
  if (kills.length === 0) return <p>This agent was never killed (among the latest revocations).</p>
  return (
    <table>
      <caption>Kills naming this agent, in force first</caption>
      <thead>
        <tr>
          <th scope="col">State</th>
          <th scope="col">Kind</th>
          <th scope="col">Target</th>
          <th scope="col">Reason</th>
          <th scope="col">By</th>
          <th scope="col">When</th>
          <th scope="col">Lifted</th>
        </tr>
      </thead>
      <tbody>
        {[...kills]
          .sort((a, b) => Number(b.in_force === true) - Number(a.in_force === true))
          .map((r) => (
            <tr>
              <td>
                <KillState r={r} />
              </td>
              <td>{KILL_FORMS.find((f) => f.kind === r.kind)?.label ?? r.kind}</td>
              <td class="mono">
                <a href={`/console/kills/${enc(r.id)}`}>{targetText(r.kind, r.target)}</a>
              </td>
              <td>{r.reason}</td>
              <td>{r.created_by}</td>
              <td>
                <Time at={r.created_at} />
              </td>
              <td>{r.lifted_at === null ? '' : <Time at={r.lifted_at} />}</td>
            </tr>
          ))}
      </tbody>
    </table>
  )
}

export function AttestationSection({ agent, csrf, canAttest }: { agent: AgentDetail; csrf: string; canAttest: boolean }) {
  const a = agent.attestation
  if (a === null) return <p>No policy names this agent: there is nothing to attest.</p>
  const overdue = agent.state === 'attestation_overdue'
  return (
    <>
      <dl class="facts">
        <dt>State</dt>
        <dd>
          {overdue ? (
            <Badge state="overdue" label="attestation overdue" />
          ) : a.next_due === null ? (
            <Badge state="neutral" label="not required" />
          ) : (
            <Badge state="active" label="up to date" />
          )}
        </dd>
        <dt>Last attested</dt>
        <dd>
          <Time at={a.last_attested_at} />
          {a.by === null ? '' : ` by ${a.by}`}
        </dd>
        <dt>Next due</dt>
        <dd>{a.next_due === null ? <span class="muted">none required</span> : <Time at={a.next_due} />}</dd>
      </dl>
      {canAttest ? (
        <form method="post" action={`/console/agents/${enc(agent.agent)}/attest`}>
          <input type="hidden" name="csrf" value={csrf} />
          <label for="attest-note">Note (optional)</label>
          <textarea id="attest-note" name="note" maxlength={1024}></textarea>
          <div class="actions">
            <button type="submit" class="primary">
              Attest
            </button>
            <span class="muted">You vouch that this agent is still needed, owned and granted what it needs.</span>
          </div>
        </form>
      ) : null}
    </>
  )
}

export function AnomaliesSection({ agent }: { agent: AgentDetail }) {
  if (agent.recent_anomalies.length === 0) return <p>No anomaly rule tripped on this agent’s traffic.</p>
  return (
    <table>
      <caption>Anomaly rules that tripped, the latest first</caption>
      <thead>
        <tr>
          <th scope="col">When</th>
          <th scope="col">Rule</th>
          <th scope="col">Action</th>
          <th scope="col">Detail</th>
          <th scope="col">Kill</th>
        </tr>
      </thead>
      <tbody>
        {agent.recent_anomalies.map((x) => (
          <tr>
            <td>
              <Time at={x.at} />
            </td>
            <td class="mono">{x.rule}</td>
            <td>{x.action === 'quarantine' ? <Badge state="quarantined" label="quarantine" /> : <Badge state="pending" label="alert" />}</td>
            <td>{x.detail}</td>
            <td>{x.revocation_id === null ? '' : <a href={`/console/kills/${enc(x.revocation_id)}`}>the quarantine’s kill</a>}</td>
          </tr>
        ))}
      </tbody>
    </table>
  )
}
