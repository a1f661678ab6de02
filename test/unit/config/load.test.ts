import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadConfig, type ConfigResult } from '../../../src/config/load.js'
import type { Config } from '../../../src/config/schema.js'

const DEV = { dev: true } as const
const PROD = { dev: false } as const
const BROKER = 'https://mandate.example.com'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-config-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function file(text: string, name = 'mandate.yaml'): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, text)
  return path
}

function configOf(r: ConfigResult): Config {
  if (!r.ok) throw new Error(`expected a config, got ${JSON.stringify(r.issues)}`)
  return r.config
}

function issuesOf(r: ConfigResult): readonly string[] {
  if (r.ok) throw new Error('expected issues, got a config')
  return r.issues
}

/** The path part of each `path: message` issue. */
const paths = (issues: readonly string[]) => issues.map((i) => i.slice(0, i.indexOf(': ')))

const trusted = (issuer: string) => `    - issuer: ${issuer}\n      algorithms: [RS256]\n`

describe('loadConfig: --dev defaults', () => {
  it('needs no file and no env', async () => {
    const c = configOf(await loadConfig(undefined, {}, DEV))
    expect(c.issuer).toBe('http://localhost:8080')
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 })
    expect(c.policies_dir).toBe('./policies/dev')
    expect(c.signing.generate_if_missing).toBe(true)
    expect(c.limits.clock_skew_seconds).toBe(30)
    expect(c.trust).toEqual({ subjects: [], workloads: [], id_jag: [], spiffe: [] })
  })

  it('derives the issuer from PORT', async () => {
    const c = configOf(await loadConfig(undefined, { PORT: '9090' }, DEV))
    expect(c.issuer).toBe('http://localhost:9090')
    expect(c.listen.port).toBe(9090)
  })

  it('derives the issuer from a port in the file', async () => {
    const c = configOf(await loadConfig(await file('listen:\n  port: 7070\n'), {}, DEV))
    expect(c.issuer).toBe('http://localhost:7070')
  })

  it('takes MANDATE_ISSUER and HOST over the dev defaults', async () => {
    const c = configOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, HOST: '::1', PORT: '9090' }, DEV))
    expect(c.issuer).toBe(BROKER)
    expect(c.listen).toEqual({ host: '::1', port: 9090 })
  })

  it('refuses --dev on an address other hosts can reach (it serves unauthenticated user tokens)', async () => {
    for (const HOST of ['0.0.0.0', '10.0.0.5', '::']) {
      expect(paths(issuesOf(await loadConfig(undefined, { HOST }, DEV)))).toEqual(['listen.host'])
    }
    // Without --dev any address is fine.
    expect(configOf(await loadConfig(undefined, { HOST: '0.0.0.0', MANDATE_ISSUER: BROKER }, PROD)).listen.host).toBe('0.0.0.0')
  })

  it('never turns on generated keys or dev policies without --dev', async () => {
    const c = configOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER }, PROD))
    expect(c.signing.generate_if_missing).toBe(false)
    expect(c.policies_dir).toBe('./policies')
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 8080 })
  })
})

