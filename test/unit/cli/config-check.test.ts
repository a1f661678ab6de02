/**
 * `checkConfig` (what `mandate config check` prints) over real files in a
 * temp dir, offline: every error in one run, each located; a policy trusting
 * an issuer the config does not list, an expired policy, production with no
 * admin key; the dev issuer trusted under --dev. The clock is fixed.
 */
import { createHash } from 'node:crypto'
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { checkConfig, type CheckInput } from '../../../src/cli/config.js'
import { generateSigningJwk } from '../../../src/tokens/keys.js'

const NOW = Date.UTC(2027, 0, 1)
const IDP = 'https://login.example.com'
const WORKLOADS = 'https://workloads.example.com'
const ADMIN_SHA = createHash('sha256').update('an-admin-key').digest('hex')
const root = new URL('../../../', import.meta.url).pathname

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-check-'))
  await mkdir(join(dir, 'policies'))
  await writeFile(join(dir, 'keys.json'), JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 })
})
afterEach(() => rm(dir, { recursive: true, force: true }))

async function policy(name: string, text: string): Promise<string> {
  const path = join(dir, 'policies', `${name}.yaml`)
  await writeFile(path, text)
  return path
}

/** A client_secret_basic agent (block style: one field per line). */
function agentYaml(agent: string, o: { userIssuer?: string; expires?: string; owner?: boolean } = {}): string {
  return [
    `agent: ${agent}`,
    ...(o.owner === false ? [] : ['owner: team@example.com']),
    'purpose: test',
    `expires: ${o.expires ?? '2030-01-01'}`,
    'authentication:',
    '  method: client_secret_basic',
    `  secret_sha256: ${'ab'.repeat(32)}`,
    'users:',
    `  - issuer: ${o.userIssuer ?? IDP}`,
    'grants:',
    '  - audience: https://api.example.com',
    '    scopes: [read]',
    'token_ttl: { default: 300, max: 300 }',
    '',
  ].join('\n')
}

const workloadYaml = (agent: string, issuer: string) => `agent: ${agent}
owner: team@example.com
purpose: test
expires: 2030-01-01
authentication:
  method: workload_identity
  issuer: ${issuer}
  subject: spiffe://example/agent
grants:
  - audience: https://api.example.com
    scopes: [read]
token_ttl: { default: 300, max: 300 }
`

/** A production config file: the user issuer and the workload issuer trusted, one admin key. */
async function configFile(extra = '', o: { adminKey?: boolean; idJag?: string } = {}): Promise<string> {
  const path = join(dir, 'mandate.yaml')
  await writeFile(
    path,
    `issuer: https://mandate.example.com
policies_dir: ${join(dir, 'policies')}
signing:
  keys_file: ${join(dir, 'keys.json')}
trust:
  subjects:
    - issuer: ${IDP}
      algorithms: [RS256]
  workloads:
    - issuer: ${WORKLOADS}
      algorithms: [ES256]
${o.idJag === undefined ? '' : `  id_jag:\n    - issuer: ${o.idJag}\n      algorithms: [RS256]\n`}${o.adminKey === false ? '' : `admin:\n  keys:\n    - { name: ops, sha256: ${ADMIN_SHA}, roles: [admin] }\n`}${extra}`,
  )
  return path
}

const input = (file: string | undefined, o: Partial<CheckInput> = {}): CheckInput => ({ file, env: {}, dev: false, online: false, now: NOW, ...o })
const shown = (f: { where?: string; message: string }) => (f.where === undefined ? f.message : `${f.where}: ${f.message}`)

