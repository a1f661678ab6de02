/**
 * How the commands that call a running broker find it, authenticate, and
 * turn what goes wrong into one line a person can act on and an exit code
 * a script can branch on (exit-codes.ts).
 *
 * The broker: --url, else $MANDATE_URL, else `url` in the profile file,
 * else http://localhost:8080. With listen.admin_port (MANDATE_ADMIN_PORT)
 * the admin API answers only on that port, so this URL names that port.
 * The admin key: $MANDATE_ADMIN_KEY, else the file the profile's
 * `admin_key_file` names; never a command-line argument, which other users
 * of the host could read in the process list.
 */
import { processEnv } from '../config/load.js'
import { EXIT } from './exit-codes.js'
import { printable } from './printable.js'
import { ADMIN_KEY, ProfileError, profilePath, readAdminKeyFile, readProfile, type Profile } from './profile.js'

/** A failure the user can act on: printed as `mandate: <message>`, exits with `exitCode`. */
export class CliError extends Error {
  override readonly name = 'CliError'
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message)
  }
}

/** Options every command that calls a broker takes. */
export interface BrokerOptions {
  url?: string
  /** Print the broker's JSON answer instead of a table. */
  json?: boolean
}

export interface Broker {
  /** Base URL, no trailing slash. */
  readonly base: string
  /** Where the URL came from, for messages: `--url`, `MANDATE_URL`, the profile, or the default. */
  readonly urlFrom: string
  readonly key: string
  readonly keyFrom: string
}

const DEFAULT_URL = 'http://localhost:8080'
const TIMEOUT_MS = 10_000

/**
 * Resolves the broker and the admin key. The profile is read only when the
 * command line and the environment leave something to it.
 */
export async function resolveBroker(options: BrokerOptions, env: Readonly<Record<string, string | undefined>> = processEnv()): Promise<Broker> {
  let profile: Profile | undefined
  const fromProfile = async (): Promise<Profile> => {
    try {
      return (profile ??= await readProfile(profilePath(env)))
    } catch (err) {
      if (err instanceof ProfileError) throw new CliError(err.message, EXIT.USAGE)
      throw err
    }
  }

  let url: string
  let urlFrom: string
  if (options.url !== undefined) [url, urlFrom] = [options.url, '--url']
  else if (env['MANDATE_URL']) [url, urlFrom] = [env['MANDATE_URL'], 'MANDATE_URL']
  else {
    const p = await fromProfile()
    ;[url, urlFrom] = p.url === undefined ? [DEFAULT_URL, 'the default'] : [p.url, `url in ${p.path}`]
  }
  const base = baseUrl(url, urlFrom)

  let key: string
  let keyFrom: string
  const envKey = env['MANDATE_ADMIN_KEY']
  if (envKey !== undefined && envKey !== '') {
    if (!ADMIN_KEY.test(envKey)) throw new CliError('MANDATE_ADMIN_KEY is not an admin key (printable ASCII, no spaces or newlines)', EXIT.AUTH)
    ;[key, keyFrom] = [envKey, 'MANDATE_ADMIN_KEY']
  } else {
    const p = await fromProfile()
    if (p.adminKeyFile === undefined) {
      throw new CliError(`no admin key: set MANDATE_ADMIN_KEY, or admin_key_file in ${p.path} (dev mode: demo-admin-key)`, EXIT.AUTH)
    }
    try {
      key = await readAdminKeyFile(p.adminKeyFile)
    } catch (err) {
      if (err instanceof ProfileError) throw new CliError(err.message, EXIT.AUTH)
      throw err
    }
    keyFrom = `admin_key_file in ${p.path}`
  }
  return { base, urlFrom, key, keyFrom }
}

function baseUrl(url: string, from: string): string {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new CliError(`${from} is not a URL: ${JSON.stringify(url)}`, EXIT.USAGE)
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new CliError(`${from} must be an http(s) URL (got ${parsed.protocol})`, EXIT.USAGE)
  // Credentials in the URL would go to the broker besides the key, and show up in messages.
  if (parsed.username !== '' || parsed.password !== '')
    throw new CliError(`${from} must not hold credentials: the admin key goes in MANDATE_ADMIN_KEY`, EXIT.USAGE)
  if (parsed.search !== '' || parsed.hash !== '') throw new CliError(`${from} must be a base URL, without ?query or #fragment`, EXIT.USAGE)
  return parsed.href.replace(/\/+$/, '')
}

/** The error code a failed fetch carries: undici puts the system error (or an AggregateError of them, one per address) in `cause`. */
function causeCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown; errors?: { code?: unknown }[] } }).cause
  const code = cause?.code ?? cause?.errors?.[0]?.code
  return typeof code === 'string' ? code : undefined
}

