import { createHash, generateKeyPairSync } from 'node:crypto'
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, type JWK } from 'jose'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { AgentId } from '../../../src/core/claims.js'
import { createPolicyStore, HOURS_NOW_RESTRICT, loadPolicies, parsePolicy, type LoadResult } from '../../../src/policy/load.js'
import { formatIssue, type PolicyIssue } from '../../../src/policy/port.js'
import type { AgentPolicy } from '../../../src/policy/port.js'
import { openPolicyDir, watchPolicies, type ReloadablePolicyStore } from '../../../src/policy/watch.js'

/**
 * `readFile` passes through to the real one, except for paths a test names in
 * `unreadable`: those fail the way a file without read permission does (the
 * suite may run as root, where chmod cannot make a file unreadable).
 */
const fsControl = vi.hoisted(() => ({ unreadable: new Set<string>() }))
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>()
  const readFile = (async (...args: Parameters<typeof real.readFile>) => {
    const [path] = args
    if (typeof path === 'string' && fsControl.unreadable.has(path)) {
      throw Object.assign(new Error(`EACCES: permission denied, open '${path}'`), { code: 'EACCES', errno: -13, syscall: 'open', path })
    }
    return real.readFile(...args)
  }) as typeof real.readFile
  return { ...real, readFile, default: { ...real, readFile } }
})

const HASH = 'ab'.repeat(32)

interface Parts {
  owner?: string | null
  authentication?: string
  users?: string
  grants?: string
  token_ttl?: string
  delegation?: string | null
  extra?: string | null
}

/** A valid policy for `agent`, one section replaceable; a comment first so that no line number is trivially 1. */
function policyYaml(agent: string, parts: Parts = {}): string {
  const sections: (string | null | undefined)[] = [
    `# policy for ${agent}, under test`,
    `agent: ${agent}`,
    parts.owner === undefined ? 'owner: platform-team@example.com' : parts.owner,
    'purpose: Exercises the policy loader.',
    'expires: 2030-01-01',
    parts.authentication ?? `authentication:\n  method: client_secret_basic\n  secret_sha256: ${HASH}`,
    parts.users ?? 'users:\n  - issuer: https://idp.test\n    claims:\n      groups: [engineering]',
    parts.grants ?? 'grants:\n  - audience: https://api.test\n    scopes: [read, write]\n    default_scopes: [read]',
    parts.token_ttl ?? 'token_ttl:\n  default: 300\n  max: 900',
    parts.delegation,
    parts.extra,
  ]
  return `${sections.filter((s): s is string => typeof s === 'string').join('\n')}\n`
}

const workload = (subject: string) => `authentication:\n  method: workload_identity\n  issuer: https://workloads.test\n  subject: ${subject}`

/** 1-based line of the `n`th (1-based) line containing `needle`. */
function lineOf(text: string, needle: string, n = 1): number {
  let seen = 0
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    if ((lines[i] ?? '').includes(needle) && ++seen === n) return i + 1
  }
  throw new Error(`${needle} not found ${n} time(s)`)
}

function issuesOf(r: LoadResult): readonly PolicyIssue[] {
  if (r.ok) throw new Error(`expected issues, loaded ${r.policies.map((p) => p.agent).join(', ')}`)
  return r.issues
}

function policiesOf(r: LoadResult): readonly AgentPolicy[] {
  if (!r.ok) throw new Error(`expected policies, got ${JSON.stringify(r.issues)}`)
  return r.policies
}

function parsedIssues(file: string, text: string): PolicyIssue[] {
  const r = parsePolicy(file, text)
  if ('policy' in r) throw new Error('expected issues')
  return r.issues
}

let dir: string
const write = async (name: string, text: string): Promise<string> => {
  const path = join(dir, name)
  await writeFile(path, text)
  return path
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-policies-'))
})
afterEach(async () => {
  fsControl.unreadable.clear()
  await rm(dir, { recursive: true, force: true })
})