describe('loadConfig: environment overrides', () => {
  it('env wins over the file for every variable it reads', async () => {
    const path = await file(
      [
        `issuer: ${BROKER}`,
        'listen:\n  host: 10.0.0.1\n  port: 8000',
        'policies_dir: /etc/mandate/policies',
        'data_dir: /var/lib/mandate',
        'signing:\n  keys_file: /etc/mandate/keys.json',
        'log:\n  level: warn',
      ].join('\n'),
    )
    const c = configOf(
      await loadConfig(
        path,
        {
          MANDATE_ISSUER: 'https://other.example.com',
          HOST: '10.0.0.2',
          PORT: '8001',
          MANDATE_POLICIES_DIR: '/policies',
          MANDATE_DATA_DIR: '/data',
          MANDATE_SIGNING_KEYS_FILE: '/keys.json',
          LOG_LEVEL: 'debug',
        },
        PROD,
      ),
    )
    expect(c).toMatchObject({
      issuer: 'https://other.example.com',
      listen: { host: '10.0.0.2', port: 8001 },
      policies_dir: '/policies',
      data_dir: '/data',
      signing: { keys_file: '/keys.json' },
      log: { level: 'debug' },
    })
  })

  it('the file applies when env is silent (empty strings count as unset)', async () => {
    const path = await file(`issuer: ${BROKER}\nlisten:\n  host: 10.0.0.1\n  port: 8000\n`)
    const c = configOf(await loadConfig(path, { HOST: '', PORT: '', MANDATE_ISSUER: '' }, PROD))
    expect(c.issuer).toBe(BROKER)
    expect(c.listen).toEqual({ host: '10.0.0.1', port: 8000 })
  })

  it('reads the file named by MANDATE_CONFIG when none is passed, and the argument over it', async () => {
    const a = await file(`issuer: ${BROKER}\n`, 'a.yaml')
    const b = await file('issuer: https://b.example.com\n', 'b.yaml')
    expect(configOf(await loadConfig(undefined, { MANDATE_CONFIG: a }, PROD)).issuer).toBe(BROKER)
    expect(configOf(await loadConfig(b, { MANDATE_CONFIG: a }, PROD)).issuer).toBe('https://b.example.com')
  })

  it('refuses a PORT that is not an integer, under listen.port', async () => {
    const issues = issuesOf(await loadConfig(undefined, { PORT: 'eighty' }, DEV))
    expect(issues.length).toBeGreaterThan(0)
    expect(new Set(paths(issues))).toEqual(new Set(['listen.port']))
  })

  it('refuses an out-of-range PORT', async () => {
    expect(paths(issuesOf(await loadConfig(undefined, { PORT: '70000' }, DEV)))).toContain('listen.port')
  })

  it('takes MANDATE_ADMIN_PORT as listen.admin_port, and refuses one that is not a port or is the main port', async () => {
    expect(configOf(await loadConfig(undefined, { MANDATE_ADMIN_PORT: '9090' }, DEV)).listen.admin_port).toBe(9090)
    expect(configOf(await loadConfig(undefined, {}, DEV)).listen.admin_port).toBeUndefined()
    for (const bad of ['nine', '0', '70000']) {
      expect(paths(issuesOf(await loadConfig(undefined, { MANDATE_ADMIN_PORT: bad }, DEV)))).toContain('listen.admin_port')
    }
    const same = issuesOf(await loadConfig(undefined, { PORT: '9090', MANDATE_ADMIN_PORT: '9090' }, DEV))
    expect(same.join('; ')).toMatch(/listen\.admin_port: must differ from port/)
  })
})

