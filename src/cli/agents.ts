/**
 * `mandate agents list|show|attest`: the agent inventory through a running
 * broker's admin API (/admin/agents). A table for people, `--json` for
 * scripts; failures as one line and an exit code (client.ts).
 */
import Table from 'cli-table3'
import { adminRequest, resolveBroker, run, type BrokerOptions } from './client.js'
import { wrap } from './output.js'
import { printable } from './printable.js'

export interface AgentsOptions extends BrokerOptions {
  owner?: string
  state?: string
  expiring?: string
  sort?: string
  limit?: string
  offset?: string
  note?: string
}

interface Usage {
  tokens_24h: number
  denials_24h: number
  users_24h: number
  tokens_30d: number
  denials_30d: number
  users_30d: number
}
interface AgentJson {
  agent: string
  state: string
  owner: string | null
  purpose: string | null
  expires: string | null
  days_left: number | null
  authentication: string | null
  last_token_at: string | null
  usage: Usage
  grants: { audience: string; scopes: string[] }[]
  kills: { id: string; reason: string; created_by: string; created_at: string }[]
  attestation: { last_attested_at: string | null; by: string | null; next_due: string | null } | null
  credentials?: CredentialsJson | null
}
interface CredentialsJson {
  kind: string
  state: string
  max_age_days: number
  oldest_age_days: number | null
  last_used_at: string | null
  suggested_fix: string | null
  credentials: { kind: string; id: string; first_used_at: string; last_used_at: string; age_days: number; state: string; in_policy: boolean | null }[]
}

/** `secret 12 d (rotate_soon)`: the kind, the oldest accepted credential's age, and its state when not fresh. */
const credentialCell = (c: CredentialsJson | null | undefined) => {
  if (c === null || c === undefined) return '-'
  if (c.kind === 'workload') return 'workload'
  const age = c.oldest_age_days === null ? 'unused' : `${c.oldest_age_days} d`
  return `${c.kind} ${age}${c.state === 'fresh' || c.state === 'unused' ? '' : ` (${c.state})`}`
}
interface AgentDetailJson extends AgentJson {
  grant_usage: { audience: string; scope: string; tokens_30d: number; last_token_at: string }[]
  recent_denials: { at: string; error: string; reason: string; sub: string | null }[]
  chains: { jti: string; root_jti: string; at: string; actors: string[] }[]
  recent_anomalies?: { at: string; rule: string; action: string; detail: string; revocation_id: string | null }[]
  instances?: { instance: string; tokens: number; first_seen: string; last_seen: string; killed: boolean }[]
  revocations_fresh: boolean
}

