import { parseSpiffeId, parseSpiffeIdPrefix } from '../core/spiffe-id.js'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { isMap, LineCounter, parseDocument, type Document } from 'yaml'
import { idJagIssuer, jwksPolicyOf, trustedIssuer } from '../compose.js'
import { loadConfig, processEnv } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { loadPolicies, locate, type Locator } from '../policy/load.js'
import { formatIssue, type AgentPolicy, type PolicyIssue } from '../policy/port.js'
import { openDatabase } from '../storage/database.js'
import { DEV_USER_ISSUER } from '../tokens/dev-issuer.js'
import { loadSigningKeys } from '../tokens/keys.js'
import { createRemoteKeyResolver } from '../tokens/upstream.js'

export interface ConfigCheckOptions {
  config?: string
  dev?: boolean
  online?: boolean
}

/** One finding: where (`file:line:column`, a file, or nothing when the value came from the environment) and what. */
export interface CheckFinding {
  readonly where?: string
  readonly message: string
  /** `serve` would refuse to start on it (otherwise it starts, but not as the config means it to run). */
  readonly blocksStart: boolean
}

export interface ConfigCheckReport {
  /** The config itself loaded; when not, `errors` are its issues and nothing else was checked. */
  readonly configValid: boolean
  readonly errors: readonly CheckFinding[]
  readonly warnings: readonly CheckFinding[]
  /** What was checked and found good, one line each (an indented line details the one before). */
  readonly ok: readonly string[]
  /** What was not checked, and why. */
  readonly skipped: readonly string[]
}

export interface CheckInput {
  /** The config file, else `MANDATE_CONFIG`, else none. */
  readonly file: string | undefined
  readonly env: Readonly<Record<string, string | undefined>>
  readonly dev: boolean
  /** Also reach out: fetch every trusted issuer's JWKS, connect to PostgreSQL and Redis. */
  readonly online: boolean
  /** Epoch milliseconds (policy expiry). */
  readonly now: number
}

/** A policy expiring sooner than this is a warning. */
const EXPIRY_WARNING_MS = 14 * 86_400_000
const DAY_MS = 86_400_000

/**
 * Everything `serve` would refuse at start, and what would make the running
 * broker not ready or not work as configured, in one run: every config error
 * (located in the config file where the YAML allows), every policy error
 * (file:line:column), a policy whose user issuer is in neither `trust.subjects`
 * nor `trust.id_jag`, or whose workload issuer is not in `trust.workloads` (under `--dev` the
 * dev user issuer counts as trusted), an expired policy (a warning within 14
 * days), no admin key outside `--dev`, and the signing keys file. With
 * `online`, also each trusted issuer's JWKS, PostgreSQL and Redis. Writes
 * nothing (a keys file `serve` would generate is reported, not created).
 * When the config itself is invalid, the checks that depend on it are skipped.
 */