describe('parsePolicy / loadPolicies: a good policy', () => {
  it('compiles every field', async () => {
    const text = policyYaml('agent-a', { delegation: 'delegation:\n  max_depth: 2\n  sub_agents: [agent-b]' })
    const file = await write('agent-a.yaml', text)
    await write('agent-b.yml', policyYaml('agent-b'))
    await write('README.md', 'not a policy')
    await write('notes.yaml.bak', 'not: a policy')
    await mkdir(join(dir, 'nested.yaml'))
    const policies = policiesOf(await loadPolicies(dir))
    expect(policies.map((p) => p.agent)).toEqual(['agent-a', 'agent-b'])
    const a = policies[0] as AgentPolicy
    expect(a).toMatchObject({
      agent: 'agent-a',
      owner: 'platform-team@example.com',
      purpose: 'Exercises the policy loader.',
      expires: Date.UTC(2030, 0, 1) / 1000,
      delegators: [{ issuer: 'https://idp.test', claims: { groups: ['engineering'] } }],
      ttl: { default: 300, max: 900 },
      sourceHash: createHash('sha256').update(text).digest('hex'),
      source: file,
    })
    expect(a.authentication.method === 'client_secret_basic' && a.authentication.secretHashes[0]!.equals(Buffer.from(HASH, 'hex'))).toBe(true)
    expect([...a.grants.entries()]).toEqual([
      ['https://api.test', { audience: 'https://api.test', scopes: new Set(['read', 'write']), defaultScopes: ['read'] }],
    ])
    expect(a.delegation.maxDepth).toBe(2)
    expect([...a.delegation.subAgents]).toEqual(['agent-b'])
    // Defaults: depth 1, no sub-agents.
    expect(policies[1]?.delegation.maxDepth).toBe(1)
    expect(policies[1]?.delegation.subAgents.size).toBe(0)
  })

  it('reads an expiry instant with an offset', () => {
    const r = parsePolicy('/p/agent-a.yaml', policyYaml('agent-a').replace('expires: 2030-01-01', 'expires: 2030-01-01T12:00:00+02:00'))
    expect('policy' in r && r.policy.expires).toBe(Date.UTC(2030, 0, 1, 10) / 1000)
  })

  it('imports inline public JWKs once, at load', async () => {
    const { publicKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk: JWK = { ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k1' }
    const r = parsePolicy(
      '/p/agent-a.yaml',
      policyYaml('agent-a', { authentication: `authentication:\n  method: private_key_jwt\n  jwks:\n    keys:\n      - ${JSON.stringify(jwk)}` }),
    )
    if (!('policy' in r)) throw new Error(JSON.stringify(r.issues))
    const auth = r.policy.authentication
    expect(auth.method).toBe('private_key_jwt')
    if (auth.method !== 'private_key_jwt') return
    expect(auth.keys).toHaveLength(1)
    expect(auth.keys[0]).toMatchObject({ kid: 'k1', alg: 'ES256' })
    expect(auth.keys[0]?.key.type).toBe('public')
    expect(auth.keys[0]?.key.asymmetricKeyType).toBe('ec')
  })

  it('an empty directory is an empty, valid set', async () => {
    expect(policiesOf(await loadPolicies(dir))).toEqual([])
  })
})

describe('parsePolicy / loadPolicies: issues carry file, line and field', () => {
  it('missing owner: field owner, at the mapping it belongs in', async () => {
    const text = policyYaml('agent-a', { owner: null })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'owner', line: lineOf(text, 'agent:') })])
  })

  it('blank owner: field owner, at its line', async () => {
    const text = policyYaml('agent-a', { owner: 'owner: "   "' })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'owner', line: lineOf(text, 'owner:') })])
  })

  it('bad secret_sha256: field authentication.secret_sha256, at its line', async () => {
    const text = policyYaml('agent-a', { authentication: `authentication:\n  method: client_secret_basic\n  secret_sha256: ${HASH.toUpperCase()}` })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([
      expect.objectContaining({ file, field: 'authentication.secret_sha256', line: lineOf(text, 'secret_sha256:'), column: 18 }),
    ])
  })

  it('refuses an unknown key (strict objects), top level and nested', async () => {
    const top = policyYaml('agent-a', { extra: 'colour: blue' })
    const nested = policyYaml('agent-b', { token_ttl: 'token_ttl:\n  default: 300\n  max: 900\n  maximum: 901' })
    const a = await write('agent-a.yaml', top)
    const b = await write('agent-b.yaml', nested)
    const issues = issuesOf(await loadPolicies(dir))
    expect(issues.map((i) => i.file).sort()).toEqual([a, b])
  })

  it('an unknown key is located at that key: its line, and a field naming it', () => {
    const top = policyYaml('agent-a', { extra: 'colour: blue' })
    expect(parsedIssues('/p/agent-a.yaml', top)).toEqual([expect.objectContaining({ field: 'colour', line: lineOf(top, 'colour:') })])
    const nested = policyYaml('agent-a', { token_ttl: 'token_ttl:\n  default: 300\n  max: 900\n  maximum: 901' })
    expect(parsedIssues('/p/agent-a.yaml', nested)).toEqual([expect.objectContaining({ field: 'token_ttl.maximum', line: lineOf(nested, 'maximum:') })])
  })

  it('default_scopes not a subset of scopes: field grants.0.default_scopes, at its line', async () => {
    const text = policyYaml('agent-a', { grants: 'grants:\n  - audience: https://api.test\n    scopes: [read]\n    default_scopes: [read, write]' })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([
      expect.objectContaining({ file, field: 'grants.0.default_scopes', line: lineOf(text, 'default_scopes:') }),
    ])
  })

  it('ttl default over max: field token_ttl.default, at its line', async () => {
    const text = policyYaml('agent-a', { token_ttl: 'token_ttl:\n  default: 901\n  max: 900' })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'token_ttl.default', line: lineOf(text, 'default: 901') })])
  })

  it('bad YAML syntax: the line of the error, no field', async () => {
    const text = policyYaml('agent-a').replace('purpose: Exercises the policy loader.', 'purpose: Exercises: the loader')
    const file = await write('agent-a.yaml', text)
    const issues = issuesOf(await loadPolicies(dir))
    expect(issues.length).toBeGreaterThan(0)
    for (const i of issues) expect(i).toMatchObject({ file, field: '', line: lineOf(text, 'purpose:') })
  })

  it('a duplicate YAML key: the line of the second one', async () => {
    const text = policyYaml('agent-a', { extra: 'owner: someone-else@example.com' })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: '', line: lineOf(text, 'owner:', 2) })])
  })

  it('a document that is not a mapping', async () => {
    const file = await write('agent-a.yaml', '- agent: agent-a\n')
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: '', line: 1 })])
  })

  it('agent not matching the file name: field agent, at its line', async () => {
    const text = policyYaml('agent-b')
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'agent', line: lineOf(text, 'agent:') })])
  })

  it('a JWK with private members: field authentication.jwks.keys.0, at that key', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk: JWK = { ...(await exportJWK(privateKey)), alg: 'ES256', kid: 'leaked' }
    expect(jwk.d).toBeDefined()
    const text = policyYaml('agent-a', { authentication: `authentication:\n  method: private_key_jwt\n  jwks:\n    keys:\n      - ${JSON.stringify(jwk)}` })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'authentication.jwks.keys.0', line: lineOf(text, '"leaked"') })])
  })

  it('a JWK that is no usable key: field authentication.jwks.keys.0', () => {
    const jwk = { kty: 'EC', crv: 'P-256', alg: 'ES256', x: 'AAAA', y: 'AAAA' }
    const text = policyYaml('agent-a', { authentication: `authentication:\n  method: private_key_jwt\n  jwks:\n    keys:\n      - ${JSON.stringify(jwk)}` })
    expect(parsedIssues('/p/agent-a.yaml', text)).toEqual([expect.objectContaining({ field: 'authentication.jwks.keys.0', line: lineOf(text, '"kty"') })])
  })

  describe('a weak or malformed agent key makes the file invalid, at that key, with the reason', () => {
    const rsa = (options: { modulusLength: number; publicExponent?: number }) => generateKeyPairSync('rsa', options).publicKey.export({ format: 'jwk' })
    const keyYaml = (jwk: object) => `authentication:\n  method: private_key_jwt\n  jwks:\n    keys:\n      - ${JSON.stringify(jwk)}`

    it.each<[string, () => object, RegExp]>([
      ['RSA 1024 bits', () => ({ ...rsa({ modulusLength: 1024 }), alg: 'RS256' }), /1024 bits/],
      ['RSA e = 3', () => ({ ...rsa({ modulusLength: 2048, publicExponent: 3 }), alg: 'RS256' }), /exponent/],
      ['RSA e = 65537 spelled with a leading zero octet', () => ({ ...rsa({ modulusLength: 2048 }), e: 'AAEAAQ', alg: 'RS256' }), /exponent/],
      ['EC on secp256k1', () => ({ ...generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey.export({ format: 'jwk' }), alg: 'ES256' }), /curve/],
      [
        'an alg that does not fit the key (ES384 on P-256)',
        () => ({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }), alg: 'ES384' }),
        /ES384/,
      ],
      ['an RSA alg on an EC key', () => ({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }), alg: 'RS256' }), /RS256/],
    ])('%s', (_name, make, reason) => {
      const text = policyYaml('agent-a', { authentication: keyYaml({ kid: 'k1', ...make() }) })
      const issues = parsedIssues('/p/agent-a.yaml', text)
      expect(issues).toEqual([expect.objectContaining({ field: 'authentication.jwks.keys.0', line: lineOf(text, '"kid"') })])
      expect(issues[0]!.message).toMatch(reason)
    })

    it('accepts RSA 2048 with e = 65537 and EC P-256 (control)', () => {
      const text = policyYaml('agent-a', {
        authentication: `${keyYaml({ ...rsa({ modulusLength: 2048 }), alg: 'RS256', kid: 'r' })}\n      - ${JSON.stringify({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }), alg: 'ES256', kid: 'e' })}`,
      })
      expect('policy' in parsePolicy('/p/agent-a.yaml', text)).toBe(true)
    })
  })

  it('duplicate audience: field grants.1.audience, at the second one', async () => {
    const text = policyYaml('agent-a', {
      grants: 'grants:\n  - audience: https://api.test\n    scopes: [read]\n  - audience: https://api.test\n    scopes: [write]',
    })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'grants.1.audience', line: lineOf(text, 'audience:', 2) })])
  })

  it('several problems in one file are all reported', () => {
    const text = policyYaml('agent-a', { owner: null, token_ttl: 'token_ttl:\n  default: 0\n  max: 900' }).replace('expires: 2030-01-01', 'expires: someday')
    expect(
      parsedIssues('/p/agent-a.yaml', text)
        .map((i) => i.field)
        .sort(),
    ).toEqual(['expires', 'owner', 'token_ttl.default'])
  })
})