const write = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`)
const plain = () => ({ style: { head: [] as string[], border: [] as string[] } })
const time = (iso: string | null) => (iso === null ? '-' : iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'))
const day = (iso: string | null) => (iso === null ? '-' : iso.slice(0, 10))
const expiry = (a: AgentJson) => (a.expires === null ? '-' : `${day(a.expires)} (${a.days_left ?? 0} d)`)
const attested = (a: AgentJson) =>
  a.attestation?.last_attested_at == null ? 'never' : `${time(a.attestation.last_attested_at)} by ${printable(a.attestation.by ?? '-')}`
const stale = (fresh: boolean) => {
  if (!fresh) process.stderr.write('warning: the broker’s revocation mirror is stale: a kill may be missing from "state"\n')
}

/** `mandate agents list`: one agent a row; the next page's `--offset` on stderr. */
export const agentsList = (o: AgentsOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const query = new URLSearchParams()
    for (const k of ['owner', 'state', 'expiring', 'sort', 'limit', 'offset'] as const) if (o[k] !== undefined) query.set(k, o[k])
    const page = (await adminRequest(b, 'GET', `/admin/agents${query.size === 0 ? '' : `?${query.toString()}`}`)) as {
      agents: AgentJson[]
      total: number
      next_offset: number | null
      revocations_fresh: boolean
    }
    if (o.json === true) return void write(JSON.stringify(page))
    stale(page.revocations_fresh)
    if (page.agents.length === 0) return void write('no agents')
    const t = new Table({
      ...plain(),
      head: ['agent', 'state', 'owner', 'expires', 'auth', 'credential', 'last token', '24h tok/users', '30d tok/users', 'grants'],
    })
    for (const a of page.agents) {
      t.push([
        printable(a.agent),
        a.state,
        wrap(a.owner ?? '-', 28),
        expiry(a),
        a.authentication ?? '-',
        credentialCell(a.credentials),
        time(a.last_token_at),
        `${a.usage.tokens_24h} / ${a.usage.users_24h}`,
        `${a.usage.tokens_30d} / ${a.usage.users_30d}`,
        a.grants.map((g) => wrap(`${g.audience} ${g.scopes.join(' ')}`, 40)).join('\n') || '-',
      ])
    }
    write(t.toString())
    write(`${page.total} agent${page.total === 1 ? '' : 's'}`)
    if (page.next_offset !== null) process.stderr.write(`more: --offset ${page.next_offset}\n`)
    const fix = page.agents.find((a) => a.credentials?.suggested_fix != null)?.credentials?.suggested_fix
    if (o.state === 'shared-secret' && fix !== undefined && fix !== null) write(`suggested fix for each: ${fix}`)
  })

/** `mandate agents show AGENT`: the agent, its usage per grant, kills, live instances, recent denials, recent anomalies, delegation chains. */
export const agentsShow = (agent: string, o: AgentsOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const a = (await adminRequest(b, 'GET', `/admin/agents/${encodeURIComponent(agent)}`)) as AgentDetailJson
    if (o.json === true) return void write(JSON.stringify(a))
    stale(a.revocations_fresh)
    const u = a.usage
    const facts = new Table({ ...plain(), chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' } })
    for (const [k, v] of [
      ['agent', a.agent],
      ['state', a.state],
      ['owner', a.owner ?? '-'],
      ['purpose', a.purpose ?? '-'],
      ['expires', expiry(a)],
      ['authentication', a.authentication ?? '-'],
      ['credential', credentialCell(a.credentials)],
      ['last token', time(a.last_token_at)],
      ['attested', attested(a)],
      ['next attestation', a.attestation?.next_due == null ? '-' : day(a.attestation.next_due)],
      ['last 24 h', `${u.tokens_24h} tokens, ${u.users_24h} users, ${u.denials_24h} denial${u.denials_24h === 1 ? '' : 's'}`],
      ['last 30 d', `${u.tokens_30d} tokens, ${u.users_30d} users, ${u.denials_30d} denial${u.denials_30d === 1 ? '' : 's'}`],
    ] as const)
      facts.push({ [k]: wrap(v, 72) })
    write(facts.toString())
    const grants = new Table({ ...plain(), head: ['audience', 'scope', 'tokens 30d', 'last used'] })
    const used = new Map(a.grant_usage.map((g) => [`${g.audience} ${g.scope}`, g]))
    for (const g of a.grants)
      for (const s of g.scopes) {
        const x = used.get(`${g.audience} ${s}`)
        grants.push([wrap(g.audience, 40), printable(s), String(x?.tokens_30d ?? 0), time(x?.last_token_at ?? null)])
      }
    // Usage of grants the policy no longer holds (or an agent without a policy).
    for (const x of a.grant_usage)
      if (!a.grants.some((g) => g.audience === x.audience && g.scopes.includes(x.scope))) {
        grants.push([wrap(x.audience, 40), `${printable(x.scope)} (not granted)`, String(x.tokens_30d), time(x.last_token_at)])
      }
    const creds = a.credentials
    if (creds !== null && creds !== undefined && creds.kind !== 'workload') {
      write(`\ncredentials (max age ${creds.max_age_days} d)`)
      if (creds.credentials.length === 0) write('none used yet')
      else {
        const t = new Table({ ...plain(), head: ['kind', 'id', 'first used', 'last used', 'age', 'state', 'in policy'] })
        for (const c of creds.credentials) {
          t.push([
            c.kind,
            `${printable(c.id.slice(0, 16))}…`,
            time(c.first_used_at),
            time(c.last_used_at),
            `${c.age_days} d`,
            c.state,
            c.in_policy === null ? '?' : c.in_policy ? 'yes' : 'no',
          ])
        }
        write(t.toString())
      }
      if (creds.suggested_fix !== null) write(`suggested fix: ${creds.suggested_fix}`)
    }
    write('\ngrants')
    write(grants.length === 0 ? 'none' : grants.toString())
    write('\nkills in force')
    write(a.kills.length === 0 ? 'none' : a.kills.map((k) => printable(`${k.id}  ${time(k.created_at)} by ${k.created_by}: ${k.reason}`)).join('\n'))
    write('\nlive instances (tokens in the last hour)')
    const instances = a.instances ?? []
    if (instances.length === 0) write('none')
    else {
      const t = new Table({ ...plain(), head: ['instance', 'tokens', 'first seen', 'last seen', 'killed'] })
      for (const i of instances) t.push([wrap(i.instance, 48), String(i.tokens), time(i.first_seen), time(i.last_seen), i.killed ? 'yes' : 'no'])
      write(t.toString())
    }
    write('\nrecent denials')
    if (a.recent_denials.length === 0) write('none')
    else {
      const t = new Table({ ...plain(), head: ['at', 'error', 'user', 'reason'] })
      for (const d of a.recent_denials) t.push([time(d.at), d.error, printable(d.sub ?? '-'), wrap(d.reason, 48)])
      write(t.toString())
    }
    write('\nrecent anomalies')
    const anomalies = a.recent_anomalies ?? []
    if (anomalies.length === 0) write('none')
    else {
      const t = new Table({ ...plain(), head: ['at', 'rule', 'action', 'detail'] })
      for (const x of anomalies)
        t.push([time(x.at), printable(x.rule), x.action + (x.revocation_id === null ? '' : ` (kill ${x.revocation_id})`), wrap(x.detail, 48)])
      write(t.toString())
    }
    write('\ndelegation chains (newest first)')
    write(a.chains.length === 0 ? 'none' : a.chains.map((c) => printable(`${time(c.at)}  ${[...c.actors].reverse().join(' -> ')}  jti ${c.jti}`)).join('\n'))
  })

/** `mandate agents attest AGENT [--note TEXT]`: records the owner's attestation; prints when the next is due. */
export const agentsAttest = (agent: string, o: AgentsOptions) =>
  run(async () => {
    const b = await resolveBroker(o)
    const done = (await adminRequest(b, 'POST', `/admin/agents/${encodeURIComponent(agent)}/attest`, o.note === undefined ? {} : { note: o.note })) as {
      agent: string
      attested_at: string
      by: string
      next_due: string
    }
    if (o.json === true) return void write(JSON.stringify(done))
    write(printable(`attested ${done.agent} at ${time(done.attested_at)} as ${done.by}; next attestation due ${day(done.next_due)}`))
  })
