/**
 * Policies that authenticate by SPIFFE ID: the schema's spellings (an exact
 * `spiffe_id` or a `spiffe_id_prefix` ending in `/`), the same ID twice
 * refused at load, and which policy an SVID's `sub` finds (exact over
 * prefix, the longest prefix over a shorter one, whole segments only).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createPolicyStore, loadPolicies, parsePolicy } from '../../../src/policy/load.js'
import type { AgentPolicy } from '../../../src/policy/port.js'

const yaml = (agent: string, authentication: string) => `agent: ${agent}
owner: ops@example.com
purpose: spiffe policies under test
expires: 2030-01-01
authentication: ${authentication}
users: [{ issuer: https://idp.test }]
grants: [{ audience: https://api.test, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`

function parsed(agent: string, authentication: string): AgentPolicy {
  const r = parsePolicy(`/p/${agent}.yaml`, yaml(agent, authentication))
  if ('issues' in r) throw new Error(r.issues.map((i) => i.message).join('; '))
  return r.policy
}

function issues(authentication: string): string[] {
  const r = parsePolicy('/p/a.yaml', yaml('a', authentication))
  return 'issues' in r ? r.issues.map((i) => `${i.field}: ${i.message}`) : []
}

describe('spiffe authentication in a policy', () => {
  it('compiles an exact ID and a prefix', () => {
    expect(parsed('a', '{ method: spiffe, spiffe_id: "spiffe://example.org/ns/prod/sa/a" }').authentication).toEqual({
      method: 'spiffe',
      spiffeId: 'spiffe://example.org/ns/prod/sa/a',
      prefix: false,
    })
    expect(parsed('a', '{ method: spiffe, spiffe_id_prefix: "spiffe://example.org/ns/prod/" }').authentication).toEqual({
      method: 'spiffe',
      spiffeId: 'spiffe://example.org/ns/prod/',
      prefix: true,
    })
  })

  it.each([
    ['an ID that is not one', '{ method: spiffe, spiffe_id: "spiffe://Example.org/a" }'],
    ['an ID with ..', '{ method: spiffe, spiffe_id: "spiffe://example.org/a/../b" }'],
    ['an ID with a port', '{ method: spiffe, spiffe_id: "spiffe://example.org:443/a" }'],
    ['a prefix without its trailing /', '{ method: spiffe, spiffe_id_prefix: "spiffe://example.org/ns/prod" }'],
    ['both spellings', '{ method: spiffe, spiffe_id: "spiffe://example.org/a", spiffe_id_prefix: "spiffe://example.org/" }'],
    ['neither', '{ method: spiffe }'],
  ])('refuses %s', (_why, authentication) => {
    expect(issues(authentication)).not.toEqual([])
  })
})

describe('bySpiffeId', () => {
  const store = createPolicyStore([
    parsed('exact', '{ method: spiffe, spiffe_id: "spiffe://td/ns/prod/sa/special" }'),
    parsed('prod', '{ method: spiffe, spiffe_id_prefix: "spiffe://td/ns/prod/" }'),
    parsed('domain', '{ method: spiffe, spiffe_id_prefix: "spiffe://td/" }'),
    parsed('bill', '{ method: spiffe, spiffe_id_prefix: "spiffe://other/sa/bill/" }'),
  ])
  const agent = (id: string) => store.bySpiffeId(id)?.agent

  it('takes an exact ID over any prefix, and the longest prefix over a shorter one', () => {
    expect(agent('spiffe://td/ns/prod/sa/special')).toBe('exact')
    expect(agent('spiffe://td/ns/prod/sa/other')).toBe('prod')
    expect(agent('spiffe://td/ns/dev/sa/other')).toBe('domain')
  })

  it('matches whole segments only, and never a prefix itself or a non-ID', () => {
    expect(agent('spiffe://other/sa/bill/worker')).toBe('bill')
    expect(agent('spiffe://other/sa/billing')).toBeUndefined()
    expect(agent('spiffe://other/sa/bill')).toBeUndefined()
    expect(agent('spiffe://td/ns/prod/')).toBeUndefined()
    expect(agent('spiffe://td/ns/../prod/sa/x')).toBeUndefined()
    expect(agent('spiffe://elsewhere/ns/prod/sa/special')).toBeUndefined()
  })
})

describe('loading SPIFFE policies', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-spiffe-policies-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses two policies with the same ID or the same prefix, and allows nested prefixes', async () => {
    await writeFile(join(dir, 'a.yaml'), yaml('a', '{ method: spiffe, spiffe_id: "spiffe://td/x" }'))
    await writeFile(join(dir, 'b.yaml'), yaml('b', '{ method: spiffe, spiffe_id: "spiffe://td/x" }'))
    await writeFile(join(dir, 'c.yaml'), yaml('c', '{ method: spiffe, spiffe_id_prefix: "spiffe://td/" }'))
    await writeFile(join(dir, 'd.yaml'), yaml('d', '{ method: spiffe, spiffe_id_prefix: "spiffe://td/" }'))
    await writeFile(join(dir, 'e.yaml'), yaml('e', '{ method: spiffe, spiffe_id_prefix: "spiffe://td/ns/" }'))
    const r = await loadPolicies(dir)
    expect(r.ok).toBe(false)
    const messages = r.ok ? [] : r.issues.map((i) => `${i.file.slice(dir.length + 1)}: ${i.message}`)
    expect(messages).toEqual([`b.yaml: same SPIFFE ID as ${join(dir, 'a.yaml')}`, `d.yaml: same SPIFFE ID as ${join(dir, 'c.yaml')}`])
  })
})
