/**
 * `mandate migrate` and `mandate audit verify|query`: work on the database
 * directly (PostgreSQL when DATABASE_URL is set, PGlite under the data
 * directory otherwise), never through a running broker.
 */
import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { JWK } from 'jose'
import { checkpointStore, readCheckpoints } from '../audit/checkpoint.js'
import { AUDIT_EVENTS, isEventFilter, MAX_INSTANT, MAX_PAGE } from '../audit/port.js'
import { delegationTree, queryAudit, type AuditEntry, type TreeNode } from '../audit/query.js'
import { verifyAuditLog } from '../audit/verify.js'
import { loadConfig, processEnv } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { codeOf, DatabaseError, openDatabase, type Database } from '../storage/database.js'
import { EXIT } from './exit-codes.js'

/**
 * Exit codes (exit-codes.ts): 0 fine, 1 the log failed verification, 2 the
 * command could not run, 3 no finding but records that no checkpoint covers,
 * older than any running broker leaves them (`audit verify --checkpoints`).
 */
const EXIT_FINDINGS = EXIT.FAILED
const EXIT_ERROR = EXIT.USAGE
const EXIT_UNCOVERED = EXIT.UNCOVERED

// These commands use the issuer only to check checkpoints, so one need not be configured.
const PLACEHOLDER_ISSUER = 'https://issuer-not-configured.mandate.invalid'

interface CommonOptions {
  config?: string
}

function fail(message: string): never {
  process.stderr.write(`mandate: ${message}\n`)
  process.exit(EXIT_ERROR)
}

async function config(options: CommonOptions): Promise<{ config: Config; issuerKnown: boolean }> {
  const env = { ...processEnv() }
  const issuerKnown = Boolean(env['MANDATE_ISSUER']) || options.config !== undefined || Boolean(env['MANDATE_CONFIG'])
  if (!env['MANDATE_ISSUER']) env['MANDATE_ISSUER'] = PLACEHOLDER_ISSUER
  const loaded = await loadConfig(options.config, env, { dev: false })
  if (!loaded.ok) fail(`invalid config: ${loaded.issues.join('; ')}`)
  return { config: loaded.config, issuerKnown: issuerKnown && loaded.config.issuer !== PLACEHOLDER_ISSUER }
}

async function open(c: Config): Promise<Database> {
  try {
    const db = await openDatabase(c.storage.database_url, { dataDir: c.data_dir })
    try {
      await db.migrate()
    } catch (err) {
      await db.close()
      throw err
    }
    return db
  } catch (err) {
    fail(err instanceof DatabaseError || err instanceof TypeError ? err.message : 'cannot open the database')
  }
}

const where = (c: Config) => (c.storage.database_url === undefined ? `PGlite in ${join(c.data_dir, 'pglite')}` : 'PostgreSQL (DATABASE_URL)')

/** `mandate migrate`: applies pending migrations and exits. */
export async function migrate(options: CommonOptions): Promise<void> {
  const { config: c } = await config(options)
  const db = await open(c)
  await db.close()
  process.stdout.write(`migrations applied to ${where(c)}\n`)
}

