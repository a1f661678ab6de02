import { processEnv } from '../config/load.js'

/** Options every `mandate revoke` subcommand takes. */
export interface AdminCallOptions {
  url?: string
  reason?: string
  sub?: string
  /** The user's issuer; the broker's only trusted user issuer when left out. */
  iss?: string
  /** Kill an agent no policy defines, or a user at an issuer not trusted. */
  force?: boolean
  limit?: string
}

function target(url: string | undefined): string {
  const base = url ?? processEnv()['MANDATE_URL'] ?? 'http://localhost:8080'
  return base.replace(/\/+$/, '')
}

/**
 * Calls the admin API of a running broker with `Authorization: Bearer
 * $MANDATE_ADMIN_KEY` (the key is read from the environment, never from the
 * command line, where other users of the host could see it). Prints the
 * JSON answer; exits 1 with the error on any refusal.
 */
async function call(method: 'GET' | 'POST' | 'DELETE', path: string, options: AdminCallOptions, body?: object): Promise<void> {
  const key = processEnv()['MANDATE_ADMIN_KEY']
  if (key === undefined || key === '') {
    process.stderr.write('mandate: set MANDATE_ADMIN_KEY to an admin key (dev mode: demo-admin-key)\n')
    process.exitCode = 1
    return
  }
  const url = `${target(options.url)}${path}`
  let res: Response
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    })
  } catch (err) {
    process.stderr.write(`mandate: cannot reach ${target(options.url)}: ${(err as Error).name}\n`)
    process.exitCode = 1
    return
  }
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  if (!res.ok) {
    const e = json as { error?: string; error_description?: string } | undefined
    process.stderr.write(`mandate: ${res.status} ${e?.error ?? 'error'}: ${e?.error_description ?? text.slice(0, 200)}\n`)
    process.exitCode = 1
    return
  }
  process.stdout.write(`${JSON.stringify(json, null, 2)}\n`)
}

const reasonOf = (options: AdminCallOptions): string => {
  if (options.reason === undefined || options.reason.trim() === '') throw new TypeError('--reason is required')
  return options.reason
}

/** The user part of a kill: `iss` only with a `sub` (the broker answers 400 otherwise), and `force` when asked. */
const userAndForce = (sub: string | undefined, o: AdminCallOptions) => ({
  ...(sub === undefined ? {} : { sub }),
  ...(o.iss === undefined ? {} : { iss: o.iss }),
  ...(o.force === true ? { force: true } : {}),
})

export const revokeAgent = (agent: string, o: AdminCallOptions) =>
  call('POST', '/admin/revocations', o, { agent, ...userAndForce(o.sub, o), reason: reasonOf(o) })
export const revokeSub = (sub: string, o: AdminCallOptions) => call('POST', '/admin/revocations', o, { ...userAndForce(sub, o), reason: reasonOf(o) })
export const revokeJti = (jti: string, o: AdminCallOptions) => call('POST', '/admin/revocations', o, { jti, reason: reasonOf(o) })
export const revokeChain = (jti: string, o: AdminCallOptions) => call('POST', '/admin/revocations', o, { chain: jti, reason: reasonOf(o) })
export const revokeLift = (id: string, o: AdminCallOptions) => call('DELETE', `/admin/revocations/${encodeURIComponent(id)}`, o)
export const revokeList = (o: AdminCallOptions) => call('GET', `/admin/revocations?limit=${encodeURIComponent(o.limit ?? '100')}`, o)