export async function checkConfig(input: CheckInput): Promise<ConfigCheckReport> {
  const errors: CheckFinding[] = []
  const warnings: CheckFinding[] = []
  const ok: string[] = []
  const skipped: string[] = []
  const file = input.file ?? (input.env['MANDATE_CONFIG'] || undefined)
  const where = await configLocator(file)

  const loaded = await loadConfig(input.file, input.env, { dev: input.dev })
  if (!loaded.ok) {
    for (const issue of loaded.issues) errors.push({ ...where(issue), message: issue, blocksStart: true })
    return { configValid: false, errors, warnings, ok, skipped: ['everything else: the config is invalid'] }
  }
  const { config } = loaded

  // Policies: what the loader refuses, plus whom they trust and when they end.
  // An ID-JAG's user is a user of its issuer, as a user token's is of its own.
  const subjects = new Set([...[...config.trust.subjects, ...config.trust.id_jag].map((t) => t.issuer), ...(input.dev ? [DEV_USER_ISSUER] : [])])
  const workloads = new Set(config.trust.workloads.map((t) => t.issuer))
  const trustDomains = new Set(config.trust.spiffe.map((t) => t.trust_domain))
  const policyWarnings: PolicyIssue[] = []
  const crossChecked = new Set<PolicyIssue>()
  const check = (p: AgentPolicy, at: Locator): PolicyIssue[] => {
    const found: PolicyIssue[] = []
    p.delegators.forEach((d, i) => {
      if (!subjects.has(d.issuer))
        found.push(at(['users', i, 'issuer'], `${d.issuer} is not in trust.subjects or trust.id_jag: its users' tokens would be refused`))
    })
    if (p.authentication.method === 'workload_identity' && !workloads.has(p.authentication.issuer)) {
      found.push(at(['authentication', 'issuer'], `${p.authentication.issuer} is not in trust.workloads: the agent could not authenticate`))
    }
    const a = p.authentication
    if (a.method === 'spiffe') {
      const domain = (a.prefix ? parseSpiffeIdPrefix(a.spiffeId) : parseSpiffeId(a.spiffeId))?.trustDomain
      if (domain !== undefined && !trustDomains.has(domain)) {
        const field = a.prefix ? 'spiffe_id_prefix' : 'spiffe_id'
        found.push(at(['authentication', field], `trust domain ${domain} is not in trust.spiffe: the agent could not authenticate`))
      }
    }
    const expiresMs = p.expires * 1000
    if (input.now >= expiresMs) {
      found.push(at(['expires'], `expired on ${new Date(expiresMs).toISOString()}: the agent gets no token`))
    } else if (expiresMs - input.now < EXPIRY_WARNING_MS) {
      policyWarnings.push(at(['expires'], `expires in ${Math.ceil((expiresMs - input.now) / DAY_MS)} day(s), on ${new Date(expiresMs).toISOString()}`))
    }
    for (const issue of found) crossChecked.add(issue)
    return found
  }
  const policies = await loadPolicies(config.policies_dir, { check, anomalyRules: config.governance.anomalies.rules })
  if (policies.ok) {
    ok.push(`policies: ${policies.policies.length} in ${config.policies_dir}`)
    policyWarnings.push(...policies.warnings)
  } else {
    // What the loader itself refuses stops serve; the checks above do not.
    for (const issue of policies.issues) errors.push({ message: formatIssue(issue), blocksStart: !crossChecked.has(issue) })
  }
  for (const issue of policyWarnings) warnings.push({ message: formatIssue(issue), blocksStart: false })

  if (!input.dev && config.admin.keys.length === 0) {
    errors.push({
      ...where('admin.keys: '),
      message:
        'admin.keys: no admin key (admin.keys, or admin.keys_file / MANDATE_ADMIN_KEYS_FILE): nobody could revoke (the kill switch) or read the audit log over the API',
      blocksStart: false,
    })
  }

  const keysFile = config.signing.keys_file ?? join(config.data_dir, 'signing-keys.json')
  try {
    const keys = await loadSigningKeys(keysFile, false)
    ok.push(`signing keys: ${keys.all.length} in ${keysFile}, signing with ${keys.current.kid}`)
  } catch (err) {
    if (config.signing.generate_if_missing && (err as Error).message.includes('ENOENT')) {
      ok.push(`signing keys: ${keysFile} does not exist; serve will generate it (one instance only)`)
    } else {
      errors.push({ ...where('signing.keys_file: '), message: `signing.keys_file: ${(err as Error).message}`, blocksStart: true })
    }
  }

  // Where state lives, without the URLs (they may hold passwords).
  const database = config.storage.database_url === undefined ? `PGlite under ${join(config.data_dir, 'pglite')}` : 'PostgreSQL (DATABASE_URL)'
  const redis =
    config.storage.redis_url === undefined
      ? 'none: revocations in this process only; run one instance'
      : `Redis (REDIS_URL), key prefix ${config.storage.key_prefix}`
  ok.push(
    `issuer ${config.issuer}, listening on ${config.listen.host}:${config.listen.port}`,
    `    database: ${database}`,
    `    revocation list: ${redis}`,
    `    admin keys: ${config.admin.keys.length}`,
  )

  if (input.online) await checkOnline(config, where, errors, ok)
  else skipped.push('the issuers’ JWKS, PostgreSQL and Redis (no --online)')
  return { configValid: true, errors, warnings, ok, skipped }
}

