import { DEV_USER_ISSUER } from '../tokens/dev-issuer.js'
import { readFile } from 'node:fs/promises'
import { parse, YAMLParseError } from 'yaml'
import { z } from 'zod'
import { AdminKeyConfig, Config } from './schema.js'

export type ConfigResult = { readonly ok: true; readonly config: Config } | { readonly ok: false; readonly issues: readonly string[] }

export interface LoadOptions {
  /** `--dev`: embedded defaults for a laptop; never for production. */
  readonly dev: boolean
}

/** Environment variables the config reads; nothing else in Mandate reads `process.env`. */
export const CONFIG_ENV = {
  MANDATE_CONFIG: 'path of the YAML config file (or --config)',
  MANDATE_ISSUER: 'issuer',
  HOST: 'listen.host',
  PORT: 'listen.port',
  MANDATE_ADMIN_PORT: 'listen.admin_port',
  MANDATE_POLICIES_DIR: 'policies_dir',
  MANDATE_DATA_DIR: 'data_dir',
  MANDATE_SIGNING_KEYS_FILE: 'signing.keys_file',
  MANDATE_ADMIN_KEYS_FILE: 'admin.keys_file: file of further admin key entries (e.g. a mounted Secret)',
  DATABASE_URL: 'storage.database_url',
  REDIS_URL: 'storage.redis_url',
  MANDATE_REDIS_PREFIX: 'storage.key_prefix',
  MANDATE_CHECKPOINT_DIR: 'audit.checkpoint_dir',
  MANDATE_INSTANCE_ID: 'instance_id',
  LOG_LEVEL: 'log.level',
  OTEL_EXPORTER_OTLP_ENDPOINT: 'telemetry.otlp_endpoint',
  OTEL_EXPORTER_OTLP_HEADERS: 'telemetry.otlp_headers',
  OTEL_SERVICE_NAME: 'telemetry.service_name',
  MANDATE_PROMETHEUS_PORT: 'telemetry.prometheus.port',
  MANDATE_PROMETHEUS_HOST: 'telemetry.prometheus.host',
} as const

type Raw = Record<string, unknown>

/** sha256("demo-admin-key"): the dev-only admin key, in --dev only. */
export const DEV_ADMIN_KEY_SHA256 = 'ac5bb3526d3be432ba19fb1fc0712d350c160bd2169cd24401c9fcaeaac2d860'
/** sha256("demo-approver-key"): the dev-only key of the dev user alice as an approver (docs/approvals.md), in --dev only. */
export const DEV_APPROVER_KEY_SHA256 = '2fd89efd7e2cd87f7f5df2038bf200b0f66e1dd460172a80283b38ada74c25fc'
const obj = (v: unknown): Raw => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : {})

/** The process environment, for the entry points; the one place `process.env` is read. */
export function processEnv(): Readonly<Record<string, string | undefined>> {
  return process.env
}

/**
 * Reads the YAML file (when given), applies environment overrides, then
 * validates everything with the one schema. Returns every issue as
 * `path: message`; never throws on bad input.
 */