describe('loadPolicies: across files', () => {
  it('refuses an unknown sub-agent: the file and field that name it', async () => {
    const text = policyYaml('agent-a', { delegation: 'delegation:\n  max_depth: 2\n  sub_agents: [ghost]' })
    const file = await write('agent-a.yaml', text)
    await write('agent-b.yaml', policyYaml('agent-b'))
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'delegation.sub_agents' })])
  })

  it('an unknown sub-agent is located at the sub_agents line', async () => {
    const text = policyYaml('agent-a', { delegation: 'delegation:\n  max_depth: 2\n  sub_agents: [ghost]' })
    const file = await write('agent-a.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'delegation.sub_agents', line: lineOf(text, 'sub_agents:') })])
  })

  it('refuses one workload identity claimed by two agents: the second file', async () => {
    await write('agent-a.yaml', policyYaml('agent-a', { authentication: workload('spiffe://test/shared') }))
    const text = policyYaml('agent-b', { authentication: workload('spiffe://test/shared') })
    const file = await write('agent-b.yaml', text)
    await write('agent-c.yaml', policyYaml('agent-c', { authentication: workload('spiffe://test/other') }))
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'authentication' })])
  })

  it('a duplicate workload identity is located at the authentication line', async () => {
    await write('agent-a.yaml', policyYaml('agent-a', { authentication: workload('spiffe://test/shared') }))
    const text = policyYaml('agent-b', { authentication: workload('spiffe://test/shared') })
    const file = await write('agent-b.yaml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'authentication', line: lineOf(text, 'authentication:') })])
  })

  it('refuses one agent defined in two files (.yaml and .yml): the second file, field agent', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const file = await write('agent-a.yml', policyYaml('agent-a'))
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'agent' })])
  })

  it('a duplicate agent is located at the agent line', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const text = policyYaml('agent-a')
    const file = await write('agent-a.yml', text)
    expect(issuesOf(await loadPolicies(dir))).toEqual([expect.objectContaining({ file, field: 'agent', line: lineOf(text, 'agent:') })])
  })

  it('one bad file loads NOTHING (all or nothing), and only the bad file is blamed', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    await write('agent-c.yaml', policyYaml('agent-c'))
    const bad = await write('agent-b.yaml', policyYaml('agent-b', { token_ttl: 'token_ttl:\n  default: 901\n  max: 900' }))
    const r = await loadPolicies(dir)
    expect(r.ok).toBe(false)
    expect('policies' in r).toBe(false)
    expect(new Set(issuesOf(r).map((i) => i.file))).toEqual(new Set([bad]))
  })

  it('a directory that cannot be read is one issue naming it', async () => {
    const missing = join(dir, 'nope')
    expect(issuesOf(await loadPolicies(missing))).toEqual([expect.objectContaining({ file: missing, field: '' })])
  })

  it('a policy file that cannot be read is an issue naming it, not a rejection', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const locked = await write('agent-b.yaml', policyYaml('agent-b'))
    fsControl.unreadable.add(locked)
    const r = await loadPolicies(dir).catch((err: unknown) => ({ rejected: err }))
    expect(r).toMatchObject({ ok: false, issues: [expect.objectContaining({ file: locked })] })
  })

  it('loads a policy file that is a symlink (as Kubernetes ConfigMap volumes mount them)', async () => {
    const store = join(dir, '..data')
    await mkdir(store)
    await writeFile(join(store, 'agent-a.yaml'), policyYaml('agent-a'))
    await symlink(join(store, 'agent-a.yaml'), join(dir, 'agent-a.yaml'))
    expect(policiesOf(await loadPolicies(dir)).map((p) => p.agent)).toEqual(['agent-a'])
  })
})

