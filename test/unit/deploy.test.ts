/**
 * The packaging and deployment files (Dockerfile, .dockerignore, deploy/)
 * against the code they run. No Docker engine or cluster is at hand, so this
 * is what holds them together: every environment variable a broker container
 * gets is one the config reads (CONFIG_ENV, read here, never copied), the
 * config each one resolves passes the real loader, ports and probes agree
 * with it and with the app's routes (the admin API on listen.admin_port, with
 * a Service and a load balancer route of its own), every path the config
 * names is mounted from the right place (the admin keys from a mounted
 * Secret, not the config ConfigMap), and no private key is in the repository.
 *
 * Each check collects its findings as `file: field: reason` and expects none,
 * so one run reports every disagreement.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, posix, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { parse, parseAllDocuments } from 'yaml'
import { CONFIG_ENV, loadConfig } from '../../src/config/load.js'
import type { Config } from '../../src/config/schema.js'
import { loadPolicies } from '../../src/policy/load.js'
import { formatIssue } from '../../src/policy/port.js'
import { startTestBroker } from '../support/broker.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DEPLOY = join(ROOT, 'deploy')
const K8S = join(DEPLOY, 'kubernetes')
const read = (path: string) => readFile(join(ROOT, path), 'utf8')
const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  )

/** `listenAndServe` (src/cli/serve.ts) exits at the latest this long after SIGTERM. */
const SHUTDOWN_BOUND_SECONDS = 10
/** The `serve --workers` primary kills its workers this long after SIGTERM (WORKER_STOP_MS in src/cli/serve.ts). */
const WORKERS_SHUTDOWN_BOUND_SECONDS = 15
/** What `valueFrom.fieldRef: metadata.name` gives a pod. */
const POD_NAME = 'mandate-6c9f7d8b5-q2w7x'
const CONFIG_ENV_NAMES = new Set(Object.keys(CONFIG_ENV))

// ---------------------------------------------------------------- plumbing

type Obj = { readonly [key: string]: unknown }
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const objOf = (v: unknown): Obj => (isObj(v) ? v : {})
const listOf = (v: unknown): readonly unknown[] => (Array.isArray(v) ? v : [])
const strOf = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined)
function dig(v: unknown, ...path: string[]): unknown {
  for (const key of path) v = objOf(v)[key]
  return v
}
/** Every `key: value` of `subset` is in `labels`. */
const within = (subset: unknown, labels: unknown) =>
  isObj(subset) && Object.keys(subset).length > 0 && Object.entries(subset).every(([k, v]) => objOf(labels)[k] === v)

const tmp = await mkdtemp(join(tmpdir(), 'mandate-deploy-'))
afterAll(() => rm(tmp, { recursive: true, force: true }))
let tmpFiles = 0

/** Runs the real loader on a config text, as `mandate serve` would (no --dev). */
async function resolveConfig(text: string, env: Readonly<Record<string, string>>): Promise<{ config?: Config; issues: readonly string[] }> {
  const file = join(tmp, `config-${++tmpFiles}.yaml`)
  await writeFile(file, text)
  const result = await loadConfig(file, env, { dev: false })
  return result.ok ? { config: result.config, issues: [] } : { issues: result.issues }
}

/** Writes `text` to a file of its own under the test's temp directory; returns its path. */
async function stage(text: string, name: string): Promise<string> {
  const file = join(tmp, `${++tmpFiles}-${name}`)
  await writeFile(file, text)
  return file
}

/** The admin keys file a container reads: MANDATE_ADMIN_KEYS_FILE, else `admin.keys_file` of its config text. */
function adminKeysFileOf(text: string, env: Readonly<Record<string, string>>): string | undefined {
  if ((env['MANDATE_ADMIN_KEYS_FILE'] ?? '') !== '') return env['MANDATE_ADMIN_KEYS_FILE']
  try {
    return strOf(dig(parse(text) as unknown, 'admin', 'keys_file'))
  } catch {
    // Bad YAML: the loader reports it.
    return undefined
  }
}

/** A valid admin keys file, for mounts whose real file is not in the repository (deploy/secrets/). */
const GENERATED_ADMIN_KEYS = `- name: deploy-test\n  sha256: "${createHash('sha256').update(randomBytes(32)).digest('hex')}"\n  roles: [admin]\n`

/** Runs the real policy loader on `files` (name → text), as `mandate policy check` would. */
async function checkPolicies(files: Readonly<Record<string, string>>): Promise<readonly string[]> {
  const dir = join(tmp, `policies-${++tmpFiles}`)
  await mkdir(dir)
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text)
  const result = await loadPolicies(dir)
  return result.ok ? [] : result.issues.map((i) => formatIssue(i).replace(dir, '<policies>'))
}

// -------------------------------------------------------------- Dockerfile

interface Instruction {
  readonly op: string
  readonly args: string
}
interface Stage {
  readonly from: string
  readonly name: string | undefined
  readonly instructions: readonly Instruction[]
}