/** `--online`: what readiness would find at start, asked now. Connects, writes nothing. */
async function checkOnline(config: Config, where: (issue: string) => { where?: string }, errors: CheckFinding[], ok: string[]): Promise<void> {
  const policy = jwksPolicyOf(config)
  const trusted = [
    ...config.trust.subjects.map((t, i) => ({ issuer: trustedIssuer(t, config.issuer, 'at+jwt'), path: `trust.subjects.${i}.issuer` })),
    ...config.trust.workloads.map((t, i) => ({ issuer: trustedIssuer(t, config.issuer, null), path: `trust.workloads.${i}.issuer` })),
    ...config.trust.id_jag.map((t, i) => ({ issuer: idJagIssuer(t, config.issuer), path: `trust.id_jag.${i}.issuer` })),
  ]
  await Promise.all(
    trusted.map(async ({ issuer, path }) => {
      const keys = createRemoteKeyResolver(issuer, policy)
      await keys.refreshIfDue()
      const status = keys.status()
      if (status.usable) ok.push(`JWKS of ${issuer.issuer}: fetched`)
      else
        errors.push({
          ...where(`${path}: `),
          message: `${path}: ${issuer.issuer}: no usable key set: ${status.lastFailure ?? status.state}`,
          blocksStart: false,
        })
    }),
  )
  if (config.storage.database_url !== undefined) {
    try {
      const db = await openDatabase(config.storage.database_url, { dataDir: config.data_dir })
      await db.close()
      ok.push('PostgreSQL: answers')
    } catch (err) {
      // DatabaseError messages never hold the URL.
      errors.push({ message: `storage.database_url: ${(err as Error).message}`, blocksStart: true })
    }
  }
  if (config.storage.redis_url !== undefined) {
    const redis = new Redis(config.storage.redis_url, {
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      connectTimeout: 2000,
      commandTimeout: 2000,
    })
    // The socket's error carries the code; connect() itself only rejects with "Connection is closed".
    let socketError: NodeJS.ErrnoException | undefined
    redis.on('error', (err: NodeJS.ErrnoException) => void (socketError ??= err))
    try {
      await redis.connect()
      await redis.ping()
      ok.push('Redis: answers')
    } catch (err) {
      // The code only: an ioredis message can quote the address.
      const code = socketError?.code ?? (err as NodeJS.ErrnoException).code ?? (err as Error).name
      errors.push({ message: `storage.redis_url: cannot reach Redis (${code})`, blocksStart: true })
    } finally {
      redis.disconnect()
    }
  }
}

/**
 * Finds where a config issue (`path: message`) points in the config file:
 * `file:line:column` of the value, or of its nearest ancestor when the value
 * is missing (as policy issues are placed). Nothing when the file does not
 * set the issue's top-level key (the value came from the environment or a
 * default) or cannot be parsed.
 */
async function configLocator(file: string | undefined): Promise<(issue: string) => { where?: string }> {
  let doc: Document | undefined
  const lines = new LineCounter()
  if (file !== undefined) {
    try {
      const parsed = parseDocument(await readFile(file, 'utf8'), { lineCounter: lines, uniqueKeys: true, prettyErrors: false })
      if (parsed.errors.length === 0 && isMap(parsed.contents)) doc = parsed
    } catch {
      // loadConfig reports an unreadable file
    }
  }
  return (issue) => {
    if (doc === undefined || file === undefined) return {}
    const head = /^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*|\(root\)): /.exec(issue)?.[1]
    if (head === undefined) return {}
    const path: (string | number)[] = head === '(root)' ? [] : head.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p))
    // An unknown key is reported on its parent; point at the key itself.
    const unknown = /Unrecognized keys?: "([^"]+)"/.exec(issue)?.[1]
    if (unknown !== undefined) path.push(unknown)
    if (path.length === 0 || !doc.hasIn([path[0]])) return {}
    const { line, column } = locate(doc, lines, path)
    return { where: `${file}:${line}:${column}` }
  }
}

const show = (f: CheckFinding) => (f.where === undefined ? f.message : `${f.where}: ${f.message}`)

/**
 * `mandate config check`: prints what `checkConfig` found (errors and
 * warnings on stderr, what is good on stdout). Exit 0 when there is no
 * error, 1 otherwise.
 */
export async function configCheck(options: ConfigCheckOptions): Promise<void> {
  const report = await checkConfig({
    file: options.config,
    env: processEnv(),
    dev: options.dev === true,
    online: options.online === true,
    now: Date.now(),
  })
  for (const line of report.ok) process.stdout.write(line.startsWith(' ') ? `${line}\n` : `ok  ${line}\n`)
  if (report.configValid) for (const line of report.skipped) process.stdout.write(`--  not checked: ${line}\n`)
  for (const w of report.warnings) process.stderr.write(`warning: ${show(w)}\n`)
  for (const e of report.errors) process.stderr.write(`${show(e)}\n`)
  if (report.errors.length === 0) {
    process.stdout.write('config valid: serve would start\n')
    return
  }
  process.exitCode = 1
  const n = report.errors.length
  if (!report.configValid) process.stderr.write(`${n} error(s) in the config\n`)
  else if (report.errors.some((e) => e.blocksStart)) process.stderr.write(`${n} error(s): serve would refuse to start\n`)
  else process.stderr.write(`${n} error(s): serve would start, but not as configured to work\n`)
}
