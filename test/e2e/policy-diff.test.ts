/**
 * `mandate policy diff`, as a CI job runs it: two policy directories, or one and itself at a git ref; exit 6 when
 * any agent gains anything, 0 when the change only narrows.
 */
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = new URL('../../', import.meta.url).pathname
const mandate = (args: string[], cwd = root) =>
  spawnSync(process.execPath, [join(root, 'bin/mandate.js'), ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, MANDATE_CONFIG: '', MANDATE_ISSUER: '' },
  })

const HASH = 'ab'.repeat(32)
const policy = (o: { scopes?: string; audiences?: string[]; ttl?: number; depth?: number; expires?: string; groups?: string } = {}) => `agent: mail-agent
owner: ops@example.com
purpose: reads mail
expires: ${o.expires ?? '2030-01-01'}
authentication: { method: client_secret_basic, secret_sha256: ${HASH} }
users:
  - issuer: https://idp.example.com${o.groups === undefined ? '' : `\n    claims: { groups: [${o.groups}] }`}
grants:
${(o.audiences ?? ['https://mail.example.com']).map((a) => `  - { audience: ${a}, scopes: [${o.scopes ?? 'read'}] }`).join('\n')}
token_ttl: { default: 300, max: ${o.ttl ?? 600} }
delegation: { max_depth: ${o.depth ?? 1} }
`

describe('mandate policy diff', () => {
  let dir: string
  const write = async (name: string, files: Record<string, string>) => {
    const d = join(dir, name)
    await mkdir(d, { recursive: true })
    for (const [f, text] of Object.entries(files)) await writeFile(join(d, f), text)
    return d
  }
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-diff-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it('exits 6 and names what widens: a scope, an audience, a longer ttl, deeper delegation, a new agent', async () => {
    const old = await write('w-old', { 'mail-agent.yaml': policy() })
    const wider = await write('w-new', {
      'mail-agent.yaml': policy({ scopes: 'read, send', audiences: ['https://mail.example.com', 'https://files.example.com'], ttl: 900, depth: 2 }),
      'new-agent.yaml': policy().replace('agent: mail-agent', 'agent: new-agent'),
    })
    const r = mandate(['policy', 'diff', old, wider])
    expect(r.status, r.stderr).toBe(6)
    expect(r.stdout).toContain('+ gains scope at https://mail.example.com: send  [widens]')
    expect(r.stdout).toContain('+ gains audience: https://files.example.com  [widens]')
    expect(r.stdout).toContain('+ gains ttl max (s): 600 -> 900  [widens]')
    expect(r.stdout).toContain('+ gains delegation depth: 1 -> 2  [widens]')
    expect(r.stdout).toMatch(/^new-agent \(added\)$/m)
    const json = mandate(['policy', 'diff', '--json', old, wider])
    expect(json.status).toBe(6)
    const d = JSON.parse(json.stdout) as { widens: boolean; agents: { agent: string; changes: { what: string; widens: boolean }[] }[] }
    expect(d.widens).toBe(true)
    expect(d.agents.map((a) => a.agent)).toEqual(['mail-agent', 'new-agent'])
  })

  it('exits 0 when the change only narrows (fewer scopes, shorter ttl, earlier expiry, narrower users), and when nothing changes', async () => {
    const old = await write('n-old', { 'mail-agent.yaml': policy({ scopes: 'read, send', ttl: 900 }) })
    const narrower = await write('n-new', { 'mail-agent.yaml': policy({ scopes: 'read', ttl: 300, expires: '2029-01-01', groups: 'sre' }) })
    const r = mandate(['policy', 'diff', old, narrower])
    expect(r.status, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('- loses scope at https://mail.example.com: send')
    expect(r.stdout).toContain('- loses expiry: 2030-01-01 -> 2029-01-01')
    expect(r.stdout).toContain('nothing widens')
    expect(mandate(['policy', 'diff', old, old]).status).toBe(0)
  })

  it('a user rule made looser widens', async () => {
    const old = await write('u-old', { 'mail-agent.yaml': policy({ groups: 'sre' }) })
    const looser = await write('u-new', { 'mail-agent.yaml': policy({ groups: 'sre, sales' }) })
    const r = mandate(['policy', 'diff', old, looser])
    expect(r.status).toBe(6)
    expect(r.stdout).toContain('+ gains users: https://idp.example.com with groups=sales|sre  [widens]')
  })

  it('hours lost widen (exit 6); hours gained narrow (exit 0)', async () => {
    const office = policy().replace('token_ttl:', 'hours: Mon-Fri 08:00-18:00\ntimezone: Europe/Berlin\ntoken_ttl:')
    const windowed = await write('h-old', { 'mail-agent.yaml': office })
    const always = await write('h-new', { 'mail-agent.yaml': policy() })
    const lost = mandate(['policy', 'diff', windowed, always])
    expect(lost.status, lost.stdout + lost.stderr).toBe(6)
    expect(lost.stdout).toContain('+ loses hours: Mon-Fri 08:00-18:00 Europe/Berlin -> always  [widens]')
    const gained = mandate(['policy', 'diff', always, windowed])
    expect(gained.status, gained.stdout + gained.stderr).toBe(0)
    expect(gained.stdout).toContain('~ gains hours: always -> Mon-Fri 08:00-18:00 Europe/Berlin')
  })

  it('--git REF compares the working directory with its own committed version', async () => {
    const repo = join(dir, 'repo')
    const policies = await write('repo/policies', { 'mail-agent.yaml': policy() })
    const git = (...args: string[]) => spawnSync('git', ['-C', repo, ...args], { encoding: 'utf8' })
    git('init', '-q')
    git('add', '.')
    expect(git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-qm', 'policies').status).toBe(0)
    expect(mandate(['policy', 'diff', '--git', 'HEAD', policies]).status).toBe(0)
    await writeFile(join(policies, 'mail-agent.yaml'), policy({ scopes: 'read, delete' }))
    const r = mandate(['policy', 'diff', '--git', 'HEAD', 'policies'], repo)
    expect(r.status, r.stderr).toBe(6)
    expect(r.stdout).toContain('+ gains scope at https://mail.example.com: delete  [widens]')
    expect(mandate(['policy', 'diff', '--git', 'no-such-ref', policies]).status).toBe(2)
  })

  it('exits 2 without two directories, 1 when a side does not load', async () => {
    expect(mandate(['policy', 'diff', join(dir, 'w-old')]).status).toBe(2)
    const broken = await write('broken', { 'mail-agent.yaml': 'agent: mail-agent\n' })
    expect(mandate(['policy', 'diff', join(dir, 'w-old'), broken]).status).toBe(1)
  })
})