export async function loadConfig(file: string | undefined, env: Readonly<Record<string, string | undefined>>, options: LoadOptions): Promise<ConfigResult> {
  // Long, not split: read, override by environment, validate, in one readable sequence that returns every issue at once.
  const path = file ?? env['MANDATE_CONFIG']
  let raw: Raw = {}
  if (path !== undefined && path !== '') {
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      return { ok: false, issues: [`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`] }
    }
    try {
      const parsed: unknown = parse(text, { uniqueKeys: true, maxAliasCount: 50 })
      if (parsed !== null && parsed !== undefined && (typeof parsed !== 'object' || Array.isArray(parsed))) {
        return { ok: false, issues: [`${path}: must be a YAML mapping`] }
      }
      raw = obj(parsed)
    } catch (err) {
      return { ok: false, issues: [`${path}: YAML: ${(err as Error).message.split('\n')[0] ?? ''}`] }
    }
  }

  const listen = { ...obj(raw['listen']) }
  const storage = { ...obj(raw['storage']) }
  const admin = { ...obj(raw['admin']) }
  const signing = { ...obj(raw['signing']) }
  const log = { ...obj(raw['log']) }
  const audit = { ...obj(raw['audit']) }
  const telemetry = { ...obj(raw['telemetry']) }
  const issues: string[] = []
  // Connection URLs may hold passwords: they come from the environment, never from the file.
  for (const key of ['database_url', 'redis_url']) {
    if (storage[key] !== undefined) issues.push(`storage.${key}: set it in the environment (${key.toUpperCase()}), not in the config file`)
  }
  // Collector credentials, like connection URLs, come from the environment only.
  if (telemetry['otlp_headers'] !== undefined) {
    issues.push('telemetry.otlp_headers: set it in the environment (OTEL_EXPORTER_OTLP_HEADERS), not in the config file')
  }
  if (env['OTEL_EXPORTER_OTLP_ENDPOINT']) telemetry['otlp_endpoint'] = env['OTEL_EXPORTER_OTLP_ENDPOINT']
  if (env['OTEL_EXPORTER_OTLP_HEADERS']) telemetry['otlp_headers'] = env['OTEL_EXPORTER_OTLP_HEADERS']
  if (env['OTEL_SERVICE_NAME']) telemetry['service_name'] = env['OTEL_SERVICE_NAME']
  if (env['MANDATE_PROMETHEUS_PORT'] || env['MANDATE_PROMETHEUS_HOST']) {
    const prometheus = { ...obj(telemetry['prometheus']) }
    if (env['MANDATE_PROMETHEUS_PORT']) {
      const port = Number(env['MANDATE_PROMETHEUS_PORT'])
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        issues.push(`telemetry.prometheus.port: MANDATE_PROMETHEUS_PORT must be a port number (got ${JSON.stringify(env['MANDATE_PROMETHEUS_PORT'])})`)
      }
      prometheus['port'] = port
    }
    if (env['MANDATE_PROMETHEUS_HOST']) prometheus['host'] = env['MANDATE_PROMETHEUS_HOST']
    telemetry['prometheus'] = prometheus
  }
  if (env['DATABASE_URL']) storage['database_url'] = env['DATABASE_URL']
  if (env['REDIS_URL']) storage['redis_url'] = env['REDIS_URL']
  if (env['MANDATE_REDIS_PREFIX']) storage['key_prefix'] = env['MANDATE_REDIS_PREFIX']
  if (env['HOST']) listen['host'] = env['HOST']
  let portValid = true
  if (env['PORT']) {
    const port = Number(env['PORT'])
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      issues.push(`listen.port: PORT must be a port number (got ${JSON.stringify(env['PORT'])})`)
      portValid = false
    }
    listen['port'] = port
  }
  if (env['MANDATE_ADMIN_PORT']) {
    const port = Number(env['MANDATE_ADMIN_PORT'])
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      issues.push(`listen.admin_port: MANDATE_ADMIN_PORT must be a port number (got ${JSON.stringify(env['MANDATE_ADMIN_PORT'])})`)
    }
    listen['admin_port'] = port
  }
  if (env['MANDATE_SIGNING_KEYS_FILE']) signing['keys_file'] = env['MANDATE_SIGNING_KEYS_FILE']
  if (env['LOG_LEVEL']) log['level'] = env['LOG_LEVEL']
  if (env['MANDATE_CHECKPOINT_DIR']) audit['checkpoint_dir'] = env['MANDATE_CHECKPOINT_DIR']
  if (env['MANDATE_ADMIN_KEYS_FILE']) admin['keys_file'] = env['MANDATE_ADMIN_KEYS_FILE']
  const merged: Raw = { ...raw, listen, signing, log, storage, admin, audit, telemetry }
  if (env['MANDATE_INSTANCE_ID']) merged['instance_id'] = env['MANDATE_INSTANCE_ID']
  if (env['MANDATE_ISSUER']) merged['issuer'] = env['MANDATE_ISSUER']
  if (env['MANDATE_POLICIES_DIR']) merged['policies_dir'] = env['MANDATE_POLICIES_DIR']
  if (env['MANDATE_DATA_DIR']) merged['data_dir'] = env['MANDATE_DATA_DIR']

  if (options.dev) {
    listen['host'] ??= '127.0.0.1'
    // Dev mode serves unauthenticated user tokens: never on an address another host can reach.
    if (!['127.0.0.1', 'localhost', '::1'].includes(String(listen['host']))) {
      issues.push(`listen.host: --dev listens on loopback only (got ${JSON.stringify(listen['host'])})`)
    }
    listen['port'] ??= 8080
    if (portValid) merged['issuer'] ??= `http://localhost:${String(listen['port'])}`
    merged['policies_dir'] ??= './policies/dev'
    signing['generate_if_missing'] ??= true
    // The documented dev-only admin keys (README), like the demo agent's secret: `demo-admin-key`, and
    // `demo-approver-key`, held by the dev user alice, who approves what demo-payer asks on her behalf.
    admin['keys'] ??= [
      { name: 'dev-admin', sha256: DEV_ADMIN_KEY_SHA256, roles: ['admin'] },
      { name: 'dev-approver-alice', sha256: DEV_APPROVER_KEY_SHA256, roles: ['approver', 'auditor'], approver: { issuer: DEV_USER_ISSUER, sub: 'alice' } },
    ]
  } else if (merged['issuer'] === undefined) {
    issues.push('issuer: is required (set it in the config file or MANDATE_ISSUER)')
  }

  // A keys_file that is not a string is the schema's finding below.
  const adminKeysFile = typeof admin['keys_file'] === 'string' && admin['keys_file'] !== '' ? admin['keys_file'] : undefined
  const fileKeys = adminKeysFile === undefined ? [] : await readAdminKeysFile(adminKeysFile, issues)

  const parsed = Config.safeParse(merged)
  if (!parsed.success) {
    for (const i of parsed.error.issues) {
      const path = i.path.join('.')
      // Already said above, in words that say how to fix it.
      if (issues.some((said) => said.startsWith(`${path}: `)) && merged[path] === undefined) continue
      // A bad PORT is reported once; in dev mode the issuer derived from it is its consequence.
      if (!portValid && (path === 'listen.port' || (options.dev && path === 'issuer' && merged['issuer'] === undefined))) continue
      issues.push(`${path === '' ? '(root)' : path}: ${i.message}`)
    }
  }
  if (parsed.success) checkAdminKeyNames(parsed.data.admin.keys, fileKeys, issues)
  if (issues.length > 0 || !parsed.success) return { ok: false, issues: [...new Set(issues)] }
  // Merged here, so everything downstream reads admin.keys alone.
  return { ok: true, config: { ...parsed.data, admin: { ...parsed.data.admin, keys: [...parsed.data.admin.keys, ...fileKeys] } } }
}