describe('loadConfig: refusals', () => {
  it('without --dev an issuer is required: a message under issuer', async () => {
    const issues = issuesOf(await loadConfig(undefined, {}, PROD))
    expect(issues.length).toBeGreaterThan(0)
    for (const i of issues) expect(i).toMatch(/^issuer: \S/)
  })

  it.each(['http://mandate.example.com', 'http://10.0.0.5:8080', 'http://localhost.example.com', 'http://127.0.0.1.nip.io'])(
    'refuses http issuer %s on a non-loopback host',
    async (issuer) => {
      expect(paths(issuesOf(await loadConfig(undefined, { MANDATE_ISSUER: issuer }, PROD)))).toEqual(['issuer'])
    },
  )

  it.each(['http://localhost:8080', 'http://127.0.0.1:9000', 'http://[::1]:8080', 'https://mandate.example.com/tenant-a'])(
    'accepts issuer %s',
    async (issuer) => {
      expect(configOf(await loadConfig(undefined, { MANDATE_ISSUER: issuer }, PROD)).issuer).toBe(issuer)
    },
  )

  it.each(['https://mandate.example.com/?tenant=a', 'https://mandate.example.com/#x', 'mandate.example.com', 'ftp://mandate.example.com'])(
    'refuses issuer %s',
    async (issuer) => {
      expect(paths(issuesOf(await loadConfig(undefined, { MANDATE_ISSUER: issuer }, PROD)))).toContain('issuer')
    },
  )

  it.each([
    ['an issuer without a scheme', 'idp.example.com'],
    ['an issuer that is no URL at all', 'not a url'],
  ])('refuses %s in trust as an issue at its path, not a throw', async (_name, issuer) => {
    const path = await file(`issuer: ${BROKER}\ntrust:\n  subjects:\n${trusted(issuer)}`)
    await expect(loadConfig(path, {}, PROD).then((r) => paths(issuesOf(r)))).resolves.toContain('trust.subjects.0.issuer')
  })

  it('refuses an http trusted issuer off loopback, at its path', async () => {
    const path = await file(`issuer: ${BROKER}\ntrust:\n  subjects:\n${trusted('http://idp.example.com')}`)
    expect(paths(issuesOf(await loadConfig(path, {}, PROD)))).toEqual(['trust.subjects.0.issuer'])
  })

  it('refuses clock_skew_seconds over 60, accepts 60', async () => {
    const over = await file(`issuer: ${BROKER}\nlimits:\n  clock_skew_seconds: 61\n`, 'over.yaml')
    expect(paths(issuesOf(await loadConfig(over, {}, PROD)))).toEqual(['limits.clock_skew_seconds'])
    const max = await file(`issuer: ${BROKER}\nlimits:\n  clock_skew_seconds: 60\n`, 'max.yaml')
    expect(configOf(await loadConfig(max, {}, PROD)).limits.clock_skew_seconds).toBe(60)
  })

  it('refuses one issuer trusted in two roles', async () => {
    const path = await file(`issuer: ${BROKER}\ntrust:\n  subjects:\n${trusted('https://idp.example.com')}  workloads:\n${trusted('https://idp.example.com')}`)
    expect(paths(issuesOf(await loadConfig(path, {}, PROD)))).toEqual(['trust.workloads.0.issuer'])
  })

  it('refuses an ID-JAG issuer also trusted for user subjects: an issuer holds one role only', async () => {
    const path = await file(`issuer: ${BROKER}\ntrust:\n  subjects:\n${trusted('https://idp.example.com')}  id_jag:\n${trusted('https://idp.example.com')}`)
    expect(paths(issuesOf(await loadConfig(path, {}, PROD)))).toEqual(['trust.id_jag.0.issuer'])
  })

  it('takes an ID-JAG issuer with its lifetime bound (300 s by default, at most 3600), and no typ or audience of its own', async () => {
    const c = configOf(await loadConfig(await file(`issuer: ${BROKER}\ntrust:\n  id_jag:\n${trusted('https://idp.example.com')}`), {}, PROD))
    expect(c.trust.id_jag).toEqual([{ issuer: 'https://idp.example.com', algorithms: ['RS256'], max_lifetime_seconds: 300 }])
    const long = await file(`issuer: ${BROKER}\ntrust:\n  id_jag:\n${trusted('https://idp.example.com')}      max_lifetime_seconds: 3601\n`, 'long.yaml')
    expect(paths(issuesOf(await loadConfig(long, {}, PROD)))).toEqual(['trust.id_jag.0.max_lifetime_seconds'])
    const typ = await file(`issuer: ${BROKER}\ntrust:\n  id_jag:\n${trusted('https://idp.example.com')}      typ: JWT\n`, 'typ.yaml')
    expect(paths(issuesOf(await loadConfig(typ, {}, PROD)))).toEqual(['trust.id_jag.0'])
  })

  it('accepts two different issuers in the two roles', async () => {
    const path = await file(
      `issuer: ${BROKER}\ntrust:\n  subjects:\n${trusted('https://idp.example.com')}  workloads:\n${trusted('https://spiffe.example.com')}`,
    )
    const c = configOf(await loadConfig(path, {}, PROD))
    expect(c.trust.subjects.map((t) => t.issuer)).toEqual(['https://idp.example.com'])
    expect(c.trust.workloads.map((t) => t.issuer)).toEqual(['https://spiffe.example.com'])
  })

  it.each(['subjects', 'workloads'])('refuses the broker itself as a trusted issuer for %s', async (role) => {
    const path = await file(`issuer: ${BROKER}\ntrust:\n  ${role}:\n${trusted(BROKER)}`)
    expect(paths(issuesOf(await loadConfig(path, {}, PROD)))).toEqual([`trust.${role}.0.issuer`])
  })

  it('refuses the broker as a trusted issuer also when the issuer comes from MANDATE_ISSUER', async () => {
    const path = await file(`trust:\n  subjects:\n${trusted(BROKER)}`)
    expect(paths(issuesOf(await loadConfig(path, { MANDATE_ISSUER: BROKER }, PROD)))).toEqual(['trust.subjects.0.issuer'])
  })

  it('refuses an algorithm outside the asymmetric list', async () => {
    const path = await file(`issuer: ${BROKER}\ntrust:\n  subjects:\n    - issuer: https://idp.example.com\n      algorithms: [HS256]\n`)
    expect(paths(issuesOf(await loadConfig(path, {}, PROD)))[0]).toMatch(/^trust\.subjects\.0\.algorithms/)
  })

  it('an unreadable file is one clear issue naming it', async () => {
    const missing = join(dir, 'missing.yaml')
    const issues = issuesOf(await loadConfig(missing, {}, DEV))
    expect(issues).toHaveLength(1)
    expect(issues[0]).toMatch(new RegExp(`^${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*ENOENT`))
    const isDir = issuesOf(await loadConfig(dir, {}, DEV))
    expect(isDir).toHaveLength(1)
    expect(isDir[0]?.startsWith(`${dir}: `)).toBe(true)
  })

  it('bad YAML is one clear issue naming the file', async () => {
    const path = await file(`issuer: ${BROKER}\nlisten:\n  host: [unclosed\n  port: 1\n`)
    const issues = issuesOf(await loadConfig(path, {}, DEV))
    expect(issues).toHaveLength(1)
    expect(issues[0]?.startsWith(`${path}: YAML`)).toBe(true)
  })

  it('a duplicate key is bad YAML', async () => {
    const path = await file(`issuer: ${BROKER}\nissuer: https://evil.example.com\n`)
    const issues = issuesOf(await loadConfig(path, {}, PROD))
    expect(issues).toHaveLength(1)
    expect(issues[0]?.startsWith(`${path}: `)).toBe(true)
  })

  it('a file that is not a mapping is one issue naming it', async () => {
    const path = await file('- issuer: https://x.example.com\n')
    expect(issuesOf(await loadConfig(path, {}, DEV))).toEqual([expect.stringMatching(/^.+mandate\.yaml: /)])
  })

  it('an empty file is an empty config', async () => {
    expect(configOf(await loadConfig(await file(''), {}, DEV)).issuer).toBe('http://localhost:8080')
  })

  it('reports every issue at once', async () => {
    const path = await file(
      [
        'issuer: http://broker.example.com',
        'listen:\n  port: 99999',
        'limits:\n  clock_skew_seconds: 61\n  max_body_bytes: 10',
        'jwks:\n  timeout_ms: 60000',
        'colour: blue',
        `trust:\n  subjects:\n${trusted('https://idp.example.com')}  workloads:\n${trusted('https://idp.example.com')}`,
      ].join('\n'),
    )
    expect(new Set(paths(issuesOf(await loadConfig(path, {}, PROD))))).toEqual(
      new Set(['issuer', 'listen.port', 'limits.clock_skew_seconds', 'limits.max_body_bytes', 'jwks.timeout_ms', '(root)', 'trust.workloads.0.issuer']),
    )
  })

  it('reports a cross-field issue (issuer in two roles) also when a field elsewhere has the wrong type', async () => {
    const path = await file(
      [
        `issuer: ${BROKER}`,
        'log:\n  level: loud',
        `trust:\n  subjects:\n${trusted('https://idp.example.com')}  workloads:\n${trusted('https://idp.example.com')}`,
      ].join('\n'),
    )
    expect(new Set(paths(issuesOf(await loadConfig(path, {}, PROD))))).toEqual(new Set(['log.level', 'trust.workloads.0.issuer']))
  })

  it('refuses unknown keys, top level and nested, naming them', async () => {
    const top = await file(`issuer: ${BROKER}\nissuers: ${BROKER}\n`, 'top.yaml')
    const topIssues = issuesOf(await loadConfig(top, {}, PROD))
    expect(topIssues).toHaveLength(1)
    expect(topIssues[0]).toMatch(/^\(root\): .*issuers/)

    const nested = await file(`issuer: ${BROKER}\nlimits:\n  clock_skew: 5\n`, 'nested.yaml')
    const nestedIssues = issuesOf(await loadConfig(nested, {}, PROD))
    expect(nestedIssues).toHaveLength(1)
    expect(nestedIssues[0]).toMatch(/^limits: .*clock_skew/)

    const deep = await file(`issuer: ${BROKER}\ntrust:\n  subjects:\n${trusted('https://idp.example.com')}      audiences: [x]\n`, 'deep.yaml')
    expect(issuesOf(await loadConfig(deep, {}, PROD))).toEqual([expect.stringMatching(/^trust\.subjects\.0: .*audiences/)])
  })

  it('no key can switch a security check off: a disabling-looking key is just unknown', async () => {
    const path = await file(`issuer: ${BROKER}\nlimits:\n  verify_signatures: false\n`)
    expect(paths(issuesOf(await loadConfig(path, {}, PROD)))).toEqual(['limits'])
  })
})