/** Public keys by kid: from a JWK set (file or URL), else from the broker's signing-keys file. */
async function verificationKeys(c: Config, jwks: string | undefined): Promise<Map<string, KeyObject>> {
  let set: { keys?: unknown }
  const source = jwks ?? c.signing.keys_file ?? join(c.data_dir, 'signing-keys.json')
  try {
    if (/^https?:\/\//.test(source)) {
      const res = await fetch(source, { signal: AbortSignal.timeout(10_000) })
      if (!res.ok) throw new Error(`HTTP ${res.status}`)
      set = (await res.json()) as { keys?: unknown }
    } else {
      set = JSON.parse(await readFile(source, 'utf8')) as { keys?: unknown }
    }
  } catch (err) {
    fail(`cannot read the keys that sign checkpoints from ${source}: ${(err as Error).message}`)
  }
  const keys = new Map<string, KeyObject>()
  // A keys file also lists, under `retired`, the public halves of keys rotated out (mandate keys rotate).
  const retired = (set as { retired?: unknown }).retired
  for (const jwk of [...(Array.isArray(set.keys) ? (set.keys as JWK[]) : []), ...(Array.isArray(retired) ? (retired as JWK[]) : [])]) {
    if (typeof jwk.kid !== 'string' || jwk.kty !== 'EC') continue
    const { kty, crv, x, y } = jwk
    try {
      keys.set(jwk.kid, createPublicKey({ key: { kty, crv, x, y } as import('node:crypto').JsonWebKey, format: 'jwk' }))
    } catch {
      // not a usable EC public key: checkpoints naming it are reported as unknown_kid
    }
  }
  if (keys.size === 0) fail(`no EC key with a kid in ${source}`)
  return keys
}

export interface VerifyCliOptions extends CommonOptions {
  checkpoints?: string
  jwks?: string
  json?: boolean
}

/** Seconds as a person reads them: `42 s`, `17 min`, `5 h`, `3 d`. */
function duration(seconds: number): string {
  if (seconds < 120) return `${seconds} s`
  if (seconds < 7_200) return `${Math.floor(seconds / 60)} min`
  if (seconds < 172_800) return `${Math.floor(seconds / 3_600)} h`
  return `${Math.floor(seconds / 86_400)} d`
}

/**
 * `mandate audit verify`: exit 0 when every chain (and every checkpoint)
 * holds, 1 on any finding; with checkpoints, 3 when some chain's newest
 * records are covered by none of them and older than twice the checkpoint
 * interval (at least 10 s): a running broker checkpoints its chain at that
 * interval, so such a tail is a broker that died without its last
 * checkpoint, or records added behind its back. Younger tails are listed
 * and do not change the exit code.
 */
