/**
 * `mandate policy unused [AGENT] --since 30d`: what agents are granted but
 * did not use in the window, and what they asked for and were only ever
 * denied, from a running broker's usage summaries (GET /admin/policy/unused,
 * auditor role). Lines for people, `--json` for scripts.
 */
import { adminRequest, CliError, resolveBroker, run, type Broker, type BrokerOptions } from './client.js'
import { EXIT } from './exit-codes.js'
import { printable } from './printable.js'

export interface UnusedOptions extends BrokerOptions {
  since: string
}

/** One agent of the broker's answer (UnusedGrants in /openapi.json). */
export interface UnusedAgent {
  agent: string
  owner: string
  tokens: number
  first_token_at: string | null
  suggest: boolean
  reason: string | null
  unused_audiences: string[]
  unused_scopes: { audience: string; scope: string }[]
  depth: { granted: number; used: number; unused: boolean }
  only_denied: { audience: string; scope: string | null; denials: number }[]
}
export interface UnusedAnswer {
  since_days: number
  min_tokens: number
  agents: UnusedAgent[]
}

/** `30d`: whole days, as the summaries keep them. */
export function checkSince(since: string): void {
  if (!/^[1-9]\d{0,3}d$/.test(since)) throw new CliError('--since must be a number of days, e.g. 30d', EXIT.USAGE)
}

export async function fetchUnused(b: Broker, agent: string | undefined, since: string): Promise<UnusedAnswer> {
  const query = new URLSearchParams({ since })
  if (agent !== undefined) query.set('agent', agent)
  return (await adminRequest(b, 'GET', `/admin/policy/unused?${query.toString()}`)) as UnusedAnswer
}

/** The lines `policy unused` prints for one agent. */
export function unusedLines(a: UnusedAgent): string[] {
  const lines = [`${printable(a.agent)} (owner ${printable(a.owner)}): ${a.tokens} token${a.tokens === 1 ? '' : 's'} in the window`]
  if (!a.suggest) lines.push(`  nothing suggested: ${printable(a.reason ?? '')}`)
  for (const aud of a.unused_audiences) lines.push(`  - unused audience: ${printable(aud)}`)
  for (const s of a.unused_scopes) lines.push(`  - unused scope: ${printable(s.scope)} at ${printable(s.audience)}`)
  if (a.depth.unused) lines.push(`  - unused delegation depth: max_depth ${a.depth.granted}, used ${a.depth.used}`)
  for (const d of a.only_denied) {
    const what = d.scope === null ? 'audience' : `scope ${printable(d.scope)} at`
    lines.push(`  ! only ever denied: ${what} ${printable(d.audience)} (${d.denials} denial${d.denials === 1 ? '' : 's'})`)
  }
  if (a.suggest && lines.length === 1) lines.push('  every grant was used')
  return lines
}

/** `mandate policy unused [AGENT] --since 30d` */
export const policyUnused = (agent: string | undefined, o: UnusedOptions) =>
  run(async () => {
    checkSince(o.since)
    const b = await resolveBroker(o)
    const answer = await fetchUnused(b, agent, o.since)
    if (o.json === true) return void process.stdout.write(`${JSON.stringify(answer)}\n`)
    const out = [`unused in the last ${answer.since_days} days (suggestions need at least ${answer.min_tokens} tokens in the window):`]
    for (const a of answer.agents) out.push(...unusedLines(a))
    if (answer.agents.length === 0) out.push('no agents')
    process.stdout.write(`${out.join('\n')}\n`)
  })