describe('loadConfig: admin.keys_file', () => {
  const hash = (c: string) => c.repeat(64)
  const entry = (name: string, sha256: string, roles = '[responder]') => `- name: ${name}\n  sha256: "${sha256}"\n  roles: ${roles}\n`
  const inline = `issuer: ${BROKER}\nadmin:\n  keys:\n    - name: inline\n      sha256: "${hash('a')}"\n      roles: [admin]\n`

  it('appends the file’s entries after the inline admin.keys', async () => {
    const keys = await file(entry('oncall', hash('b')) + entry('auditor', hash('c'), '[auditor]'), 'admin-keys.yaml')
    const c = configOf(await loadConfig(await file(`${inline}  keys_file: ${keys}\n`), {}, PROD))
    expect(c.admin.keys).toEqual([
      { name: 'inline', sha256: hash('a'), roles: ['admin'] },
      { name: 'oncall', sha256: hash('b'), roles: ['responder'] },
      { name: 'auditor', sha256: hash('c'), roles: ['auditor'] },
    ])
  })

  it('reads JSON, which is YAML, and an empty file as no further keys', async () => {
    const json = await file(JSON.stringify([{ name: 'oncall', sha256: hash('b'), roles: ['responder'] }]), 'admin-keys.json')
    expect(configOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: json }, PROD)).admin.keys.map((k) => k.name)).toEqual([
      'oncall',
    ])
    const empty = await file('', 'empty.yaml')
    expect(configOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: empty }, PROD)).admin.keys).toEqual([])
  })

  it('MANDATE_ADMIN_KEYS_FILE wins over admin.keys_file', async () => {
    const fromFile = await file(entry('from-config', hash('b')), 'a.yaml')
    const fromEnv = await file(entry('from-env', hash('c')), 'b.yaml')
    const c = configOf(await loadConfig(await file(`${inline}  keys_file: ${fromFile}\n`), { MANDATE_ADMIN_KEYS_FILE: fromEnv }, PROD))
    expect(c.admin.keys_file).toBe(fromEnv)
    expect(c.admin.keys.map((k) => k.name)).toEqual(['inline', 'from-env'])
  })

  it('an unreadable file is one issue naming it and the error code', async () => {
    const missing = join(dir, 'missing.yaml')
    expect(issuesOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: missing }, PROD))).toEqual([
      `admin.keys_file: ${missing}: cannot read (ENOENT)`,
    ])
  })

  it('bad YAML is one issue with a position, never the content', async () => {
    const keys = await file(`- name: oncall\n  sha256: "${hash('b')}\n  roles: [responder\n`, 'admin-keys.yaml')
    const issues = issuesOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: keys }, PROD))
    expect(issues).toHaveLength(1)
    expect(issues[0]).toMatch(new RegExp(`^admin\\.keys_file: ${keys.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: invalid YAML at line \\d+, column \\d+`))
    expect(issues[0]).not.toContain(hash('b'))
  })

  it('a bad entry is an issue at its index and field, without its value', async () => {
    const keys = await file(entry('oncall', hash('b')) + entry('auditor', 'C'.repeat(64), '[auditor]') + entry('x', hash('d'), '[root]'), 'admin-keys.yaml')
    const issues = issuesOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: keys }, PROD))
    expect(issues).toContain('admin.keys_file[1].sha256: must be 64 lowercase hex digits')
    expect(paths(issues)).toEqual(['admin.keys_file[1].sha256', 'admin.keys_file[2].roles[0]'])
    expect(issues.join('\n')).not.toContain('C'.repeat(64))
  })

  it('an unknown field in an entry is an issue that does not repeat it', async () => {
    const keys = await file(`${entry('oncall', hash('b'))}  key: the-raw-admin-key\n`, 'admin-keys.yaml')
    const issues = issuesOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: keys }, PROD))
    expect(paths(issues)).toEqual(['admin.keys_file[0]'])
    expect(issues.join('\n')).not.toContain('the-raw-admin-key')
  })

  it('a file that is not a list is one issue', async () => {
    const keys = await file(`name: oncall\nsha256: "${hash('b')}"\nroles: [responder]\n`, 'admin-keys.yaml')
    expect(paths(issuesOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: keys }, PROD)))).toEqual(['admin.keys_file'])
  })

  it('refuses a name held twice, across the config and the file and within the file', async () => {
    const keys = await file(entry('inline', hash('b')) + entry('oncall', hash('c')) + entry('oncall', hash('d')), 'admin-keys.yaml')
    const issues = issuesOf(await loadConfig(await file(`${inline}  keys_file: ${keys}\n`), {}, PROD))
    expect(paths(issues)).toEqual(['admin.keys_file[0].name', 'admin.keys_file[2].name'])
  })

  it('reports keys file issues with the config’s own, and never returns a config', async () => {
    const keys = await file(entry('oncall', 'nothex'), 'admin-keys.yaml')
    const r = await loadConfig(await file(`issuer: ${BROKER}\nlimits:\n  clock_skew_seconds: 61\nadmin:\n  keys_file: ${keys}\n`), {}, PROD)
    expect(r.ok).toBe(false)
    expect(new Set(paths(issuesOf(r)))).toEqual(new Set(['limits.clock_skew_seconds', 'admin.keys_file[0].sha256']))
    // Alone, too.
    expect((await loadConfig(undefined, { MANDATE_ISSUER: BROKER, MANDATE_ADMIN_KEYS_FILE: keys }, PROD)).ok).toBe(false)
  })
})