/** Stages of a Dockerfile, continuation lines joined, comments dropped. */
function parseDockerfile(text: string): Stage[] {
  const lines: string[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue
    const line = raw.replace(/\s+$/, '')
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `
      continue
    }
    if (pending + line !== '') lines.push((pending + line).trim())
    pending = ''
  }
  const stages: { from: string; name: string | undefined; instructions: Instruction[] }[] = []
  for (const line of lines) {
    const [op = '', ...rest] = line.split(/\s+/)
    const args = rest.join(' ')
    if (op.toUpperCase() === 'FROM') {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(args)
      stages.push({ from: m?.[1] ?? args, name: m?.[2], instructions: [] })
    } else {
      stages.at(-1)?.instructions.push({ op: op.toUpperCase(), args })
    }
  }
  return stages
}

/** `ENV A=1 B=2` and the legacy `ENV A 1`. */
function envOfInstruction(args: string): Record<string, string> {
  const env: Record<string, string> = {}
  if (/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    for (const m of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|'[^']*'|\S*)/g)) {
      env[m[1] as string] = (m[2] as string).replace(/^(["'])(.*)\1$/, '$2')
    }
  } else {
    const [name, ...value] = args.split(/\s+/)
    if (name !== undefined) env[name] = value.join(' ')
  }
  return env
}

const dockerfile = parseDockerfile(await read('Dockerfile'))
const runtime = dockerfile.at(-1)
const runtimeOps = (op: string) => (runtime?.instructions ?? []).filter((i) => i.op === op)
/** What the image's ENV sets, for every container that runs it. */
const imageEnv: Record<string, string> = Object.assign({}, ...runtimeOps('ENV').map((i) => envOfInstruction(i.args)))

// -------------------------------------------------------------- Kubernetes

interface Manifest {
  readonly file: string
  readonly kind: string
  readonly name: string
  readonly body: Obj
}
const at = (m: Manifest, field: string) => `deploy/kubernetes/${m.file} (${m.kind} ${m.name}): ${field}`

async function loadManifests(): Promise<{ manifests: Manifest[]; problems: string[] }> {
  const manifests: Manifest[] = []
  const problems: string[] = []
  for (const file of (await readdir(K8S)).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of parseAllDocuments(await readFile(join(K8S, file), 'utf8'))) {
      for (const e of doc.errors) problems.push(`deploy/kubernetes/${file}: YAML: ${e.message.split('\n')[0] ?? ''}`)
      const body = doc.toJS() as unknown
      if (body === null || body === undefined) continue
      if (!isObj(body)) {
        problems.push(`deploy/kubernetes/${file}: a document is not a mapping`)
        continue
      }
      manifests.push({ file, kind: strOf(body['kind']) ?? '', name: strOf(dig(body, 'metadata', 'name')) ?? '', body })
    }
  }
  return { manifests, problems }
}
const k8s = await loadManifests()
const manifests = k8s.manifests
const byKind = (kind: string) => manifests.filter((m) => m.kind === kind)
const named = (kind: string, name: string | undefined) => manifests.find((m) => m.kind === kind && m.name === name)

/** The pod template of a workload. */
function podSpecOf(m: Manifest): Obj | undefined {
  if (m.kind === 'CronJob') return objOf(dig(m.body, 'spec', 'jobTemplate', 'spec', 'template', 'spec'))
  if (['Deployment', 'StatefulSet', 'DaemonSet', 'Job'].includes(m.kind)) return objOf(dig(m.body, 'spec', 'template', 'spec'))
  return undefined
}

interface PodContainer {
  readonly manifest: Manifest
  readonly pod: Obj
  readonly container: Obj
  readonly where: string
}
/** Containers that run the Mandate image (its repository's last path segment is `mandate`). */
const mandateContainers: PodContainer[] = manifests.flatMap((m) => {
  const pod = podSpecOf(m)
  if (pod === undefined) return []
  return listOf(pod['containers'])
    .filter(isObj)
    .flatMap((container, i) => {
      const image = strOf(container['image']) ?? ''
      const repo = image.replace(/[@:][^/]*$/, '')
      return repo.split('/').at(-1) === 'mandate'
        ? [{ manifest: m, pod, container, where: at(m, `containers[${i}] (${strOf(container['name']) ?? '?'})`) }]
        : []
    })
})
const deployment = byKind('Deployment').find((m) => mandateContainers.some((c) => c.manifest === m))
const broker = mandateContainers.find((c) => c.manifest === deployment)

/** A key of a Secret or ConfigMap manifest: `stringData`/`data` (base64) or `data`. */
function keyOf(m: Manifest | undefined, key: string): string | undefined {
  if (m === undefined) return undefined
  const plain = strOf(dig(m.body, 'stringData', key)) ?? (m.kind === 'ConfigMap' ? strOf(dig(m.body, 'data', key)) : undefined)
  if (plain !== undefined) return plain
  const encoded = strOf(dig(m.body, 'data', key))
  return encoded === undefined ? undefined : Buffer.from(encoded, 'base64').toString('utf8')
}
const keysOf = (m: Manifest | undefined) => (m === undefined ? [] : [...Object.keys(objOf(m.body['stringData'])), ...Object.keys(objOf(m.body['data']))])

/** The environment a container gets: its image's ENV, then `env` and `envFrom`, values taken from the manifests here. */
function containerEnv(c: PodContainer, problems: string[]): Record<string, string> {
  const env: Record<string, string> = { ...imageEnv }
  for (const from of listOf(c.container['envFrom'])) {
    const ref =
      objOf(dig(from, 'secretRef'))['name'] !== undefined ? ['Secret', dig(from, 'secretRef', 'name')] : ['ConfigMap', dig(from, 'configMapRef', 'name')]
    const source = named(ref[0] as string, strOf(ref[1]))
    if (source === undefined)
      problems.push(`${c.where}.envFrom: ${String(ref[0])} ${String(ref[1])} is defined nowhere in deploy/kubernetes, so its variables cannot be checked`)
    for (const key of keysOf(source)) env[key] = keyOf(source, key) ?? ''
  }
  for (const e of listOf(c.container['env']).filter(isObj)) {
    const name = strOf(e['name']) ?? ''
    const field = `${c.where}.env.${name}`
    if (e['value'] !== undefined) {
      env[name] = strOf(e['value']) ?? ''
      continue
    }
    const fieldPath = strOf(dig(e, 'valueFrom', 'fieldRef', 'fieldPath'))
    const secret = objOf(dig(e, 'valueFrom', 'secretKeyRef'))
    const configMap = objOf(dig(e, 'valueFrom', 'configMapKeyRef'))
    if (fieldPath !== undefined) {
      env[name] = fieldPath === 'metadata.name' ? POD_NAME : 'field'
    } else if (secret['name'] !== undefined || configMap['name'] !== undefined) {
      const [kind, ref] = secret['name'] !== undefined ? ['Secret', secret] : ['ConfigMap', configMap]
      const value = keyOf(named(kind, strOf(ref['name'])), strOf(ref['key']) ?? '')
      if (value === undefined) {
        problems.push(
          `${field}: ${kind} ${String(ref['name'])} key ${String(ref['key'])} is in no ${kind} of deploy/kubernetes (secret.template.yaml shows each Secret)`,
        )
      }
      env[name] = value ?? ''
    } else {
      problems.push(`${field}: neither a value nor a reference`)
    }
  }
  return env
}

/** The volume behind `path` in a container: the longest mountPath that holds it. */
function mountOf(c: PodContainer, path: string): { volume: Obj; mountPath: string; rest: string; readOnly: boolean } | undefined {
  let best: { volume: Obj; mountPath: string; rest: string; readOnly: boolean } | undefined
  for (const mount of listOf(c.container['volumeMounts']).filter(isObj)) {
    const mountPath = strOf(mount['mountPath']) ?? ''
    if (dig(mount, 'subPath') !== undefined) continue
    const rest = posix.relative(mountPath, path)
    if (rest.startsWith('..') || posix.isAbsolute(rest)) continue
    if (best !== undefined && best.mountPath.length >= mountPath.length) continue
    const volume = listOf(c.pod['volumes'])
      .filter(isObj)
      .find((v) => v['name'] === mount['name'])
    if (volume !== undefined) best = { volume, mountPath, rest, readOnly: mount['readOnly'] === true }
  }
  return best
}

/** The Secret or ConfigMap of deploy/kubernetes behind a volume. */
function sourceOf(volume: Obj | undefined): Manifest | undefined {
  const secret = strOf(dig(volume, 'secret', 'secretName'))
  return secret !== undefined ? named('Secret', secret) : named('ConfigMap', strOf(dig(volume, 'configMap', 'name')))
}

/**
 * Resolves the config a Kubernetes container runs with: its env, the file
 * MANDATE_CONFIG names, read from its ConfigMap, and the admin keys file
 * (`adminKeysFile`, its path in the container), read from the Secret or
 * ConfigMap mounted there.
 */
async function k8sConfig(c: PodContainer, problems: string[]): Promise<{ env: Record<string, string>; config?: Config; adminKeysFile?: string }> {
  const env = containerEnv(c, problems)
  const path = env['MANDATE_CONFIG']
  if (path === undefined) {
    problems.push(`${c.where}.env.MANDATE_CONFIG: not set, so the container runs without the config file`)
    return { env }
  }
  const mount = mountOf(c, path)
  const map = named('ConfigMap', strOf(dig(mount?.volume, 'configMap', 'name')))
  const text = mount === undefined ? undefined : keyOf(map, mount.rest)
  if (text === undefined) {
    problems.push(`${c.where}.env.MANDATE_CONFIG: ${path} is not a key of a ConfigMap of deploy/kubernetes mounted there`)
    return { env }
  }
  const loaderEnv: Record<string, string> = { DATABASE_URL: '', REDIS_URL: '', ...env }
  const adminKeysFile = adminKeysFileOf(text, env)
  let keys: { source: Manifest; rest: string; staged: string } | undefined
  if (adminKeysFile !== undefined) {
    const keysMount = mountOf(c, adminKeysFile)
    const source = sourceOf(keysMount?.volume)
    const keysText = keysMount === undefined ? undefined : keyOf(source, keysMount.rest)
    if (source === undefined || keysMount === undefined || keysText === undefined) {
      problems.push(
        `${c.where}: admin keys file ${adminKeysFile} is not a key of a Secret (secret.template.yaml) or ConfigMap of deploy/kubernetes mounted there`,
      )
      return { env, adminKeysFile }
    }
    keys = { source, rest: keysMount.rest, staged: await stage(keysText, 'admin-keys.yaml') }
    loaderEnv['MANDATE_ADMIN_KEYS_FILE'] = keys.staged
  }
  const { config, issues } = await resolveConfig(text, loaderEnv)
  for (const issue of issues) {
    if (keys !== undefined && issue.startsWith('admin.keys_file')) {
      problems.push(
        `deploy/kubernetes/${keys.source.file} (${keys.source.kind} ${keys.source.name}): ${keys.rest}: ${issue.replace(keys.staged, adminKeysFile ?? '')}`,
      )
    } else {
      problems.push(`deploy/kubernetes/${map?.file ?? '?'} (ConfigMap ${map?.name ?? '?'}): ${mount?.rest ?? '?'}: ${issue}`)
    }
  }
  const found = adminKeysFile === undefined ? {} : { adminKeysFile }
  return config === undefined ? { env, ...found } : { env, config, ...found }
}

/** A container port by number or name, as probes and Services give it. */
function portNumber(c: PodContainer, port: unknown): number | undefined {
  if (typeof port === 'number') return port
  const p = listOf(c.container['ports'])
    .filter(isObj)
    .find((x) => x['name'] === port)
  return typeof p?.['containerPort'] === 'number' ? p['containerPort'] : undefined
}

const podLabels = () => dig(deployment?.body, 'spec', 'template', 'metadata', 'labels')
/** The Services that select the broker pods. */
const brokerServicesK8s = () => byKind('Service').filter((svc) => within(dig(svc.body, 'spec', 'selector'), podLabels()))
/** The NetworkPolicy that selects the broker pods. */
const brokerPolicy = () => byKind('NetworkPolicy').find((np) => within(dig(np.body, 'spec', 'podSelector', 'matchLabels'), podLabels()))

// ----------------------------------------------------------------- compose

/** `${VAR:-default}` → default (tests set no variables); a bare `${VAR}` stays, and is reported. */
const interpolate = (s: string) => s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}/g, '$2')

const composeText = await readFile(join(DEPLOY, 'compose.yaml'), 'utf8')
// Compose resolves `<<` merge keys (YAML 1.1); so must this parse.
const compose = objOf(parse(composeText, { merge: true }) as unknown)
const services = objOf(compose['services'])
const service = (name: string) => objOf(services[name])
const composeWhere = (name: string, field: string) => `deploy/compose.yaml: services.${name}.${field}`

function composeEnv(name: string): Record<string, string> {
  const raw = service(name)['environment']
  const env: Record<string, string> = {}
  if (Array.isArray(raw)) {
    for (const item of raw.map(String)) {
      const i = item.indexOf('=')
      env[i < 0 ? item : item.slice(0, i)] = i < 0 ? '' : interpolate(item.slice(i + 1))
    }
  } else {
    for (const [k, v] of Object.entries(objOf(raw))) env[k] = interpolate(strOf(v) ?? '')
  }
  return env
}

interface ComposeMount {
  readonly type: 'bind' | 'volume'
  readonly source: string
  readonly target: string
  readonly readOnly: boolean
}
function composeMounts(name: string): ComposeMount[] {
  return listOf(service(name)['volumes']).map((v): ComposeMount => {
    if (isObj(v)) {
      return {
        type: v['type'] === 'bind' ? 'bind' : 'volume',
        source: strOf(v['source']) ?? '',
        target: strOf(v['target']) ?? '',
        readOnly: v['read_only'] === true,
      }
    }
    const [source = '', target = '', mode = ''] = String(v).split(':')
    return { type: /^[./~]/.test(source) ? 'bind' : 'volume', source, target, readOnly: mode.split(',').includes('ro') }
  })
}
const composeMountAt = (name: string, target: string) => composeMounts(name).find((m) => m.target === target)
/** The mount `path` lies in: the longest target that holds it. */
const composeMountHolding = (name: string, path: string) =>
  composeMounts(name)
    .filter((m) => {
      const rest = posix.relative(m.target, path)
      return !rest.startsWith('..') && !posix.isAbsolute(rest)
    })
    .sort((a, b) => b.target.length - a.target.length)[0]

/** Services built from the repository's Dockerfile: the brokers. */
const brokerServices = Object.keys(services).filter((name) => {
  const build = service(name)['build']
  const context = typeof build === 'string' ? build : strOf(dig(build, 'context'))
  const file = strOf(dig(build, 'dockerfile')) ?? 'Dockerfile'
  return context !== undefined && join(DEPLOY, context, file) === join(ROOT, 'Dockerfile')
})
const imageService = (pattern: RegExp) => Object.keys(services).find((name) => pattern.test(strOf(service(name)['image']) ?? ''))

/**
 * Resolves the config a broker service runs with. Its admin keys file lives in
 * the git-ignored deploy/secrets/, so the loader gets a generated valid one in
 * its place, provided the path is on a bind mount.
 */
async function composeConfig(name: string, problems: string[]): Promise<{ env: Record<string, string>; config?: Config; adminKeysFile?: string }> {
  const env = { ...imageEnv, ...composeEnv(name) }
  for (const [k, v] of Object.entries(env)) {
    if (v.includes('${')) problems.push(composeWhere(name, `environment.${k}`) + `: ${v} needs a variable without a default`)
  }
  const path = env['MANDATE_CONFIG']
  const mount = path === undefined ? undefined : composeMountAt(name, path)
  if (path === undefined || mount?.type !== 'bind') {
    problems.push(composeWhere(name, 'environment.MANDATE_CONFIG') + `: ${path ?? 'not set'} is not a file bind-mounted into the service`)
    return { env }
  }
  const text = await readFile(join(DEPLOY, mount.source), 'utf8').catch(() => undefined)
  if (text === undefined) {
    problems.push(composeWhere(name, 'volumes') + `: ${mount.source} (the config file) does not exist`)
    return { env }
  }
  const loaderEnv = { ...env }
  const adminKeysFile = adminKeysFileOf(text, env)
  if (adminKeysFile !== undefined) {
    if (composeMountHolding(name, adminKeysFile)?.type !== 'bind') {
      problems.push(composeWhere(name, 'volumes') + `: the admin keys file ${adminKeysFile} is on no bind mount`)
      return { env, adminKeysFile }
    }
    loaderEnv['MANDATE_ADMIN_KEYS_FILE'] = await stage(GENERATED_ADMIN_KEYS, 'admin-keys.yaml')
  }
  const { config, issues } = await resolveConfig(text, loaderEnv)
  for (const issue of issues) problems.push(`deploy/${posix.normalize(mount.source)} (as ${name} runs it): ${issue}`)
  const found = adminKeysFile === undefined ? {} : { adminKeysFile }
  return config === undefined ? { env, ...found } : { env, config, ...found }
}

interface NginxDirective {
  readonly name: string
  readonly args: readonly string[]
  readonly block?: readonly NginxDirective[]
}

/** The directives of an nginx config, blocks nested, comments dropped (no `#` inside quotes, which deploy/nginx.conf never has). */
function parseNginx(text: string): NginxDirective[] {
  const tokens = [...text.replace(/#[^\n]*/g, '').matchAll(/"[^"]*"|'[^']*'|[{};]|[^\s{};]+/g)].map((m) => m[0])
  let i = 0
  const block = (): NginxDirective[] => {
    const out: NginxDirective[] = []
    while (i < tokens.length) {
      const first = tokens[i++] as string
      if (first === '}') return out
      const words = [first]
      while (i < tokens.length && !['{', '}', ';'].includes(tokens[i] as string)) words.push(tokens[i++] as string)
      const [name = '', ...args] = words.map((w) => w.replace(/^(["'])(.*)\1$/, '$2'))
      out.push(tokens[i++] === '{' ? { name, args, block: block() } : { name, args })
    }
    return out
  }
  return block()
}

/**
 * Where nginx sends `path` arriving on its listen port `port`: the `host:port`
 * of each server of the upstream that the matching location proxies to.
 * Prefix and exact locations only (the longest prefix wins, as in nginx when
 * no regex location is involved); undefined when nothing matches.
 */
function nginxRoute(conf: readonly NginxDirective[], port: number, path: string): string[] | undefined {
  const listens = (d: NginxDirective) => (d.block ?? []).some((x) => x.name === 'listen' && Number(/(\d+)$/.exec(x.args[0] ?? '')?.[1]) === port)
  const server = conf.find((d) => d.name === 'server' && listens(d))
  let best: { length: number; location: NginxDirective } | undefined
  for (const location of (server?.block ?? []).filter((d) => d.name === 'location')) {
    const [first = '', second = ''] = location.args
    if (first === '~' || first === '~*') continue
    const exact = first === '='
    const prefix = exact || first === '^~' ? second : first
    if (exact ? path !== prefix : !path.startsWith(prefix)) continue
    const length = exact ? Infinity : prefix.length
    if (best === undefined || length > best.length) best = { length, location }
  }
  const pass = best?.location.block?.find((d) => d.name === 'proxy_pass')?.args[0]
  if (pass === undefined || !URL.canParse(pass)) return undefined
  const target = new URL(pass)
  const upstream = conf.find((d) => d.name === 'upstream' && d.args[0] === target.hostname)
  if (upstream === undefined) return [`${target.hostname}:${target.port || '80'}`]
  return (upstream.block ?? []).filter((d) => d.name === 'server').map((d) => d.args[0] ?? '')
}

/** Findings about a fleet member's resolved config that hold wherever it runs. */
function fleetConfigProblems(where: string, config: Config): string[] {
  const problems: string[] = []
  if (config.signing.generate_if_missing)
    problems.push(`${where}: signing.generate_if_missing: must be false in a fleet (each instance would make its own key)`)
  if (config.signing.keys_file === undefined) problems.push(`${where}: signing.keys_file: not set, so the keys would be looked for under data_dir`)
  if (config.storage.database_url === undefined) problems.push(`${where}: DATABASE_URL: not set, so each instance would open a PGlite database of its own`)
  if (config.storage.redis_url === undefined) problems.push(`${where}: REDIS_URL: not set, so a revocation would reach one instance only`)
  if (config.audit.checkpoint_dir === undefined) problems.push(`${where}: audit.checkpoint_dir: not set, so checkpoints would land under data_dir`)
  if (config.instance_id === undefined) problems.push(`${where}: MANDATE_INSTANCE_ID: not set, so audit records name a container hostname`)
  if (config.listen.admin_port === undefined)
    problems.push(`${where}: listen.admin_port: not set, so a token flood delays the kill switch (it shares the token endpoint's event loop)`)
  return problems
}

/** The port the OTLP/HTTP receiver of deploy/otel-collector.yaml listens on. */
async function collectorOtlpHttpPort(file: string): Promise<number | undefined> {
  const collector = parse(await readFile(file, 'utf8')) as unknown
  const endpoint = strOf(dig(collector, 'receivers', 'otlp', 'protocols', 'http', 'endpoint'))
  if (endpoint === undefined) return dig(collector, 'receivers', 'otlp', 'protocols', 'http') === undefined ? undefined : 4318
  const port = Number(endpoint.split(':').at(-1))
  return Number.isInteger(port) ? port : undefined
}

// =================================================================== tests

describe('the broker routes the deployment probes', () => {
  it('/healthz and /readyz exist on the real app and answer 200 when ready', async () => {
    const b = await startTestBroker()
    try {
      for (const path of ['/healthz', '/readyz']) {
        expect((await b.mandate.app.request(path)).status, `GET ${path} (src/http/app.ts)`).toBe(200)
      }
    } finally {
      await b.close()
    }
  })
})

describe('Dockerfile', () => {
  const where = (field: string) => `Dockerfile: ${field}`

  it('is multi-stage, and the runtime stage ships what `mandate serve` reads at run time', () => {
    const problems: string[] = []
    if (dockerfile.length < 2) problems.push(where('FROM: one stage; build with dev dependencies in another'))
    const copies = runtimeOps('COPY').map((i) => i.args)
    const copied = (what: RegExp) => copies.some((a) => what.test(a))
    if (!copied(/--from=\S+\s+\S*dist\/?\s/)) problems.push(where('COPY: the runtime stage does not take dist/ from a build stage'))
    if (!copied(/(^|\s)package\.json(\s|$)/)) problems.push(where('COPY: package.json is missing ("type": "module" makes dist/ load as ESM)'))
    if (!copied(/(^|\s)bin\/?\s/)) problems.push(where('COPY: bin/ is missing (the entrypoint bin/mandate.js)'))
    // src/storage/database.ts finds them as ../../migrations from dist/storage/.
    if (!copied(/(^|\s)migrations\/?\s+\S*migrations/)) problems.push(where('COPY: migrations/ is missing (serve and migrate apply them at run time)'))
    const entry = runtimeOps('ENTRYPOINT')
      .map((i) => i.args)
      .join(' ')
    if (!entry.includes('bin/mandate.js')) problems.push(where(`ENTRYPOINT: ${entry || 'none'} does not run bin/mandate.js`))
    const cmd = runtimeOps('CMD').at(-1)?.args ?? ''
    if (!/"serve"/.test(cmd)) problems.push(where(`CMD: ${cmd || 'none'} does not run serve`))
    expect(problems).toEqual([])
  })

  it('installs production dependencies only in the runtime image', async () => {
    const problems: string[] = []
    const nodeModules = runtimeOps('COPY').find((i) => /node_modules/.test(i.args))
    const fromStage = /--from=(\S+)/.exec(nodeModules?.args ?? '')?.[1]
    const installer = fromStage === undefined ? runtime : dockerfile.find((s) => s.name === fromStage)
    const installs = (installer?.instructions ?? []).filter((i) => i.op === 'RUN' && /\bnpm (ci|install)\b/.test(i.args))
    if (installs.length === 0) problems.push(where('RUN npm ci: the runtime image gets its node_modules from no install step'))
    for (const i of installs) if (!/--omit=dev\b/.test(i.args)) problems.push(where(`RUN ${i.args}: installs dev dependencies into the runtime image`))
    // What dist/ imports at run time must be a production dependency, or the image cannot start.
    const pkg = JSON.parse(await read('package.json')) as { dependencies?: Record<string, string> }
    const deps = new Set(Object.keys(pkg.dependencies ?? {}))
    const files = (await readdir(join(ROOT, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts'))
    for (const file of files) {
      const text = await readFile(join(ROOT, 'src', file), 'utf8')
      for (const m of text.matchAll(/^(?:import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm)) {
        const spec = m[2] as string
        if (m[1] !== undefined || spec.startsWith('.') || spec.startsWith('node:')) continue
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] as string)
        if (!deps.has(name)) problems.push(`src/${file}: imports ${spec}, which is not in package.json "dependencies" (the image installs no others)`)
      }
    }
    expect(problems).toEqual([])
  })

  it('runs as a non-root user, and sets only variables the config reads', () => {
    const problems: string[] = []
    const user = runtimeOps('USER').at(-1)?.args.split(':')[0]
    if (user === undefined || user === 'root' || user === '0') problems.push(where(`USER: ${user ?? 'none'}; the runtime stage must run as a non-root user`))
    else if (!/^[1-9][0-9]*$/.test(user)) problems.push(where(`USER: ${user}; give it by number, or Kubernetes cannot verify runAsNonRoot`))
    for (const name of Object.keys(imageEnv)) {
      if (!CONFIG_ENV_NAMES.has(name)) problems.push(where(`ENV ${name}: not read by the config (CONFIG_ENV in src/config/load.ts)`))
    }
    expect(problems).toEqual([])
  })

  it('exposes the port the config resolves to, and its HEALTHCHECK asks /healthz there', async () => {
    const problems: string[] = []
    const { config, issues } = await resolveConfig('issuer: https://mandate.example.com\n', imageEnv)
    expect(issues, 'the image environment alone').toEqual([])
    const port = config?.listen.port
    const exposed = runtimeOps('EXPOSE')
      .flatMap((i) => i.args.split(/\s+/))
      .map((p) => Number(p.split('/')[0]))
    if (port === undefined || !exposed.includes(port))
      problems.push(where(`EXPOSE ${exposed.join(' ') || 'none'}: the config resolves listen.port ${String(port)}`))
    const check = runtimeOps('HEALTHCHECK').at(-1)?.args ?? ''
    if (!/\bCMD\b/.test(check)) problems.push(where('HEALTHCHECK: none'))
    if (!check.includes('/healthz')) problems.push(where(`HEALTHCHECK: does not ask /healthz (${check})`))
    const fallback = /process\.env\.PORT\s*\|\|\s*(\d+)/.exec(check)?.[1]
    if (!check.includes(`:${String(port)}/`) && !(fallback !== undefined && Number(fallback) === port)) {
      problems.push(where(`HEALTHCHECK: does not ask port ${String(port)} (the resolved listen.port), neither literally nor as PORT with that default`))
    }
    expect(problems).toEqual([])
  })

  it('.dockerignore lets in what the Dockerfile copies and keeps secrets and local state out', async () => {
    const rules = (await read('.dockerignore'))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'))
      .map((l) => {
        const negate = l.startsWith('!')
        const glob = posix.normalize((negate ? l.slice(1) : l).replace(/^\/+/, '')).replace(/\/$/, '')
        const re = new RegExp(
          `^${glob
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*\*/g, '\0')
            .replace(/\*/g, '[^/]*')
            .replace(/\?/g, '[^/]')
            .replace(/\0/g, '.*')}$`,
        )
        return { negate, re }
      })
    // Docker: the last matching rule decides, and an excluded directory excludes what it holds.
    const ignoredItself = (path: string) => rules.reduce((ignored, r) => (r.re.test(path) ? !r.negate : ignored), false)
    const ignored = (path: string) => path.split('/').some((_, i, parts) => ignoredItself(parts.slice(0, i + 1).join('/')))
    const problems: string[] = []
    for (const stage of dockerfile) {
      for (const copy of stage.instructions.filter((i) => i.op === 'COPY' && !/--from=/.test(i.args))) {
        const sources = copy.args
          .split(/\s+/)
          .filter((a) => !a.startsWith('--'))
          .slice(0, -1)
        for (const source of sources)
          if (ignored(posix.normalize(source).replace(/\/$/, ''))) problems.push(`.dockerignore: excludes ${source}, which the Dockerfile copies`)
      }
    }
    for (const secret of ['deploy/secrets/signing-keys.json', '.env', 'data/signing-keys.json', 'node_modules', 'keys.pem', 'scratch']) {
      if (!ignored(secret)) problems.push(`.dockerignore: lets ${secret} into the build context`)
    }
    expect(problems).toEqual([])
  })
})

describe('deploy/mandate.yaml', () => {
  it('passes the config loader with the environment the deployments give it', async () => {
    const text = await readFile(join(DEPLOY, 'mandate.yaml'), 'utf8')
    const env = { DATABASE_URL: 'postgres://mandate:placeholder@postgres:5432/mandate', REDIS_URL: 'redis://redis:6379', MANDATE_INSTANCE_ID: POD_NAME }
    const { config, issues } = await resolveConfig(text, { ...imageEnv, ...env })
    expect(issues, 'deploy/mandate.yaml').toEqual([])
    expect(fleetConfigProblems('deploy/mandate.yaml', config as Config)).toEqual([])
  })
})

describe('deploy/compose.yaml', () => {
  const postgres = imageService(/^postgres:/)
  const redis = imageService(/^redis:/)
  const collector = imageService(/^otel\/opentelemetry-collector/)

  it('runs two brokers from the repository Dockerfile, PostgreSQL 15+, Redis and an OpenTelemetry collector', () => {
    const problems: string[] = []
    if (brokerServices.length < 2) problems.push(`deploy/compose.yaml: services: ${brokerServices.length} built from ../Dockerfile; two brokers expected`)
    const major = Number(/^postgres:(\d+)/.exec(strOf(service(postgres ?? '')['image']) ?? '')?.[1])
    if (postgres === undefined || !(major >= 15)) problems.push('deploy/compose.yaml: services: no postgres:15 or later image')
    if (redis === undefined) problems.push('deploy/compose.yaml: services: no redis image')
    if (collector === undefined) problems.push('deploy/compose.yaml: services: no otel/opentelemetry-collector image')
    expect(problems).toEqual([])
  })

  it('sets only variables the config reads, and each broker resolves a valid fleet config', async () => {
    const problems: string[] = []
    const ids = new Map<string, string>()
    for (const name of brokerServices) {
      for (const key of Object.keys(composeEnv(name))) {
        if (!CONFIG_ENV_NAMES.has(key)) problems.push(composeWhere(name, `environment.${key}`) + ': not read by the config (CONFIG_ENV in src/config/load.ts)')
      }
      const { config } = await composeConfig(name, problems)
      if (config === undefined) continue
      problems.push(...fleetConfigProblems(composeWhere(name, 'environment'), config))
      const other = ids.get(config.instance_id ?? '')
      if (other !== undefined) problems.push(composeWhere(name, 'environment.MANDATE_INSTANCE_ID') + `: ${String(config.instance_id)} is ${other}'s too`)
      ids.set(config.instance_id ?? '', name)
    }
    expect(problems).toEqual([])
  })

  it('mounts the config, policies, signing keys, admin keys and checkpoints where each broker’s config points', async () => {
    const problems: string[] = []
    const checkpointVolumes = new Set<string>()
    for (const name of brokerServices) {
      const { config, adminKeysFile } = await composeConfig(name, [])
      if (config === undefined) continue
      const admin = composeMountHolding(name, adminKeysFile ?? '')
      if (adminKeysFile === undefined) {
        problems.push(composeWhere(name, 'environment.MANDATE_ADMIN_KEYS_FILE') + ': not set, so the admin key hashes would have to be in mandate.yaml')
      } else if (admin?.type !== 'bind' || !admin.readOnly || !`${posix.normalize(admin.source)}/`.startsWith('secrets/')) {
        problems.push(
          composeWhere(name, 'volumes') + `: the admin keys file ${adminKeysFile} is not on a read-only bind mount of the git-ignored deploy/secrets/`,
        )
      }
      const keysFile = config.signing.keys_file ?? ''
      const keys = composeMountHolding(name, keysFile)
      if (keys?.type !== 'bind' || !keys.readOnly) {
        problems.push(composeWhere(name, 'volumes') + `: signing.keys_file ${keysFile} is not on a read-only bind mount`)
      } else if (keys.target === keysFile) {
        // `mandate keys rotate` writes a new file and renames it over the old one.
        problems.push(composeWhere(name, 'volumes') + `: ${keysFile} is mounted as a single file, which never shows a rotated key set; mount its directory`)
      } else if (!`${posix.normalize(keys.source)}/`.startsWith('secrets/')) {
        problems.push(composeWhere(name, 'volumes') + `: the signing keys come from ${keys.source}, outside the git-ignored deploy/secrets/`)
      }
      const policies = composeMountAt(name, config.policies_dir)
      if (policies?.type !== 'bind' || !policies.readOnly) {
        problems.push(composeWhere(name, 'volumes') + `: policies_dir ${config.policies_dir} is not a read-only bind mount`)
      } else {
        const result = await loadPolicies(join(DEPLOY, policies.source))
        if (!result.ok) problems.push(...result.issues.map((i) => composeWhere(name, 'volumes') + `: ${policies.source}: ${formatIssue(i)}`))
      }
      const checkpoints = composeMountAt(name, config.audit.checkpoint_dir ?? '')
      if (checkpoints?.type !== 'volume')
        problems.push(composeWhere(name, 'volumes') + `: audit.checkpoint_dir ${String(config.audit.checkpoint_dir)} is not on a named volume`)
      else checkpointVolumes.add(checkpoints.source)
    }
    // One directory for `mandate audit verify --checkpoints`.
    if (checkpointVolumes.size > 1)
      problems.push(`deploy/compose.yaml: the brokers write checkpoints to different volumes (${[...checkpointVolumes].join(', ')})`)
    const ignore = await readFile(join(DEPLOY, 'secrets', '.gitignore'), 'utf8').catch(() => '')
    if (!ignore.split('\n').includes('*')) problems.push('deploy/secrets/.gitignore: must ignore everything (*), so no key file is committed')
    expect(problems).toEqual([])
  })

  it('points the brokers at the compose PostgreSQL, Redis and the collector’s OTLP/HTTP port', async () => {
    const problems: string[] = []
    const collectorName = collector ?? 'otel-collector'
    const configArg = listOf(service(collectorName)['command'])
      .map(String)
      .find((a) => a.startsWith('--config='))
      ?.slice('--config='.length)
    const collectorFile = configArg === undefined ? undefined : composeMountAt(collectorName, configArg)
    let otlpPort: number | undefined
    if (collectorFile?.type !== 'bind') {
      problems.push(composeWhere(collectorName, 'command') + `: --config=${String(configArg)} is not a file mounted from deploy/`)
    } else {
      otlpPort = await collectorOtlpHttpPort(join(DEPLOY, collectorFile.source))
      if (otlpPort === undefined) problems.push(`deploy/${posix.normalize(collectorFile.source)}: receivers.otlp.protocols.http: no OTLP/HTTP receiver`)
      const pipelines = objOf(dig(parse(await readFile(join(DEPLOY, collectorFile.source), 'utf8')) as unknown, 'service', 'pipelines'))
      for (const signal of ['traces', 'metrics']) {
        if (!listOf(dig(pipelines, signal, 'receivers')).includes('otlp'))
          problems.push(`deploy/${posix.normalize(collectorFile.source)}: service.pipelines.${signal}: does not receive otlp`)
      }
    }
    const pg = composeEnv(postgres ?? '')
    for (const name of brokerServices) {
      const env = composeEnv(name)
      const otel = env['OTEL_EXPORTER_OTLP_ENDPOINT']
      if (otel !== `http://${collectorName}:${String(otlpPort)}`) {
        problems.push(
          composeWhere(name, 'environment.OTEL_EXPORTER_OTLP_ENDPOINT') +
            `: ${String(otel)}, not the collector's OTLP/HTTP receiver http://${collectorName}:${String(otlpPort)}`,
        )
      }
      if ((env['OTEL_SERVICE_NAME'] ?? '') === '') problems.push(composeWhere(name, 'environment.OTEL_SERVICE_NAME') + ': not set')
      const db = URL.canParse(env['DATABASE_URL'] ?? '') ? new URL(env['DATABASE_URL'] as string) : undefined
      if (
        db === undefined ||
        db.hostname !== postgres ||
        db.username !== pg['POSTGRES_USER'] ||
        db.password !== pg['POSTGRES_PASSWORD'] ||
        db.pathname !== `/${pg['POSTGRES_DB'] ?? ''}`
      ) {
        problems.push(
          composeWhere(name, 'environment.DATABASE_URL') +
            `: does not name the ${String(postgres)} service with its POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB`,
        )
      }
      const rd = URL.canParse(env['REDIS_URL'] ?? '') ? new URL(env['REDIS_URL'] as string) : undefined
      if (rd?.hostname !== redis) problems.push(composeWhere(name, 'environment.REDIS_URL') + `: does not name the ${String(redis)} service`)
      for (const dep of [postgres, redis]) {
        if (dig(service(name), 'depends_on', dep ?? '', 'condition') !== 'service_healthy') {
          problems.push(composeWhere(name, `depends_on.${String(dep)}`) + ': the broker must wait for it to be healthy (it connects at start)')
        }
        if (service(dep ?? '')['healthcheck'] === undefined)
          problems.push(composeWhere(String(dep), 'healthcheck') + ': none, so depends_on cannot wait for it')
      }
    }
    expect(problems).toEqual([])
  })

  it('health-checks each broker on /readyz or /healthz at its port, and balances over both brokers there', async () => {
    const problems: string[] = []
    const upstream = await readFile(join(DEPLOY, 'nginx.conf'), 'utf8').catch(() => undefined)
    const servers = [...(upstream ?? '').matchAll(/^\s*server\s+([^\s:;]+):(\d+)/gm)].map((m) => `${m[1] as string}:${m[2] as string}`)
    for (const name of brokerServices) {
      const { config } = await composeConfig(name, [])
      // An invalid config is the previous check's finding.
      if (config === undefined) continue
      const port = config.listen.port
      const test = listOf(dig(service(name), 'healthcheck', 'test'))
        .map(String)
        .join(' ')
      if (!/\/(readyz|healthz)\b/.test(test)) problems.push(composeWhere(name, 'healthcheck.test') + `: asks neither /readyz nor /healthz (${test || 'none'})`)
      const fallback = /process\.env\.PORT\s*\|\|\s*(\d+)/.exec(test)?.[1]
      if (!test.includes(`:${String(port)}/`) && Number(fallback) !== port)
        problems.push(composeWhere(name, 'healthcheck.test') + `: does not ask port ${String(port)}`)
      const command = listOf(service(name)['command']).map(String)
      const bound = command.includes('--workers') || command.some((a) => a.startsWith('--workers=')) ? WORKERS_SHUTDOWN_BOUND_SECONDS : SHUTDOWN_BOUND_SECONDS
      const grace = /^(\d+)s$/.exec(strOf(service(name)['stop_grace_period']) ?? '')?.[1]
      if (!(Number(grace) > bound))
        problems.push(
          composeWhere(name, 'stop_grace_period') + `: ${String(grace)} s must exceed the broker's ${bound} s shutdown bound (Docker's default is 10 s)`,
        )
      if (command.length > 0 && command[0] !== 'serve') problems.push(composeWhere(name, 'command') + `: ${command.join(' ')} does not run serve`)
      if (upstream !== undefined && !servers.includes(`${name}:${String(port)}`))
        problems.push(`deploy/nginx.conf: upstream: no server ${name}:${String(port)}`)
    }
    if (upstream === undefined) problems.push('deploy/nginx.conf: missing (the load balancer of deploy/compose.yaml)')
    // The issuer agents assert to is the load balancer's address.
    const issuer = composeEnv(brokerServices[0] ?? '')['MANDATE_ISSUER'] ?? ''
    const published = Object.keys(services).flatMap((n) => listOf(service(n)['ports']).map((p) => String(p).split(':').at(-2)))
    if (URL.canParse(issuer) && !published.includes(new URL(issuer).port))
      problems.push(`deploy/compose.yaml: MANDATE_ISSUER ${issuer}: no service publishes that port`)
    expect(problems).toEqual([])
  })

  it('nginx sends the OAuth endpoints to the brokers’ listen.port and /admin/* to their listen.admin_port, published on loopback only', async () => {
    const problems: string[] = []
    const text = await readFile(join(DEPLOY, 'nginx.conf'), 'utf8').catch(() => undefined)
    if (text === undefined) return expect.fail('deploy/nginx.conf: missing (the load balancer of deploy/compose.yaml)')
    const conf = parseNginx(text)
    const lb = imageService(/^nginx:/)
    if (lb === undefined) return expect.fail('deploy/compose.yaml: services: no nginx image')
    // "[host:]published:target"; the short syntax is what compose.yaml uses.
    const published = listOf(service(lb)['ports']).map((p) => {
      const parts = String(p).split(':')
      return { spec: String(p), host: parts.length > 2 ? parts[0] : undefined, published: parts.at(-2), target: Number(parts.at(-1)) }
    })
    const configs = (await Promise.all(brokerServices.map(async (name) => ({ name, config: (await composeConfig(name, [])).config })))).filter(
      (c): c is { name: string; config: Config } => c.config !== undefined,
    )
    const sorted = (xs: readonly string[] | undefined) => JSON.stringify([...(xs ?? [])].sort())
    const main = configs.map(({ name, config }) => `${name}:${config.listen.port}`)
    const issuer = composeEnv(brokerServices[0] ?? '')['MANDATE_ISSUER'] ?? ''
    const front = published.find((p) => URL.canParse(issuer) && p.published === new URL(issuer).port)
    for (const path of ['/oauth2/token', '/revocations/feed', '/.well-known/jwks.json']) {
      const route = front === undefined ? undefined : nginxRoute(conf, front.target, path)
      if (sorted(route) !== sorted(main))
        problems.push(`deploy/nginx.conf: ${path} on the issuer's port goes to ${route?.join(', ') ?? 'nothing'}, not ${main.join(', ')}`)
    }
    // Its absence is the fleet config check's finding.
    const admin = configs.flatMap(({ name, config }) => (config.listen.admin_port === undefined ? [] : [`${name}:${config.listen.admin_port}`]))
    if (admin.length > 0) {
      const adminFronts = published.filter((p) => sorted(nginxRoute(conf, p.target, '/admin/revocations')) === sorted(admin))
      if (adminFronts.length === 0)
        problems.push(
          `deploy/nginx.conf, deploy/compose.yaml: no published port of ${lb} sends /admin/* to ${admin.join(', ')} (the brokers answer it nowhere else)`,
        )
      for (const p of adminFronts) {
        if (!['127.0.0.1', 'localhost', '::1'].includes(p.host ?? ''))
          problems.push(composeWhere(lb, 'ports') + `: ${p.spec}: the admin API is published beyond this machine; bind it to 127.0.0.1`)
      }
    }
    expect(problems).toEqual([])
  })
})

describe('deploy/kubernetes', () => {
  it('parses, and kustomization.yaml lists every manifest but the Secret template and the optional Job', async () => {
    const problems = [...k8s.problems]
    const kustomization = manifests.find((m) => m.file === 'kustomization.yaml')
    const resources = listOf(kustomization?.body['resources']).map(String)
    for (const r of resources) if (!(await exists(join(K8S, r)))) problems.push(`deploy/kubernetes/kustomization.yaml: resources: ${r} does not exist`)
    const files = new Set(manifests.map((m) => m.file))
    for (const file of files) {
      if (['kustomization.yaml', 'secret.template.yaml', 'migrate-job.yaml'].includes(file)) continue
      if (!resources.includes(file)) problems.push(`deploy/kubernetes/kustomization.yaml: resources: ${file} is not listed`)
    }
    // `kubectl apply -k` must never replace the real Secrets with placeholders.
    for (const m of manifests.filter((x) => x.kind === 'Secret' && resources.includes(x.file))) {
      problems.push(`deploy/kubernetes/kustomization.yaml: resources: ${m.file} holds Secret ${m.name}`)
    }
    if (deployment === undefined || broker === undefined) problems.push('deploy/kubernetes: no Deployment runs the mandate image')
    expect(problems).toEqual([])
  })

  it('sets only variables the config reads, from values or Secret references that exist', async () => {
    const problems: string[] = []
    for (const c of mandateContainers) {
      containerEnv(c, problems)
      // Variables the manifest sets; the image's own are the Dockerfile check's.
      const own = [
        ...listOf(c.container['env']).map((e) => strOf(dig(e, 'name')) ?? ''),
        ...listOf(c.container['envFrom']).flatMap((f) =>
          keysOf(named(dig(f, 'secretRef') === undefined ? 'ConfigMap' : 'Secret', strOf(dig(f, 'secretRef', 'name') ?? dig(f, 'configMapRef', 'name')))),
        ),
      ]
      for (const name of own) {
        if (!CONFIG_ENV_NAMES.has(name)) problems.push(`${c.where}.env.${name}: not read by the config (CONFIG_ENV in src/config/load.ts)`)
      }
      const { config } = await k8sConfig(c, problems)
      if (config === undefined) problems.push(`${c.where}: resolves no valid config`)
    }
    expect(problems).toEqual([])
  })

  it('the Deployment resolves a valid fleet config: shared keys, PostgreSQL, Redis, the pod name as instance id', async () => {
    const problems: string[] = []
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const { env, config } = await k8sConfig(broker, problems)
    expect(problems).toEqual([])
    if (config === undefined) return
    problems.push(...fleetConfigProblems(`${broker.where}: the resolved config`, config))
    const instance = listOf(broker.container['env'])
      .filter(isObj)
      .find((e) => e['name'] === 'MANDATE_INSTANCE_ID')
    if (dig(instance, 'valueFrom', 'fieldRef', 'fieldPath') !== 'metadata.name')
      problems.push(`${broker.where}.env.MANDATE_INSTANCE_ID: must come from fieldRef metadata.name (the pod name)`)
    for (const name of ['DATABASE_URL', 'REDIS_URL']) {
      const entry = listOf(broker.container['env'])
        .filter(isObj)
        .find((e) => e['name'] === name)
      if (dig(entry, 'valueFrom', 'secretKeyRef') === undefined)
        problems.push(`${broker.where}.env.${name}: must come from a Secret (secretKeyRef): the URL holds a password`)
    }
    if ((env['OTEL_EXPORTER_OTLP_ENDPOINT'] ?? '') === '') problems.push(`${broker.where}.env.OTEL_EXPORTER_OTLP_ENDPOINT: not set`)
    expect(problems).toEqual([])
  })

  it('mounts the config, policies, signing keys and checkpoints where the config points', async () => {
    const problems: string[] = []
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const { config } = await k8sConfig(broker, [])
    if (config === undefined) return expect.fail(`${broker.where}: resolves no valid config`)
    const keysFile = config.signing.keys_file ?? ''
    const keys = mountOf(broker, keysFile)
    const secret = named('Secret', strOf(dig(keys?.volume, 'secret', 'secretName')))
    if (secret === undefined || !keysOf(secret).includes(keys?.rest ?? '')) {
      problems.push(
        `${broker.where}.volumeMounts: signing.keys_file ${keysFile} is not a key of a Secret (shown in secret.template.yaml) mounted there as a directory (a subPath mount never shows a rotated key set)`,
      )
    }
    const policies = mountOf(broker, config.policies_dir)
    const map = named('ConfigMap', strOf(dig(policies?.volume, 'configMap', 'name')))
    if (policies?.rest !== '' || map === undefined) {
      problems.push(`${broker.where}.volumeMounts: policies_dir ${config.policies_dir} is not a ConfigMap directory mount (no subPath, so updates arrive)`)
    }
    const checkpointDir = config.audit.checkpoint_dir ?? ''
    const checkpoints = mountOf(broker, checkpointDir)
    const claim = named('PersistentVolumeClaim', strOf(dig(checkpoints?.volume, 'persistentVolumeClaim', 'claimName')))
    if (claim === undefined) {
      problems.push(`${broker.where}.volumeMounts: audit.checkpoint_dir ${checkpointDir} is not on a PersistentVolumeClaim of deploy/kubernetes`)
    } else if (!listOf(dig(claim.body, 'spec', 'accessModes')).includes('ReadWriteMany')) {
      problems.push(at(claim, 'spec.accessModes') + ': every replica writes checkpoints to it: ReadWriteMany')
    }
    for (const path of [keysFile, config.policies_dir]) {
      if (mountOf(broker, path)?.readOnly !== true) problems.push(`${broker.where}.volumeMounts: ${path} must be mounted readOnly`)
    }
    expect(problems).toEqual([])
  })

  it('the admin keys come from a Secret mounted as a directory, not from the config ConfigMap', async () => {
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const problems: string[] = []
    const { env, config, adminKeysFile } = await k8sConfig(broker, problems)
    const configMap = sourceOf(mountOf(broker, env['MANDATE_CONFIG'] ?? '')?.volume)
    const inline = listOf(dig(parse(keyOf(configMap, 'mandate.yaml') ?? '') as unknown, 'admin', 'keys'))
    if (inline.length > 0)
      problems.push(
        at(configMap ?? broker.manifest, 'data.mandate.yaml') + `: admin.keys holds ${inline.length} key hash(es); they belong in the admin keys Secret`,
      )
    if (adminKeysFile === undefined) {
      problems.push(`${broker.where}.env.MANDATE_ADMIN_KEYS_FILE: not set (nor admin.keys_file), so the broker has no admin keys`)
    } else {
      const mount = mountOf(broker, adminKeysFile)
      const secret = named('Secret', strOf(dig(mount?.volume, 'secret', 'secretName')))
      if (secret === undefined || !keysOf(secret).includes(mount?.rest ?? '')) {
        problems.push(
          `${broker.where}.volumeMounts: the admin keys file ${adminKeysFile} is not a key of a Secret (shown in secret.template.yaml) mounted there as a directory`,
        )
      } else if (secret.file !== 'secret.template.yaml') {
        problems.push(at(secret, 'metadata.name') + ': the admin keys Secret belongs in secret.template.yaml, never applied with placeholders')
      }
      if (mount?.readOnly !== true) problems.push(`${broker.where}.volumeMounts: ${adminKeysFile} must be mounted readOnly`)
    }
    // The loader merged the Secret's (placeholder) entries into admin.keys.
    if (config !== undefined && config.admin.keys.length === 0) problems.push(`${broker.where}: the resolved config has no admin keys`)
    expect(problems).toEqual([])
  })

  it('the container ports, probes, Services and NetworkPolicy use the ports the config resolves to', async () => {
    const problems: string[] = []
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const { config } = await k8sConfig(broker, [])
    const port = config?.listen.port
    const adminPort = config?.listen.admin_port
    const served = [port, ...(adminPort === undefined ? [] : [adminPort])]
    const ports = listOf(broker.container['ports'])
      .filter(isObj)
      .map((p) => p['containerPort'])
    for (const p of served)
      if (!ports.includes(p))
        problems.push(
          `${broker.where}.ports: ${ports.join(', ') || 'none'}; the config resolves listen.port ${String(port)}, listen.admin_port ${String(adminPort)}`,
        )
    const probes = { livenessProbe: ['/healthz'], readinessProbe: ['/readyz'], startupProbe: ['/healthz', '/readyz'] }
    for (const [probe, paths] of Object.entries(probes)) {
      const get = objOf(dig(broker.container, probe, 'httpGet'))
      if (!paths.includes(strOf(get['path']) ?? ''))
        problems.push(`${broker.where}.${probe}.httpGet.path: ${String(get['path'])}, expected ${paths.join(' or ')}`)
      if (portNumber(broker, get['port']) !== port) problems.push(`${broker.where}.${probe}.httpGet.port: ${String(get['port'])} is not ${String(port)}`)
    }
    for (const svc of brokerServicesK8s()) {
      for (const p of listOf(dig(svc.body, 'spec', 'ports')).filter(isObj)) {
        const target = portNumber(broker, p['targetPort'] ?? p['port'])
        if (!served.includes(target))
          problems.push(
            at(svc, 'spec.ports.targetPort') + `: ${String(p['targetPort'])} is neither listen.port ${String(port)} nor listen.admin_port ${String(adminPort)}`,
          )
      }
    }
    const policy = brokerPolicy()
    if (policy === undefined) {
      problems.push('deploy/kubernetes: no NetworkPolicy selects the broker pods')
    } else {
      const ingress = listOf(dig(policy.body, 'spec', 'ingress'))
        .flatMap((r) => listOf(dig(r, 'ports')))
        .map((p) => portNumber(broker, dig(p, 'port')))
      for (const p of served) if (!ingress.includes(p)) problems.push(at(policy, 'spec.ingress') + `: does not allow port ${String(p)}`)
      if (ingress.some((p) => !served.includes(p))) problems.push(at(policy, 'spec.ingress') + `: allows more than ports ${served.join(' and ')}`)
    }
    expect(problems).toEqual([])
  })

  it('the admin port is the container port `admin`, behind a Service of its own that no Ingress routes to', async () => {
    const problems: string[] = []
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const { config } = await k8sConfig(broker, [])
    const adminPort = config?.listen.admin_port
    // Its absence is the fleet config check's finding.
    if (config === undefined || adminPort === undefined) return
    const containerPort = listOf(broker.container['ports'])
      .filter(isObj)
      .find((p) => p['name'] === 'admin')
    if (containerPort?.['containerPort'] !== adminPort)
      problems.push(`${broker.where}.ports: no port named admin with containerPort ${adminPort} (listen.admin_port)`)
    const targets = (svc: Manifest) =>
      listOf(dig(svc.body, 'spec', 'ports'))
        .filter(isObj)
        .map((p) => portNumber(broker, p['targetPort'] ?? p['port']))
    const adminServices = brokerServicesK8s().filter((svc) => targets(svc).includes(adminPort))
    if (adminServices.length === 0)
      problems.push(
        `deploy/kubernetes: no Service selects the broker pods on listen.admin_port ${adminPort}, so responders have no address for the kill switch`,
      )
    for (const svc of adminServices) {
      // Whatever fronts the token Service (the Ingress) must not get the admin API with it.
      if (targets(svc).includes(config.listen.port))
        problems.push(
          at(svc, 'spec.ports') + `: serves both listen.port ${config.listen.port} and listen.admin_port ${adminPort}; give the admin API a Service of its own`,
        )
      if ((strOf(dig(svc.body, 'spec', 'type')) ?? 'ClusterIP') !== 'ClusterIP')
        problems.push(at(svc, 'spec.type') + ': the admin API must stay inside the cluster (ClusterIP)')
    }
    const adminNames = new Set(adminServices.map((svc) => svc.name))
    for (const ingress of byKind('Ingress')) {
      const backends = [
        dig(ingress.body, 'spec', 'defaultBackend'),
        ...listOf(dig(ingress.body, 'spec', 'rules')).flatMap((r) => listOf(dig(r, 'http', 'paths')).map((p) => dig(p, 'backend'))),
      ]
      for (const b of backends) {
        const name = strOf(dig(b, 'service', 'name'))
        if (name !== undefined && adminNames.has(name)) problems.push(at(ingress, 'spec') + `: routes to ${name}, the admin API's Service`)
      }
    }
    expect(problems).toEqual([])
  })

  it('the NetworkPolicy lets the brokers reach DNS, PostgreSQL, Redis, the collector and the IdPs', async () => {
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const problems: string[] = []
    const { env } = await k8sConfig(broker, [])
    const policy = byKind('NetworkPolicy').find((np) =>
      within(dig(np.body, 'spec', 'podSelector', 'matchLabels'), dig(deployment?.body, 'spec', 'template', 'metadata', 'labels')),
    )
    if (policy === undefined) return expect.fail('deploy/kubernetes: no NetworkPolicy selects the broker pods')
    if (!listOf(dig(policy.body, 'spec', 'policyTypes')).includes('Egress')) problems.push(at(policy, 'spec.policyTypes') + ': Egress is not restricted')
    const egress = listOf(dig(policy.body, 'spec', 'egress')).flatMap((r) =>
      listOf(dig(r, 'ports')).map((p) => `${String(dig(p, 'port'))}/${strOf(dig(p, 'protocol')) ?? 'TCP'}`),
    )
    const portOf = (url: string | undefined, fallback: string) => (url !== undefined && URL.canParse(url) ? new URL(url).port || fallback : fallback)
    const needed: Record<string, string> = {
      DNS: '53/UDP',
      'DATABASE_URL (secret.template.yaml)': `${portOf(env['DATABASE_URL'], '5432')}/TCP`,
      'REDIS_URL (secret.template.yaml)': `${portOf(env['REDIS_URL'], '6379')}/TCP`,
      OTEL_EXPORTER_OTLP_ENDPOINT: `${portOf(env['OTEL_EXPORTER_OTLP_ENDPOINT'], '4318')}/TCP`,
      'IdP metadata and JWKS (https)': '443/TCP',
    }
    for (const [what, port] of Object.entries(needed)) if (!egress.includes(port)) problems.push(at(policy, 'spec.egress') + `: no rule for ${port} (${what})`)
    expect(problems).toEqual([])
  })

  it('the Service, HPA, PDB and NetworkPolicy select the Deployment’s pods; the HPA scales it on CPU', () => {
    if (deployment === undefined || broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const problems: string[] = []
    const labels = dig(deployment.body, 'spec', 'template', 'metadata', 'labels')
    if (!within(dig(deployment.body, 'spec', 'selector', 'matchLabels'), labels))
      problems.push(at(deployment, 'spec.selector.matchLabels') + ': does not match its pod template labels')
    const selects = (kind: string, path: string[]) => {
      const found = byKind(kind)
      if (found.length === 0) problems.push(`deploy/kubernetes: no ${kind}`)
      for (const m of found)
        if (!within(dig(m.body, ...path), labels)) problems.push(at(m, path.join('.')) + `: does not select the pods of Deployment ${deployment.name}`)
    }
    selects('Service', ['spec', 'selector'])
    selects('PodDisruptionBudget', ['spec', 'selector', 'matchLabels'])
    selects('NetworkPolicy', ['spec', 'podSelector', 'matchLabels'])
    const hpas = byKind('HorizontalPodAutoscaler')
    if (hpas.length === 0) problems.push('deploy/kubernetes: no HorizontalPodAutoscaler')
    for (const hpa of hpas) {
      const target = objOf(dig(hpa.body, 'spec', 'scaleTargetRef'))
      if (strOf(hpa.body['apiVersion']) !== 'autoscaling/v2') problems.push(at(hpa, 'apiVersion') + ': autoscaling/v2 expected')
      if (target['kind'] !== 'Deployment' || target['name'] !== deployment.name)
        problems.push(at(hpa, 'spec.scaleTargetRef') + `: does not target Deployment ${deployment.name}`)
      const cpu = listOf(dig(hpa.body, 'spec', 'metrics')).some((m) => dig(m, 'resource', 'name') === 'cpu')
      if (!cpu) problems.push(at(hpa, 'spec.metrics') + ': no cpu metric')
      if (!(Number(dig(hpa.body, 'spec', 'minReplicas')) >= 2))
        problems.push(at(hpa, 'spec.minReplicas') + ': below 2, one pod loss would stop the kill switch')
      // kubectl apply would reset the count the HPA set.
      if (dig(deployment.body, 'spec', 'replicas') !== undefined) problems.push(at(deployment, 'spec.replicas') + ': set, while an HPA owns the count')
    }
    if (dig(broker.container, 'resources', 'requests', 'cpu') === undefined)
      problems.push(`${broker.where}.resources.requests.cpu: the HPA's utilization needs it`)
    expect(problems).toEqual([])
  })

  it('runs non-root on a read-only root filesystem, and drains within the grace period', () => {
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const problems: string[] = []
    for (const c of mandateContainers) {
      const pod = objOf(c.pod['securityContext'])
      const own = objOf(c.container['securityContext'])
      const nonRoot = own['runAsNonRoot'] ?? pod['runAsNonRoot']
      const uid = own['runAsUser'] ?? pod['runAsUser']
      if (nonRoot !== true) problems.push(`${c.where}.securityContext.runAsNonRoot: not true`)
      if (uid === 0) problems.push(`${c.where}.securityContext.runAsUser: 0`)
      if (own['readOnlyRootFilesystem'] !== true) problems.push(`${c.where}.securityContext.readOnlyRootFilesystem: not true`)
      if (own['allowPrivilegeEscalation'] !== false) problems.push(`${c.where}.securityContext.allowPrivilegeEscalation: not false`)
      if (!listOf(dig(own, 'capabilities', 'drop')).includes('ALL')) problems.push(`${c.where}.securityContext.capabilities.drop: not ALL`)
    }
    const preStop = listOf(dig(broker.container, 'lifecycle', 'preStop', 'exec', 'command')).map(String)
    const sleep = Number(dig(broker.container, 'lifecycle', 'preStop', 'sleep', 'seconds') ?? (preStop[0] === 'sleep' ? preStop[1] : NaN))
    if (!(sleep > 0)) problems.push(`${broker.where}.lifecycle.preStop: no sleep, so the pod stops before its endpoint is removed everywhere`)
    const grace = Number(broker.pod['terminationGracePeriodSeconds'] ?? 30)
    if (!(grace > (sleep > 0 ? sleep : 0) + SHUTDOWN_BOUND_SECONDS)) {
      problems.push(
        `${broker.where}: terminationGracePeriodSeconds ${grace} must exceed preStop ${sleep} s + the broker's ${SHUTDOWN_BOUND_SECONDS} s shutdown bound`,
      )
    }
    const args = listOf(broker.container['args']).map(String)
    if (args[0] !== 'serve') problems.push(`${broker.where}.args: ${args.join(' ') || 'none'} (the image's CMD is serve; one process per pod)`)
    if (args.includes('--workers')) problems.push(`${broker.where}.args: --workers; one process per pod, scaled by the HPA`)
    expect(problems).toEqual([])
  })

  it('the config ConfigMap holds deploy/mandate.yaml, and the policies ConfigMap the example policies, which load', async () => {
    if (broker === undefined) return expect.fail('deploy/kubernetes: no Deployment runs the mandate image')
    const problems: string[] = []
    const { env } = await k8sConfig(broker, [])
    const mount = mountOf(broker, env['MANDATE_CONFIG'] ?? '')
    const configMap = named('ConfigMap', strOf(dig(mount?.volume, 'configMap', 'name')))
    if (keyOf(configMap, mount?.rest ?? '') !== (await readFile(join(DEPLOY, 'mandate.yaml'), 'utf8'))) {
      problems.push(`deploy/kubernetes/${configMap?.file ?? '?'}: data.${mount?.rest ?? '?'}: differs from deploy/mandate.yaml`)
    }
    const { config } = await k8sConfig(broker, [])
    const policies = named('ConfigMap', strOf(dig(mountOf(broker, config?.policies_dir ?? '')?.volume, 'configMap', 'name')))
    if (policies === undefined) return expect.fail(`${broker.where}: no policies ConfigMap mounted at policies_dir`)
    const data = Object.fromEntries(keysOf(policies).map((k) => [k, keyOf(policies, k) ?? '']))
    const examples = (await readdir(join(ROOT, 'policies'), { withFileTypes: true })).filter((d) => d.isFile() && /\.ya?ml$/.test(d.name)).map((d) => d.name)
    for (const name of examples) {
      if (data[name] === undefined) problems.push(at(policies, `data.${name}`) + ': missing (policies/ has it)')
      else if (data[name] !== (await read(`policies/${name}`))) problems.push(at(policies, `data.${name}`) + `: differs from policies/${name}`)
    }
    for (const name of Object.keys(data))
      if (!examples.includes(name)) problems.push(at(policies, `data.${name}`) + ': not one of the example policies in policies/')
    for (const issue of await checkPolicies(data)) problems.push(at(policies, 'data') + `: ${issue}`)
    expect(problems).toEqual([])
  })
})

describe('no private key material in the repository’s deployment files', () => {
  /** Every JWK with a private member, anywhere in a parsed value. */
  function privateJwks(v: unknown, path: string, found: string[]): void {
    if (typeof v === 'string') {
      const text = v.trim()
      if (text.startsWith('{') || text.startsWith('[')) {
        try {
          privateJwks(JSON.parse(text) as unknown, path, found)
        } catch {
          // Not JSON: nothing more to look into.
        }
      }
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => privateJwks(x, `${path}[${i}]`, found))
    } else if (isObj(v)) {
      if (typeof v['kty'] === 'string' && ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'].some((m) => m in v)) found.push(`${path}: a JWK with private members`)
      for (const [k, x] of Object.entries(v)) privateJwks(x, `${path}.${k}`, found)
    }
  }

  it('Secrets hold placeholders, and no file under deploy/ holds a private JWK or PEM key', async () => {
    const problems: string[] = []
    for (const m of byKind('Secret')) {
      for (const key of keysOf(m)) privateJwks(keyOf(m, key), at(m, `data.${key}`), problems)
    }
    const files = (await readdir(DEPLOY, { recursive: true })).map(String).filter((f) => !f.startsWith(`secrets/`) && !f.startsWith('secrets\\'))
    for (const file of [...files.map((f) => join(DEPLOY, f)), join(ROOT, 'Dockerfile')]) {
      if (!(await stat(file)).isFile()) continue
      const text = await readFile(file, 'utf8')
      const name = relative(ROOT, file)
      if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) problems.push(`${name}: holds a PEM private key`)
      if (/\.ya?ml$/.test(file)) for (const doc of parseAllDocuments(text)) privateJwks(doc.toJS() as unknown, name, problems)
      else if (/\.json$/.test(file)) privateJwks(text, name, problems)
    }
    expect(problems).toEqual([])
  })
})