const AdminKeysFile = z.array(AdminKeyConfig)
const ADMIN_KEY_FIELDS = AdminKeyConfig.keyof().options.join(', ')

/**
 * The entries of `admin.keys_file`, validated with the schema of `admin.keys`
 * items; problems go to `issues` as `admin.keys_file[i].field: message`. The
 * file holds key hashes, so no issue quotes its content: YAML errors give a
 * position, unknown fields are not named.
 */
async function readAdminKeysFile(path: string, issues: string[]): Promise<AdminKeyConfig[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    issues.push(`admin.keys_file: ${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    return []
  }
  let doc: unknown
  try {
    // logLevel error: a warning printed to the console could quote the file.
    doc = parse(text, { uniqueKeys: true, maxAliasCount: 50, logLevel: 'error' })
  } catch (err) {
    const at = err instanceof YAMLParseError && err.linePos !== undefined ? ` at line ${err.linePos[0].line}, column ${err.linePos[0].col}` : ''
    issues.push(`admin.keys_file: ${path}: invalid YAML${at}${err instanceof YAMLParseError ? ` (${err.code})` : ''}`)
    return []
  }
  // An empty file is an empty list: no further keys.
  if (doc === null || doc === undefined) return []
  const parsed = AdminKeysFile.safeParse(doc)
  if (parsed.success) return parsed.data
  for (const i of parsed.error.issues) {
    const where = i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('')
    const message =
      i.code === 'unrecognized_keys' ? `has fields other than ${ADMIN_KEY_FIELDS}` : i.path.length === 0 ? 'must be a YAML list of admin keys' : i.message
    issues.push(`admin.keys_file${where}: ${message}`)
  }
  return []
}

/** A name held by two keys would make the audit trail ambiguous: each file entry's name must be new. */
function checkAdminKeyNames(inline: readonly AdminKeyConfig[], fromFile: readonly AdminKeyConfig[], issues: string[]): void {
  const seen = new Map<string, string>(inline.map((k, i) => [k.name, `admin.keys[${i}]`]))
  fromFile.forEach((k, i) => {
    const other = seen.get(k.name)
    if (other !== undefined) issues.push(`admin.keys_file[${i}].name: ${k.name} is already the name of ${other}`)
    else seen.set(k.name, `admin.keys_file[${i}]`)
  })
}