describe('loadConfig: resource_servers', () => {
  const basicAuth = `{ method: client_secret_basic, secret_sha256: "${'b'.repeat(64)}" }`
  const rs = (id: string, auth = basicAuth, audiences = '[https://api.example.com]') =>
    `  - id: ${id}\n    audiences: ${audiences}\n    authentication: ${auth}\n`
  const load = async (servers: string) => loadConfig(await file(`issuer: ${BROKER}\nresource_servers:\n${servers}`), {}, PROD)

  it('takes an rs/ id, its audiences and a Basic hash or public keys', async () => {
    const { publicKey } = await import('node:crypto').then((c) => c.generateKeyPairSync('ec', { namedCurve: 'P-256' }))
    const jwk = JSON.stringify({ ...publicKey.export({ format: 'jwk' }), alg: 'ES256', kid: 'k1' })
    const c = configOf(
      await load(
        rs('rs/calendar') +
          rs('rs/files.v2', `{ method: private_key_jwt, jwks: { keys: [${jwk}] } }`, '[https://files.example.com, https://blobs.example.com]'),
      ),
    )
    expect(c.resource_servers.map((r) => [r.id, r.audiences, r.authentication.method])).toEqual([
      ['rs/calendar', ['https://api.example.com'], 'client_secret_basic'],
      ['rs/files.v2', ['https://files.example.com', 'https://blobs.example.com'], 'private_key_jwt'],
    ])
    expect(configOf(await loadConfig(undefined, { MANDATE_ISSUER: BROKER }, PROD)).resource_servers).toEqual([])
  })

  it.each(['calendar', 'secret-agent', 'rs/', 'rs/Calendar', 'rs/a/b', 'RS/calendar', 'rs:calendar'])(
    'refuses the id %s: only rs/<agent-like slug>, which no agent id can be',
    async (id) => {
      expect(paths(issuesOf(await load(rs(JSON.stringify(id)))))).toEqual(['resource_servers.0.id'])
    },
  )

  it('refuses an id used twice, at the second', async () => {
    expect(paths(issuesOf(await load(rs('rs/api') + rs('rs/api'))))).toEqual(['resource_servers.1.id'])
  })

  it('refuses workload identity, which only agents have', async () => {
    const r = await load(rs('rs/api', '{ method: workload_identity, issuer: "https://k8s.example.com", subject: x }'))
    expect(paths(issuesOf(r))).toEqual(['resource_servers.0.authentication.method'])
  })

  it('refuses a private key, an unusable key, no audience and an audience that is not an absolute URI', async () => {
    const { privateKey } = await import('node:crypto').then((c) => c.generateKeyPairSync('ec', { namedCurve: 'P-256' }))
    const priv = JSON.stringify({ ...privateKey.export({ format: 'jwk' }), alg: 'ES256' })
    const broken = JSON.stringify({ kty: 'EC', crv: 'P-256', x: 'AAAA', y: 'AAAA', alg: 'ES256' })
    const issues = issuesOf(
      await load(
        rs('rs/a', `{ method: private_key_jwt, jwks: { keys: [${priv}] } }`) +
          rs('rs/b', `{ method: private_key_jwt, jwks: { keys: [${broken}] } }`) +
          rs('rs/c', basicAuth, '[]') +
          rs('rs/d', basicAuth, '[not-a-uri]'),
      ),
    )
    expect(new Set(paths(issues))).toEqual(
      new Set([
        'resource_servers.0.authentication.jwks.keys.0',
        'resource_servers.1.authentication.jwks.keys.0',
        'resource_servers.2.audiences',
        'resource_servers.3.audiences.0',
      ]),
    )
    expect(issues.join('\n')).not.toContain((privateKey.export({ format: 'jwk' }) as { d: string }).d)
  })
})