function unreachable(b: Broker, err: unknown): CliError {
  const at = `the broker at ${b.base} (${b.urlFrom})`
  if ((err as Error).name === 'TimeoutError') return new CliError(`${at} did not answer within ${TIMEOUT_MS / 1000} s`, EXIT.UNAVAILABLE)
  const code = causeCode(err)
  switch (code) {
    case 'ECONNREFUSED':
      return new CliError(`cannot reach ${at}: is it running? (set MANDATE_URL or --url)`, EXIT.UNAVAILABLE)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new CliError(`cannot reach ${at}: no such host (set MANDATE_URL or --url)`, EXIT.UNAVAILABLE)
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
      return new CliError(`${at} closed the connection (${code}): is that the broker's HTTP port?`, EXIT.UNAVAILABLE)
    default:
      break
  }
  if (code !== undefined && /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) {
    return new CliError(`TLS with ${at} failed (${code}); for a private CA set NODE_EXTRA_CA_CERTS=<ca.pem>`, EXIT.UNAVAILABLE)
  }
  const cause = (err as { cause?: unknown }).cause
  return new CliError(`cannot reach ${at}: ${code ?? (cause instanceof Error ? cause.message : (err as Error).message)}`, EXIT.UNAVAILABLE)
}

/** What the admin API refuses with (RFC 6749 §5.2 shape). */
interface ErrorBody {
  error?: unknown
  error_description?: unknown
}

function refusal(b: Broker, status: number, body: unknown, text: string): CliError {
  const e = (typeof body === 'object' && body !== null ? body : {}) as ErrorBody
  const error = typeof e.error === 'string' ? e.error : undefined
  const description = typeof e.error_description === 'string' ? e.error_description : undefined
  const said = error === undefined ? `${status}` : `${status} ${error}${description === undefined ? '' : `: ${description}`}`
  if (status === 401) return new CliError(`the broker at ${b.base} refused the admin key from ${b.keyFrom} (${said})`, EXIT.AUTH)
  if (status === 403) {
    return new CliError(
      `the admin key from ${b.keyFrom} is valid but may not do this (${said}): revoke and lift need the responder or admin role, list the auditor or admin role, attest the admin role, approve and deny the approver or admin role and a person the grant’s approvers name`,
      EXIT.AUTH,
    )
  }
  if (status >= 500)
    return new CliError(`the broker at ${b.base} failed: ${error === undefined ? `${status} ${text.slice(0, 200)}`.trim() : said}`, EXIT.UNAVAILABLE)
  if (error === undefined) {
    // Not the admin API's answer: another server, or a proxy in between.
    return new CliError(`${status} from ${b.base} (${b.urlFrom}), not a Mandate admin API answer: is that the broker?`, EXIT.FAILED)
  }
  // The main port of a broker with listen.admin_port answers every admin path with this 404.
  const hint =
    status === 404 && /^no such route/.test(description ?? '')
      ? ` (the admin API may be on a port of its own, listen.admin_port / MANDATE_ADMIN_PORT: point ${b.urlFrom} at it)`
      : ''
  return new CliError(`${said}${hint}`, EXIT.FAILED)
}

/**
 * One admin API call: `Authorization: Bearer <key>`, redirects not followed
 * (the key would go wherever one points), 10 s at most. Returns the JSON
 * answer; throws CliError for anything else.
 */
export async function adminRequest(b: Broker, method: 'GET' | 'POST' | 'DELETE', path: string, body?: object): Promise<unknown> {
  let res: Response
  let text: string
  try {
    res = await fetch(`${b.base}${path}`, {
      method,
      headers: { authorization: `Bearer ${b.key}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      redirect: 'manual',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    })
    text = await res.text()
  } catch (err) {
    throw unreachable(b, err)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  if (res.status >= 300 && res.status < 400) {
    const location = res.headers.get('location')
    throw new CliError(
      `the broker at ${b.base} answered ${res.status}${location === null ? '' : ` to ${location}`}: redirects are not followed (the admin key would go along); set MANDATE_URL or --url to the broker itself`,
      EXIT.FAILED,
    )
  }
  if (!res.ok) throw refusal(b, res.status, json, text)
  if (json === undefined) throw new CliError(`${res.status} from ${b.base} (${b.urlFrom}) but not JSON: is that the broker?`, EXIT.FAILED)
  return json
}

/** Runs a command body: a CliError becomes one line on stderr and its exit code. */
export async function run(body: () => Promise<void>): Promise<void> {
  try {
    await body()
  } catch (err) {
    if (!(err instanceof CliError)) throw err
    // The message may quote what a server answered: shown, never interpreted by the terminal.
    process.stderr.write(`mandate: ${printable(err.message)}\n`)
    process.exitCode = err.exitCode
  }
}