describe('watchPolicies', () => {
  let store: ReloadablePolicyStore | undefined
  afterEach(() => {
    store?.close()
    store = undefined
  })

  async function start(debounceMs: number, pollMs?: number) {
    const loaded = [] as number[]
    const rejected = [] as (readonly PolicyIssue[])[]
    store = watchPolicies(dir, createPolicyStore(policiesOf(await loadPolicies(dir))), { debounceMs, ...(pollMs === undefined ? {} : { pollMs }) })
    store.subscribe({ onLoaded: (n) => loaded.push(n), onRejected: (issues) => rejected.push(issues) })
    return { store, loaded, rejected }
  }

  it('a good edit swaps the whole set in', async () => {
    await write('agent-a.yaml', policyYaml('agent-a', { authentication: workload('spiffe://test/a') }))
    const { store: s, loaded, rejected } = await start(60_000)
    expect(s.size).toBe(1)
    await write('agent-b.yaml', policyYaml('agent-b', { authentication: workload('spiffe://test/b') }))
    await expect(s.reload()).resolves.toEqual({ ok: true, agents: 2 })
    expect(s.size).toBe(2)
    expect(s.get('agent-b' as AgentId)?.agent).toBe('agent-b')
    expect(s.byWorkload('https://workloads.test', 'spiffe://test/b')?.agent).toBe('agent-b')
    expect(loaded).toEqual([2])
    expect(rejected).toEqual([])
  })

  it('a bad edit keeps the last good set in force and reports its issues', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const { store: s, loaded, rejected } = await start(60_000)
    const before = s.get('agent-a' as AgentId)
    expect(before).toBeDefined()

    const bad = await write('agent-a.yaml', policyYaml('agent-a', { owner: null }))
    await write('agent-b.yaml', policyYaml('agent-b'))
    const r = await s.reload()
    expect(r.ok).toBe(false)
    if (!r.ok) expect(r.issues).toEqual([expect.objectContaining({ file: bad, field: 'owner' })])
    expect(s.get('agent-a' as AgentId)).toBe(before)
    expect(s.get('agent-b' as AgentId)).toBeUndefined()
    expect(s.size).toBe(1)
    expect(loaded).toEqual([])
    expect(rejected).toHaveLength(1)

    // Fixing the file brings the new set in.
    await write('agent-a.yaml', policyYaml('agent-a', { owner: 'owner: new-team@example.com' }))
    await expect(s.reload()).resolves.toEqual({ ok: true, agents: 2 })
    expect(s.get('agent-a' as AgentId)?.owner).toBe('new-team@example.com')
  })

  it('a file that cannot be read on reload keeps the last good set, reported rather than thrown', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const { store: s, rejected } = await start(60_000)
    const locked = await write('agent-b.yaml', policyYaml('agent-b'))
    fsControl.unreadable.add(locked)
    const r = await s.reload().catch((err: unknown) => ({ rejected: err }))
    expect(r).toMatchObject({ ok: false, issues: [expect.objectContaining({ file: locked })] })
    expect(rejected).toHaveLength(1)
    expect(s.size).toBe(1)
  })

  it('the file watcher reloads by itself after an edit', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const { store: s } = await start(20)
    expect(s.get('agent-b' as AgentId)).toBeUndefined()
    await write('agent-b.yaml', policyYaml('agent-b'))
    await vi.waitFor(() => expect(s.get('agent-b' as AgentId)?.agent).toBe('agent-b'), { timeout: 5_000, interval: 50 })
    expect(s.size).toBe(2)
  })

  it('a removed directory stays in status() until one is back at the path, which is then watched for edits', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const { store: s, loaded, rejected } = await start(20, 20)
    expect(s.status()).toEqual({ ok: true, issues: [] })

    await rm(dir, { recursive: true })
    await vi.waitFor(() => expect(rejected.length).toBeGreaterThan(0), { timeout: 4_000, interval: 20 })
    expect(s.status()).toEqual({ ok: false, issues: [expect.objectContaining({ file: dir, line: 0, message: 'cannot read directory (ENOENT)' })] })
    expect(s.get('agent-a' as AgentId)?.agent).toBe('agent-a')

    await mkdir(dir)
    await write('agent-a.yaml', policyYaml('agent-a'))
    await vi.waitFor(() => expect(loaded).toContain(1), { timeout: 4_000, interval: 20 })
    expect(s.status()).toEqual({ ok: true, issues: [] })
    // An edit in the new directory: only a watcher on it can see this one.
    await write('agent-b.yaml', policyYaml('agent-b'))
    await vi.waitFor(() => expect(s.size).toBe(2), { timeout: 4_000, interval: 20 })
  }, 15_000)

  it('a rejected reload stays in status() until a good one', async () => {
    await write('agent-a.yaml', policyYaml('agent-a'))
    const { store: s } = await start(60_000)
    const bad = await write('agent-a.yaml', policyYaml('agent-a', { owner: null }))
    await s.reload()
    expect(s.status()).toEqual({ ok: false, issues: [expect.objectContaining({ file: bad, field: 'owner' })] })
    await write('agent-a.yaml', policyYaml('agent-a'))
    await s.reload()
    expect(s.status()).toEqual({ ok: true, issues: [] })
  })
})