describe('checkConfig', () => {
  it('passes a production config whose policies trust only listed issuers', async () => {
    await policy('user-agent', agentYaml('user-agent'))
    await policy('workload-agent', workloadYaml('workload-agent', WORKLOADS))
    const r = await checkConfig(input(await configFile()))
    expect(r.errors).toEqual([])
    expect(r.warnings).toEqual([])
    expect(r.configValid).toBe(true)
    expect(r.ok).toContain(`policies: 2 in ${join(dir, 'policies')}`)
    expect(r.skipped).toEqual(['the issuers’ JWKS, PostgreSQL and Redis (no --online)'])
  })

  it('counts an ID-JAG issuer as trusted for its users', async () => {
    await policy('xaa-agent', agentYaml('xaa-agent', { userIssuer: 'https://enterprise-idp.example.com' }))
    const r = await checkConfig(input(await configFile('', { idJag: 'https://enterprise-idp.example.com' })))
    expect(r.errors).toEqual([])
  })

  it('reports every error in one run, each with file and line', async () => {
    const untrusted = await policy('untrusted', agentYaml('untrusted', { userIssuer: 'https://elsewhere.example.com' }))
    const workload = await policy('workload', workloadYaml('workload', 'https://other-workloads.example.com'))
    const expired = await policy('expired', agentYaml('expired', { expires: '2026-12-01' }))
    const broken = await policy('broken', agentYaml('broken', { owner: false }))
    const soon = await policy('soon', agentYaml('soon', { expires: '2027-01-06' }))
    await rm(join(dir, 'keys.json'))

    const r = await checkConfig(input(await configFile('', { adminKey: false })))
    expect(r.configValid).toBe(true)
    expect(r.errors.map(shown)).toEqual([
      `${broken}:1:1: owner: Invalid input: expected string, received undefined`,
      `${expired}:4:10: expires: expired on 2026-12-01T00:00:00.000Z: the agent gets no token`,
      `${untrusted}:9:13: users.0.issuer: https://elsewhere.example.com is not in trust.subjects or trust.id_jag: its users' tokens would be refused`,
      `${workload}:7:11: authentication.issuer: https://other-workloads.example.com is not in trust.workloads: the agent could not authenticate`,
      expect.stringMatching(/^admin\.keys: no admin key /),
      `${dir}/mandate.yaml:4:14: signing.keys_file: cannot read signing keys from ${dir}/keys.json: ENOENT`,
    ])
    // Only what the loader refuses and the keys file stop serve from starting.
    expect(r.errors.filter((e) => e.blocksStart).map(shown)).toEqual([
      expect.stringContaining(`${broken}:1:1: owner:`),
      expect.stringContaining('signing.keys_file:'),
    ])
    expect(r.warnings.map(shown)).toEqual([`${soon}:4:10: expires: expires in 5 day(s), on 2027-01-06T00:00:00.000Z`])
  })

  it('reports a SPIFFE policy whose trust domain is not in trust.spiffe', async () => {
    const spiffe = await policy(
      'svid-agent',
      workloadYaml('svid-agent', WORKLOADS).replace(
        /authentication:\n[^]*?(?=grants:)/,
        'authentication: { method: spiffe, spiffe_id_prefix: "spiffe://example.org/ns/" }\n',
      ),
    )
    const r = await checkConfig(input(await configFile()))
    expect(r.errors.map(shown)).toEqual([
      `${spiffe}:5:53: authentication.spiffe_id_prefix: trust domain example.org is not in trust.spiffe: the agent could not authenticate`,
    ])
  })

  it('warns of a policy whose hours the config’s outside_hours rule borrows: they now restrict issuance', async () => {
    const office = await policy('office', `${agentYaml('office')}hours: Mon-Fri 08:00-18:00\n`)
    await policy('plain', agentYaml('plain'))
    const quiet = await checkConfig(input(await configFile()))
    expect(quiet.warnings).toEqual([])
    const r = await checkConfig(input(await configFile('governance:\n  anomalies:\n    rules:\n      outside_hours: { action: alert }\n')))
    expect(r.errors).toEqual([])
    expect(r.warnings.map(shown)).toEqual([expect.stringMatching(new RegExp(`^${office}:14:8: hours: now restricts issuance`))])
    expect(r.warnings.every((w) => !w.blocksStart)).toBe(true)
  })

  it('counts admin keys from admin.keys_file', async () => {
    await policy('user-agent', agentYaml('user-agent'))
    const keysFile = join(dir, 'admin-keys.yaml')
    await writeFile(keysFile, `- { name: ops, sha256: ${ADMIN_SHA}, roles: [responder] }\n`)
    const r = await checkConfig(input(await configFile('', { adminKey: false }), { env: { MANDATE_ADMIN_KEYS_FILE: keysFile } }))
    expect(r.errors).toEqual([])
  })

  it('under --dev: the dev user issuer is trusted and no admin key is required (the shipped dev policies pass)', async () => {
    const r = await checkConfig(input(undefined, { dev: true, env: { MANDATE_DATA_DIR: join(dir, 'data'), MANDATE_POLICIES_DIR: join(root, 'policies/dev') } }))
    expect(r.errors).toEqual([])
    // The same policies without --dev: their issuer is not trusted, and there is no admin key.
    const prod = await checkConfig(
      input(undefined, {
        env: {
          MANDATE_ISSUER: 'https://mandate.example.com',
          MANDATE_POLICIES_DIR: join(root, 'policies/dev'),
          MANDATE_SIGNING_KEYS_FILE: join(dir, 'keys.json'),
        },
      }),
    )
    expect(prod.errors.map(shown)).toEqual([
      expect.stringMatching(/demo-agent\.yaml:11:\d+: users\.0\.issuer: https:\/\/users\.dev\.mandate\.invalid is not in trust\.subjects/),
      expect.stringMatching(/demo-payer\.yaml:11:\d+: users\.0\.issuer: https:\/\/users\.dev\.mandate\.invalid is not in trust\.subjects/),
      expect.stringMatching(/^admin\.keys: no admin key/),
    ])
  })

  it('locates config errors in the config file; a value from the environment gets no line', async () => {
    const path = await configFile('limits:\n  clock_skew_seconds: 600\nbogus: 1\n')
    const r = await checkConfig(input(path, { env: { PORT: 'eighty' } }))
    expect(r.configValid).toBe(false)
    expect(r.errors.map(shown)).toEqual([
      'listen.port: PORT must be a port number (got "eighty")',
      `${path}:16:23: limits.clock_skew_seconds: Too big: expected number to be <=60`,
      `${path}:17:8: (root): Unrecognized key: "bogus"`,
    ])
  })

  it('the dev policies under a production config: one untrusted issuer (named by the two policies delegating from it), which does not stop serve', async () => {
    await cp(join(root, 'policies/dev'), join(dir, 'policies'), { recursive: true })
    const r = await checkConfig(input(await configFile()))
    expect(r.errors.every((e) => !e.blocksStart)).toBe(true)
    expect(r.errors.map(shown)).toEqual([
      expect.stringMatching(/demo-agent\.yaml:.*not in trust\.subjects/),
      expect.stringMatching(/demo-payer\.yaml:.*not in trust\.subjects/),
    ])
  })
})
