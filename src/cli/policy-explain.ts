/**
 * `mandate policy explain`: asks a running broker (POST /admin/policy/explain, auditor role) what its token
 * endpoint would answer an agent for a user, and why. A list of checks for people, `--json` for scripts.
 */
import { readFile } from 'node:fs/promises'
import { adminRequest, CliError, resolveBroker, run, type BrokerOptions } from './client.js'
import { EXIT } from './exit-codes.js'
import { printable } from './printable.js'

export interface ExplainOptions extends BrokerOptions {
  agent: string
  user: string
  audience: string
  scope?: string
  claims?: string
  ttl?: string
  /** Agents already in the chain, newest first, comma-separated. */
  chain?: string
}

interface Answer {
  decision: 'granted' | 'denied'
  status?: number
  error?: string
  error_description?: string
  reason?: string | null
  failed_check?: string
  grant?: { audience: string; scope: string; expires_in: number; actors: string[] }
  checks: { check: string; outcome: string; error?: string; reason?: string }[]
}

/** `ISS:SUB`: the issuer is a URL and holds colons itself, so the user is after the last one. */
function splitUser(user: string): { iss: string; sub: string } {
  const at = user.lastIndexOf(':')
  if (at <= 0 || at === user.length - 1) throw new CliError('--user must be ISSUER:SUB, e.g. https://idp.example.com:alice', EXIT.USAGE)
  return { iss: user.slice(0, at), sub: user.slice(at + 1) }
}

async function claimsFrom(file: string | undefined): Promise<Record<string, unknown> | undefined> {
  if (file === undefined) return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'))
  } catch {
    throw new CliError(`--claims ${file}: not a readable JSON file`, EXIT.USAGE)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new CliError(`--claims ${file}: must hold a JSON object`, EXIT.USAGE)
  return parsed as Record<string, unknown>
}

const MARK: Record<string, string> = { pass: 'ok  ', fail: 'FAIL', not_reached: '  - ', unknown: '  ? ' }

export const policyExplain = (o: ExplainOptions) =>
  run(async () => {
    const { iss, sub } = splitUser(o.user)
    const claims = await claimsFrom(o.claims)
    if (o.ttl !== undefined && !/^[1-9]\d{0,7}$/.test(o.ttl)) throw new CliError('--ttl must be a number of seconds', EXIT.USAGE)
    const body = {
      agent: o.agent,
      iss,
      sub,
      audience: o.audience,
      ...(claims === undefined ? {} : { claims }),
      ...(o.scope === undefined ? {} : { scope: o.scope }),
      ...(o.ttl === undefined ? {} : { ttl: Number(o.ttl) }),
      ...(o.chain === undefined ? {} : { chain: o.chain.split(',').filter((a) => a !== '') }),
    }
    const b = await resolveBroker(o)
    const a = (await adminRequest(b, 'POST', '/admin/policy/explain', body)) as Answer
    if (o.json === true) process.stdout.write(`${JSON.stringify(a)}\n`)
    else {
      const lines =
        a.decision === 'granted'
          ? [`granted: ${a.grant!.audience} scope "${a.grant!.scope}" for ${a.grant!.expires_in} s, actors ${a.grant!.actors.join(' < ')}`]
          : [
              `denied at ${a.failed_check ?? '?'}: ${a.status ?? '?'} ${a.error ?? '?'} (${a.error_description ?? ''})`,
              ...(a.reason == null ? [] : [`  reason in the log: ${a.reason}`]),
            ]
      for (const c of a.checks) {
        lines.push(
          `  ${MARK[c.outcome] ?? c.outcome} ${c.check}${c.error === undefined ? '' : ` (${c.error})`}${c.reason === undefined ? '' : `: ${c.reason}`}`,
        )
      }
      process.stdout.write(`${lines.map(printable).join('\n')}\n`)
    }
    // A script tells the answers apart without parsing: 0 granted, 1 denied.
    if (a.decision === 'denied') process.exitCode = EXIT.FAILED
  })