describe('hours on a policy, a grant and the outside_hours rule', () => {
  const grantWith = (fields: string) => `grants:\n  - audience: https://api.test\n    scopes: [read]\n    default_scopes: [read]\n${fields}`

  it('compiles each window parsed, a grant’s zone defaulting to the policy’s, and the rule’s hours to the policy’s', () => {
    const text = policyYaml('agent-a', {
      grants: `${grantWith('    hours: Mon-Fri 09:00-17:00')}\n  - audience: https://other.test\n    scopes: [read]\n    hours: Sat 10:00-12:00\n    timezone: Asia/Tokyo`,
      extra: 'hours: Mon-Sat 07:00-20:00\ntimezone: Europe/Berlin\nanomalies:\n  outside_hours: { action: alert }',
    })
    const r = parsePolicy('/p/agent-a.yaml', text)
    if (!('policy' in r)) throw new Error(JSON.stringify(r.issues))
    const p = r.policy
    expect(p.hours).toMatchObject({ text: 'Mon-Sat 07:00-20:00', timeZone: 'Europe/Berlin' })
    expect(p.grants.get('https://api.test')?.hours).toMatchObject({ text: 'Mon-Fri 09:00-17:00', timeZone: 'Europe/Berlin' })
    expect(p.grants.get('https://other.test')?.hours).toMatchObject({ text: 'Sat 10:00-12:00', timeZone: 'Asia/Tokyo' })
    expect(p.anomalies?.hours).toBe(p.hours)
    const own = parsePolicy('/p/agent-a.yaml', policyYaml('agent-a', { extra: 'anomalies:\n  outside_hours: { hours: Mon-Fri 06:00-22:00 }' }))
    if (!('policy' in own)) throw new Error(JSON.stringify(own.issues))
    // The rule's own hours restrict nothing: the policy has none, its grants none.
    expect(own.policy.hours).toBeUndefined()
    expect(own.policy.anomalies?.hours).toMatchObject({ text: 'Mon-Fri 06:00-22:00', timeZone: 'UTC' })
    const none = parsePolicy('/p/agent-a.yaml', policyYaml('agent-a'))
    expect('policy' in none && none.policy.hours === undefined && none.policy.grants.get('https://api.test')?.hours === undefined).toBe(true)
  })

  it.each([
    ['a grant’s unknown zone', grantWith('    hours: Mon-Fri 09:00-17:00\n    timezone: Europe/Atlantis'), 'grants.0.timezone', 'timezone:', 15],
    ['a grant’s malformed hours', grantWith('    hours: 9-5'), 'grants.0.hours', 'hours:', 12],
    ['a grant’s time range ending before it starts', grantWith('    hours: Mon 18:00-08:00'), 'grants.0.hours', 'hours:', 12],
  ])('%s: file, line and column of the value, as any other issue', async (_name, grants, field, needle, column) => {
    const text = policyYaml('agent-a', { grants })
    const file = await write('agent-a.yaml', text)
    const [issue, ...more] = issuesOf(await loadPolicies(dir))
    expect(more).toEqual([])
    expect(issue).toMatchObject({ file, field, line: lineOf(text, needle), column })
    expect(formatIssue(issue!)).toMatch(new RegExp(`^${file}:${lineOf(text, needle)}:${column}: ${field.replace(/\./g, '\\.')}: must `))
  })

  it('the policy’s and the rule’s malformed hours or zone, each at its value', async () => {
    const text = policyYaml('agent-a', {
      extra: 'hours: weekdays\ntimezone: CEST\nanomalies:\n  outside_hours:\n    hours: Mon-Fri 8-18\n    timezone: Mars/Olympus',
    })
    const file = await write('agent-a.yaml', text)
    const issues = issuesOf(await loadPolicies(dir))
    expect(issues.map((i) => [i.field, i.line, i.column])).toEqual(
      expect.arrayContaining([
        ['hours', lineOf(text, 'hours: weekdays'), 8],
        ['timezone', lineOf(text, 'timezone: CEST'), 11],
        ['anomalies.outside_hours.hours', lineOf(text, 'Mon-Fri 8-18'), 12],
        ['anomalies.outside_hours.timezone', lineOf(text, 'Mars/Olympus'), 15],
      ]),
    )
    expect(issues.every((i) => i.file === file)).toBe(true)
  })

  describe('the warning for hours that now restrict issuance', () => {
    const warningsOf = (r: LoadResult) => {
      if (!r.ok) throw new Error(JSON.stringify(r.issues))
      return r.warnings
    }

    it('warns once, at the policy’s hours, when the outside_hours rule (the policy’s or the config’s) borrows them', async () => {
      const text = policyYaml('agent-a', { extra: 'hours: Mon-Fri 08:00-18:00\nanomalies:\n  outside_hours: { action: quarantine }' })
      const file = await write('agent-a.yaml', text)
      await write('agent-b.yaml', policyYaml('agent-b', { extra: 'hours: Mon-Fri 08:00-18:00' }))
      const [warning, ...more] = warningsOf(await loadPolicies(dir))
      expect(more).toEqual([])
      expect(warning).toMatchObject({ file, field: 'hours', line: lineOf(text, 'hours:') })
      expect(formatIssue(warning!)).not.toContain('\n')
      // The config's rule applies to agent-b too.
      const both = warningsOf(await loadPolicies(dir, { anomalyRules: { outside_hours: { action: 'alert' } } }))
      expect(both.map((w) => w.file.endsWith('agent-b.yaml') || w.file === file)).toEqual([true, true])
    })

    it('is quiet when the rule has hours of its own, is off, applies to no one, or the policy has no hours', async () => {
      await write('own.yaml', policyYaml('own', { extra: 'hours: Mon-Fri 08:00-18:00\nanomalies:\n  outside_hours: { hours: Mon-Sun 06:00-23:00 }' }))
      await write('off.yaml', policyYaml('off', { extra: 'hours: Mon-Fri 08:00-18:00\nanomalies:\n  outside_hours: { action: off }' }))
      await write('plain.yaml', policyYaml('plain', { extra: 'hours: Mon-Fri 08:00-18:00' }))
      await write('rule-only.yaml', policyYaml('rule-only', { extra: 'anomalies:\n  outside_hours: { hours: Mon-Fri 08:00-18:00 }' }))
      expect(warningsOf(await loadPolicies(dir))).toEqual([])
      const withConfig = warningsOf(await loadPolicies(dir, { anomalyRules: { outside_hours: {} } }))
      expect(withConfig.map((w) => w.file)).toEqual([join(dir, 'plain.yaml')])
    })

    it('openPolicyDir logs it as one line naming the file at the load, and again at each reload', async () => {
      const text = policyYaml('agent-a', { extra: 'hours: Mon-Fri 08:00-18:00' })
      const file = await write('agent-a.yaml', text)
      const warn = vi.fn()
      const logger = { info: vi.fn(), warn, error: vi.fn() } as unknown as Parameters<typeof openPolicyDir>[1]
      const { store: s } = await openPolicyDir(dir, logger, { anomalyRules: { outside_hours: { action: 'alert' } }, pollMs: 60_000, debounceMs: 60_000 })
      try {
        expect(warn).toHaveBeenCalledTimes(1)
        const [fields, line] = warn.mock.calls[0] as [Record<string, unknown>, string]
        expect(fields).toEqual({ file })
        expect(line).toBe(`${file}:${lineOf(text, 'hours:')}:8: hours: ${HOURS_NOW_RESTRICT}`)
        await s.reload()
        expect(warn).toHaveBeenCalledTimes(2)
      } finally {
        s.close()
      }
    })
  })
})
