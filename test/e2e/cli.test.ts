/** The `mandate` command as a user runs it: exit codes, messages, --help. */
import { spawnSync } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = new URL('../../', import.meta.url).pathname
const mandate = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [join(root, 'bin/mandate.js'), ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, MANDATE_CONFIG: '', MANDATE_ISSUER: '', ...env },
  })

describe('mandate CLI', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-cli-'))
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it.each([
    [['--help']],
    [['serve', '--help']],
    [['policy', 'check', '--help']],
    [['policy', 'secret', '--help']],
    [['keys', 'generate', '--help']],
    [['config', 'check', '--help']],
    [['keys', 'rotate', '--help']],
  ])('%j prints help and exits 0', (args) => {
    const r = mandate(args)
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/^Usage: mandate/)
  })

  it('--help names the broker URL, the profile, the admin port and the exit codes', () => {
    const r = mandate(['--help'])
    expect(r.stdout).toContain('$MANDATE_URL')
    expect(r.stdout).toContain('~/.config/mandate/config.yaml')
    expect(r.stdout).toContain('MANDATE_ADMIN_PORT')
    expect(r.stdout).toMatch(/Exit codes:\n {2}0 {2}done\n {2}1 {2}refused or failed/)
    expect(r.stdout).toMatch(/^ {2}5 {2}the broker cannot be reached/m)
  })

  it('a usage error exits 2 with the usage', () => {
    const r = mandate(['revoke', 'agent', 'x', '--reason', 'r', '--bogus'])
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/^error: unknown option '--bogus'\n\nUsage: mandate revoke agent/)
  })

  it('policy check passes on the shipped policies', () => {
    for (const d of ['policies', 'policies/dev']) {
      const r = mandate(['policy', 'check', d])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/valid in/)
    }
  })

  it('policy check exits 1 and names file, line and field of every error', async () => {
    const bad = join(dir, 'bad')
    await (await import('node:fs/promises')).mkdir(bad)
    await writeFile(
      join(bad, 'broken-agent.yaml'),
      'agent: broken-agent\npurpose: x\nexpires: 2030-01-01\nauthentication:\n  method: client_secret_basic\n  secret_sha256: nothex\ngrants: []\ntoken_ttl: { default: 10, max: 5 }\n',
    )
    const r = mandate(['policy', 'check', bad])
    expect(r.status).toBe(1)
    expect(r.stderr).toContain(`${join(bad, 'broken-agent.yaml')}:1:1: owner:`)
    expect(r.stderr).toContain(`${join(bad, 'broken-agent.yaml')}:6:18: authentication.secret_sha256:`)
    expect(r.stderr).toMatch(/grants: /)
    expect(r.stderr).toMatch(/token_ttl\.default: /)
  })

  it('policy secret prints a 256-bit secret and its SHA-256', async () => {
    const r = mandate(['policy', 'secret'])
    expect(r.status).toBe(0)
    const secret = /^ {2}([A-Za-z0-9_-]{43})$/m.exec(r.stdout)?.[1]
    const hash = /secret_sha256: ([0-9a-f]{64})/.exec(r.stdout)?.[1]
    expect(secret).toBeDefined()
    const { createHash } = await import('node:crypto')
    expect(hash).toBe(createHash('sha256').update(secret!).digest('hex'))
  })

  it('serve refuses an invalid config with one line and exit 1', async () => {
    const cfg = join(dir, 'bad.yaml')
    await writeFile(cfg, 'issuer: http://example.com\nlimits: { clock_skew_seconds: 600 }\n')
    const r = mandate(['serve', '--config', cfg])
    expect(r.status).toBe(1)
    const lines = r.stderr.trim().split('\n')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^mandate: invalid config: .*issuer: .*limits\.clock_skew_seconds: /)
  })

  it('serve without --dev and without an issuer refuses to start', () => {
    const r = mandate(['serve'])
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/issuer: is required/)
  })

  it('serve refuses bad policies at start with file and line', async () => {
    const policies = join(dir, 'p2')
    await (await import('node:fs/promises')).mkdir(policies)
    await writeFile(join(policies, 'x.yaml'), 'agent: x\n')
    const keysFile = join(dir, 'keys.json')
    const gen = mandate(['keys', 'generate', keysFile])
    expect(gen.status, gen.stderr).toBe(0)
    expect(mandate(['keys', 'generate', keysFile]).status).toBe(1) // never overwrites
    const r = mandate(['serve'], {
      MANDATE_ISSUER: 'https://mandate.example.com',
      MANDATE_POLICIES_DIR: policies,
      MANDATE_SIGNING_KEYS_FILE: keysFile,
    })
    expect(r.status).toBe(1)
    expect(r.stderr).toMatch(/cannot start: .*x\.yaml:1:1: owner/)
  })

  describe('config check', () => {
    it('prints every config error with its path and its place in the config file, and exits 1', async () => {
      const cfg = join(dir, 'check-bad.yaml')
      await writeFile(cfg, 'issuer: https://mandate.example.com\naudit:\n  group_max_records: 0\nlimits: { clock_skew_seconds: 600 }\nbogus: 1\n')
      const r = mandate(['config', 'check', '--config', cfg])
      expect(r.status).toBe(1)
      const lines = r.stderr.trim().split('\n')
      expect(lines).toEqual([
        `${cfg}:4:31: limits.clock_skew_seconds: Too big: expected number to be <=60`,
        `${cfg}:3:22: audit.group_max_records: Too small: expected number to be >=1`,
        `${cfg}:5:8: (root): Unrecognized key: "bogus"`,
        '3 error(s) in the config',
      ])
    })

    it('checks the policies and the keys file as serve would, connecting to nothing', async () => {
      const policies = join(dir, 'check-policies')
      await (await import('node:fs/promises')).mkdir(policies)
      await writeFile(join(policies, 'x.yaml'), 'agent: x\n')
      const env = {
        MANDATE_ISSUER: 'https://mandate.example.com',
        MANDATE_POLICIES_DIR: policies,
        MANDATE_SIGNING_KEYS_FILE: join(dir, 'absent.json'),
        DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
      }
      const r = mandate(['config', 'check'], env)
      expect(r.status).toBe(1)
      expect(r.stderr).toContain(`\n${join(policies, 'x.yaml')}:1:1: owner:`.slice(1))
      expect(r.stderr).toMatch(/^signing\.keys_file: cannot read signing keys from .*absent\.json: ENOENT/m)
      expect(r.stderr).toMatch(/error\(s\): serve would refuse to start/)
      expect(r.stdout).toMatch(/database: PostgreSQL \(DATABASE_URL\)/)
      expect(r.stdout + r.stderr).not.toContain('nobody@')
    })

    it('fails on a policy trusting an unlisted issuer, an expired policy and no admin key, and warns of one expiring soon', async () => {
      const policies = join(dir, 'check-trust')
      await (await import('node:fs/promises')).mkdir(policies)
      const { secretAgentPolicy } = await import('../support/broker.js')
      const soon = new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10)
      await writeFile(join(policies, 'untrusted.yaml'), secretAgentPolicy('untrusted', 'https://elsewhere.example.com'))
      await writeFile(join(policies, 'expired.yaml'), secretAgentPolicy('expired', 'https://login.example.com', { expires: '2020-01-01' }))
      await writeFile(join(policies, 'soon.yaml'), secretAgentPolicy('soon', 'https://login.example.com', { expires: soon }))
      const keysFile = join(dir, 'check-trust-keys.json')
      expect(mandate(['keys', 'generate', keysFile]).status).toBe(0)
      const cfg = join(dir, 'check-trust.yaml')
      await writeFile(
        cfg,
        `issuer: https://mandate.example.com\npolicies_dir: ${policies}\nsigning: { keys_file: ${keysFile} }\ntrust:\n  subjects: [{ issuer: https://login.example.com, algorithms: [RS256] }]\n`,
      )
      const r = mandate(['config', 'check', '--config', cfg])
      expect(r.status).toBe(1)
      expect(r.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(/^warning: .*soon\.yaml:4:10: expires: expires in [1-3] day\(s\)/),
        `${join(policies, 'expired.yaml')}:4:10: expires: expired on 2020-01-01T00:00:00.000Z: the agent gets no token`,
        `${join(policies, 'untrusted.yaml')}:6:19: users.0.issuer: https://elsewhere.example.com is not in trust.subjects or trust.id_jag: its users' tokens would be refused`,
        expect.stringMatching(/^admin\.keys: no admin key/),
        '3 error(s): serve would start, but not as configured to work',
      ])
    })

    it('exits 0 on the shipped dev defaults', () => {
      const r = mandate(['config', 'check', '--dev'], { MANDATE_DATA_DIR: join(dir, 'check-data') })
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/config valid: serve would start/)
    })
  })

  describe('keys rotate', () => {
    const read = async (f: string) =>
      JSON.parse(await (await import('node:fs/promises')).readFile(f, 'utf8')) as { keys: Record<string, unknown>[]; retired?: Record<string, unknown>[] }

    it('adds a key that signs after the delay, keeps the file private, and refuses a second pending rotation', async () => {
      const file = join(dir, 'rotate.json')
      expect(mandate(['keys', 'generate', file]).status).toBe(0)
      const before = Math.floor(Date.now() / 1000)
      const r = mandate(['keys', 'rotate', file, '--activate-after', '600'])
      expect(r.status, r.stderr).toBe(0)
      const after = await read(file)
      expect(after.keys).toHaveLength(2)
      const activates = after.keys[1]!['mandate_activates_at'] as number
      expect(activates).toBeGreaterThanOrEqual(before + 600)
      expect(activates).toBeLessThanOrEqual(before + 605)
      expect(r.stdout).toContain(String(after.keys[1]!['kid']))
      expect(r.stdout).not.toContain(String(after.keys[1]!['d']))
      expect((await (await import('node:fs/promises')).stat(file)).mode & 0o777).toBe(0o600)
      // Still valid for serve, still signing with the old key.
      const cfg = join(dir, 'rotate.yaml')
      await writeFile(
        cfg,
        'trust:\n  subjects: [{ issuer: https://login.example.com, algorithms: [RS256] }]\nadmin:\n  keys: [{ name: ops, sha256: ' +
          'ab'.repeat(32) +
          ', roles: [admin] }]\n',
      )
      const check = mandate(['config', 'check', '--config', cfg], {
        MANDATE_ISSUER: 'https://mandate.example.com',
        MANDATE_POLICIES_DIR: join(root, 'policies'),
        MANDATE_SIGNING_KEYS_FILE: file,
      })
      expect(check.status, check.stderr).toBe(0)
      expect(check.stdout).toContain(`2 in ${file}, signing with ${String(after.keys[0]!['kid'])}`)

      const again = mandate(['keys', 'rotate', file])
      expect(again.status).toBe(1)
      expect(again.stderr).toMatch(/a rotation is already pending/)
      expect((await read(file)).keys).toHaveLength(2)
    })

    it('retires a key whose successor has signed longer than --retire-after, keeping only its public half', async () => {
      const file = join(dir, 'retire.json')
      expect(mandate(['keys', 'generate', file]).status).toBe(0)
      const now = Math.floor(Date.now() / 1000)
      const data = await read(file)
      const { generateSigningJwk } = await import('../../src/tokens/keys.js')
      const successor = { ...(await generateSigningJwk()), mandate_activates_at: now - 7200 }
      await writeFile(file, JSON.stringify({ keys: [data.keys[0], successor] }), { mode: 0o600 })
      const r = mandate(['keys', 'rotate', file, '--retire-after', '3600'])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/retired 1 key/)
      const after = await read(file)
      expect(after.keys.map((k) => k['kid'])).toEqual([successor.kid, expect.any(String)])
      expect(after.retired).toHaveLength(1)
      expect(after.retired![0]!['kid']).toBe(data.keys[0]!['kid'])
      expect(after.retired![0]).not.toHaveProperty('d')
    })
  })

  /**
   * The build as the image holds it, without the sources, and with commander
   * as the only package: --help, usage errors and completion must need
   * nothing else (the command modules, and Hono, jose, the drivers, pino and
   * OpenTelemetry with them, load only when their command runs).
   */
  describe('from the build, with commander alone installed', () => {
    let app: string
    const built = (args: string[]) => spawnSync(process.execPath, [join(app, 'bin/mandate.js'), ...args], { cwd: app, encoding: 'utf8', timeout: 30_000 })

    beforeAll(async () => {
      app = join(dir, 'app')
      await mkdir(join(app, 'bin'), { recursive: true })
      await mkdir(join(app, 'node_modules'))
      // Type checking is the typecheck's job: emit only.
      const tsc = spawnSync(
        process.execPath,
        [
          join(root, 'node_modules/typescript/bin/tsc'),
          '-p',
          join(root, 'tsconfig.build.json'),
          '--outDir',
          join(app, 'dist'),
          '--noCheck',
          '--declaration',
          'false',
          '--sourceMap',
          'false',
        ],
        { cwd: root, encoding: 'utf8', timeout: 170_000 },
      )
      expect(tsc.status, `tsc: ${tsc.stdout}${tsc.stderr}`).toBe(0)
      await copyFile(join(root, 'package.json'), join(app, 'package.json'))
      await copyFile(join(root, 'bin/mandate.js'), join(app, 'bin/mandate.js'))
      await symlink(join(root, 'node_modules/commander'), join(app, 'node_modules/commander'))
    }, 180_000)

    it.each([
      [['--help']],
      [['revoke', '--help']],
      [['revoke', 'list', '--help']],
      [['serve', '--help']],
      [['audit', 'verify', '--help']],
      [['completion', '--help']],
    ])('%j prints help and exits 0', (args) => {
      const r = built(args)
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/^Usage: mandate/)
      expect(r.stderr).toBe('')
    })

    it('usage errors and completion scripts too', () => {
      expect(built(['nonsense']).status).toBe(2)
      expect(built(['completion', 'bash']).stdout).toContain('complete -F _mandate mandate')
      expect(built(['completion', 'zsh']).stdout).toMatch(/^#compdef mandate\n/)
    })

    it('a command that needs more than commander fails here (the layout is what this test says)', () => {
      const r = built(['policy', 'secret'])
      expect(r.status).not.toBe(0)
      expect(r.stderr).toMatch(/ERR_MODULE_NOT_FOUND|Cannot find package/)
    })

    it('without dist/ and without sources: one line saying to build, exit 2', async () => {
      await rename(join(app, 'dist'), join(app, 'dist-away'))
      try {
        const r = built(['--help'])
        expect(r.status).toBe(2)
        expect(r.stderr).toBe('mandate: dist/ is missing and there are no sources to run: npm run build\n')
      } finally {
        await rename(join(app, 'dist-away'), join(app, 'dist'))
      }
    })
  })
})