export async function auditVerify(options: VerifyCliOptions): Promise<void> {
  const { config: c, issuerKnown } = await config(options)
  // Taken before the checkpoints are read: a record written after this is not yet due a checkpoint.
  const now = Math.floor(Date.now() / 1000)
  const maxUncoveredAge = Math.max(10, Math.ceil((2 * c.audit.checkpoint_interval_ms) / 1000))
  let checkpoints: Awaited<ReturnType<typeof readCheckpoints>> | undefined
  if (options.checkpoints !== undefined) {
    const keys = await verificationKeys(c, options.jwks)
    try {
      checkpoints = await readCheckpoints(options.checkpoints, keys, issuerKnown ? c.issuer : undefined)
    } catch (err) {
      fail(`cannot read checkpoints in ${options.checkpoints}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    if (checkpoints.checkpoints.length === 0 && checkpoints.invalid.length === 0) fail(`no checkpoints (*.jws) in ${options.checkpoints}`)
  }
  const db = await open(c)
  const started = performance.now()
  let report
  let store: string | undefined
  try {
    // Checkpoints of another database in the same directory are not this log's.
    store = checkpoints === undefined ? undefined : await checkpointStore(db)
    report = await verifyAuditLog(db.db, {
      ...(checkpoints === undefined ? {} : { checkpoints: checkpoints.checkpoints, now, maxUncoveredAge, ...(store === undefined ? {} : { store }) }),
      onProgress: (n) => process.stderr.write(`verified ${n.toLocaleString('en-US')} records…\n`),
    })
  } catch (err) {
    await db.close()
    fail(`verification could not finish: ${(err as Error).message}`)
  }
  await db.close()
  const invalid = checkpoints?.invalid ?? []
  const ok = report.ok && invalid.length === 0
  const uncovered = report.uncovered ?? []
  const stale = uncovered.filter((t) => t.stale)
  const status = !ok ? 'failed' : stale.length > 0 ? 'uncovered' : 'ok'
  const seconds = ((performance.now() - started) / 1000).toFixed(1)
  if (options.json === true) {
    process.stdout.write(`${JSON.stringify({ ...report, ok, status, store, max_uncovered_age: maxUncoveredAge, invalid_checkpoints: invalid })}\n`)
  } else {
    for (const f of report.findings) process.stdout.write(`${f.kind.toUpperCase()}: ${f.message}\n`)
    for (const i of invalid) process.stdout.write(`INVALID CHECKPOINT: ${i.file}: ${i.reason}\n`)
    for (const o of report.otherStores ?? []) {
      process.stdout.write(
        `OTHER DATABASE: ${o.store}: ${o.checkpoints} checkpoint${o.checkpoints === 1 ? '' : 's'} of ${o.chains} chain${o.chains === 1 ? '' : 's'}, none of them in this database: not held against it\n`,
      )
    }
    for (const t of uncovered) {
      const what = `chain ${t.chain} (instance ${t.instance}): record${t.records === 1 ? ` ${t.firstSeq}` : `s ${t.firstSeq}..${t.lastSeq}`} (${t.records} record${t.records === 1 ? '' : 's'}, the oldest ${duration(t.age)} old)`
      process.stdout.write(
        t.stale
          ? `UNCOVERED: ${what}: no checkpoint covers them; records appended there, or removed after them, would not show\n`
          : `NOT YET CHECKPOINTED: ${what}: a running broker checkpoints them within ${duration(c.audit.checkpoint_interval_ms / 1000)}\n`,
      )
    }
    const staleRecords = stale.reduce((n, t) => n + t.records, 0)
    process.stdout.write(
      `${status.toUpperCase()}: ${report.records} records in ${report.chains} chain${report.chains === 1 ? '' : 's'}` +
        (checkpoints === undefined
          ? ' (no checkpoints given: truncation and a consistent rewrite are not checked; use --checkpoints <dir>)'
          : `, ${report.checkpoints} checkpoint${report.checkpoints === 1 ? '' : 's'}`) +
        (stale.length === 0 ? '' : `, ${staleRecords} record${staleRecords === 1 ? '' : 's'} uncovered for over ${duration(maxUncoveredAge)}`) +
        `, ${where(c)}, ${seconds} s\n`,
    )
  }
  process.exit(status === 'failed' ? EXIT_FINDINGS : status === 'uncovered' ? EXIT_UNCOVERED : 0)
}

export interface QueryCliOptions extends CommonOptions {
  agent?: string
  sub?: string
  iss?: string
  jti?: string
  event?: string
  from?: string
  to?: string
  limit?: string
  before?: string
  chain?: string
  json?: boolean
}

function instant(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (/^\d{1,12}$/.test(value) && Number(value) <= MAX_INSTANT) return Number(value)
  const t = Date.parse(value)
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t) || t / 1000 > MAX_INSTANT) fail(`--${name} must be epoch seconds or an RFC 3339 time`)
  return Math.floor(t / 1000)
}

const iso = (t: number) => new Date(t * 1000).toISOString()

function line(e: AuditEntry): string {
  const r = e.record
  const who = [r['agent'], r['by']].find((v) => typeof v === 'string') ?? '-'
  const fields = [`#${e.id}`, iso(r['at'] as number), String(r['event']).padEnd(22), `by=${who}`]
  if (typeof r['sub'] === 'string') fields.push(`sub=${r['sub']}`)
  if (typeof r['sub_iss'] === 'string') fields.push(`iss=${r['sub_iss']}`)
  if (typeof r['jti'] === 'string') fields.push(`jti=${r['jti']}`)
  if (Array.isArray(r['actors']) && r['actors'].length > 1) fields.push(`actors=${r['actors'].join('<')}`)
  if (typeof r['error'] === 'string') fields.push(`error=${r['error']}`)
  const rev = r['revocation'] as Record<string, unknown> | undefined
  if (rev !== undefined) {
    fields.push(`revocation=${String(rev['kind'])}:${[rev['agent'], rev['sub'], rev['jti']].filter(Boolean).join('/')}`)
    // A user kill without an issuer holds that sub at every issuer.
    if (typeof rev['sub'] === 'string') fields.push(`iss=${typeof rev['iss'] === 'string' ? rev['iss'] : '(any)'}`)
  }
  return fields.join('  ')
}

function treeLines(node: TreeNode, asked: string, depth = 0): string[] {
  const mark = node.jti === asked ? '  <= asked' : ''
  const head =
    `${'  '.repeat(depth)}${depth === 0 ? '' : '└ '}${node.jti}  agent=${node.agent}  sub=${node.sub}  iss=${node.subIssuer ?? '-'}  aud=${node.audience}  ` +
    `scopes=${node.scopes.join(' ')}  ${iso(node.issuedAt)} → ${iso(node.expiresAt)}${node.withheld ? '  WITHHELD' : ''}${mark}`
  return [head, ...node.children.flatMap((child) => treeLines(child, asked, depth + 1))]
}

/** `mandate audit query`: filtered records, newest first, or the delegation tree around one token. */
export async function auditQuery(options: QueryCliOptions): Promise<void> {
  const { config: c } = await config(options)
  const limit = options.limit === undefined ? 50 : Number(options.limit)
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) fail(`--limit must be 1-${MAX_PAGE}`)
  const before = options.before === undefined ? undefined : Number(options.before)
  if (before !== undefined && (!Number.isSafeInteger(before) || before < 1)) fail('--before must be a cursor a previous page printed')
  if (options.event !== undefined) {
    if (!isEventFilter(options.event)) fail(`--event must be one of ${AUDIT_EVENTS.join(', ')}, or a family such as token.*`)
  }
  if (options.iss !== undefined && options.sub === undefined) fail('--iss names the issuer of a user: give --sub too')
  const from = instant('from', options.from)
  const to = instant('to', options.to)
  const db = await open(c)
  try {
    if (options.chain !== undefined) {
      const tree = await delegationTree(db.db, options.chain)
      if (tree === undefined) {
        process.stderr.write(`mandate: no token.issued record has jti ${options.chain}\n`)
        process.exitCode = 1
        return
      }
      if (options.json === true) {
        process.stdout.write(`${JSON.stringify(tree)}\n`)
        return
      }
      process.stdout.write(`delegation tree of ${tree.jti}: ${tree.tokens} token${tree.tokens === 1 ? '' : 's'}\n`)
      for (const l of treeLines(tree.root, tree.jti)) process.stdout.write(`${l}\n`)
      process.stdout.write(tree.revocations.length === 0 ? 'revocations: none\n' : 'revocations:\n')
      for (const r of tree.revocations) process.stdout.write(`  ${line(r)}\n`)
      return
    }
    const page = await queryAudit(db.db, {
      ...(options.agent === undefined ? {} : { agent: options.agent }),
      ...(options.sub === undefined ? {} : { sub: options.sub }),
      ...(options.iss === undefined ? {} : { iss: options.iss }),
      ...(options.jti === undefined ? {} : { jti: options.jti }),
      ...(options.event === undefined ? {} : { event: options.event }),
      ...(from === undefined ? {} : { from }),
      ...(to === undefined ? {} : { to }),
      ...(before === undefined ? {} : { before }),
      limit,
    })
    for (const e of page.records) process.stdout.write(`${options.json === true ? JSON.stringify(e) : line(e)}\n`)
    if (page.next !== undefined) process.stderr.write(`more: --before ${page.next}\n`)
  } catch (err) {
    process.exitCode = EXIT_ERROR
    process.stderr.write(`mandate: the query failed (${codeOf(err)})\n`)
  } finally {
    await db.close()
  }
}
