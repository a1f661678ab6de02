/**
 * Agent credentials, unit by unit: the secret-list compare (every slot, no
 * early exit, the filler never matching), the age rules and their
 * boundaries, the inventory summary, the key thumbprint (RFC 7638's own
 * example), the ledger in memory, and what the policy schema accepts for
 * `secret_sha256`, `jwks_uri` and `max_credential_age`.
 */
import { createPublicKey, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { credentialAgeState, parseAgeDuration, summarizeCredentials, type CredentialAgeRule, type SeenCredential } from '../../../src/core/credential-age.js'
import { parsePolicy } from '../../../src/policy/load.js'
import { hashClientSecret, matchesAnySecret } from '../../../src/tokens/client-auth.js'
import { createCredentialLedger, keyThumbprint } from '../../../src/tokens/credential-ledger.js'

const DAY = 86_400
const RULE: CredentialAgeRule = { maxAge: 90 * DAY, warnBefore: 14 * DAY }

describe('matchesAnySecret', () => {
  const secrets = ['a', 'b', 'c', 'd', 'e'].map((s) => hashClientSecret(`secret-${s}`))
  const filler = randomBytes(32)

  it('matches a secret in any slot of the list, and nothing else', () => {
    for (let i = 0; i < secrets.length; i++) expect(matchesAnySecret(secrets[i]!, secrets, filler)).toBe(true)
    expect(matchesAnySecret(hashClientSecret('secret-f'), secrets, filler)).toBe(false)
    expect(matchesAnySecret(secrets[4]!, secrets.slice(0, 4), filler)).toBe(false)
    expect(matchesAnySecret(secrets[0]!, secrets.slice(0, 1), filler)).toBe(true)
  })

  it('never counts the filler the empty slots are compared against', () => {
    expect(matchesAnySecret(filler, [], filler)).toBe(false)
    expect(matchesAnySecret(filler, secrets.slice(0, 2), filler)).toBe(false)
  })

  it('compares every slot whatever matched: a hash of the wrong length throws at the last slot too', () => {
    // timingSafeEqual throws on a length mismatch: only a compare that reaches slot 4 sees this one.
    const list = [...secrets.slice(0, 4), Buffer.alloc(16)]
    expect(() => matchesAnySecret(secrets[0]!, list, filler)).toThrow(RangeError)
  })
})

describe('credential age', () => {
  it('parses whole days and hours, and nothing else', () => {
    expect(parseAgeDuration('90d')).toBe(90 * DAY)
    expect(parseAgeDuration('36h')).toBe(36 * 3600)
    for (const bad of ['0d', '90', 'd', '1.5d', '90 d', '90m', '-1d', '123456d']) expect(parseAgeDuration(bad)).toBeUndefined()
  })

  it('is fresh, then rotate_soon from max − warn, then too_old from max on', () => {
    const first = 1_000_000
    expect(credentialAgeState(first, first, RULE)).toBe('fresh')
    expect(credentialAgeState(first, first + 76 * DAY - 1, RULE)).toBe('fresh')
    expect(credentialAgeState(first, first + 76 * DAY, RULE)).toBe('rotate_soon')
    expect(credentialAgeState(first, first + 90 * DAY - 1, RULE)).toBe('rotate_soon')
    expect(credentialAgeState(first, first + 90 * DAY, RULE)).toBe('too_old')
  })

  it('summarizes from the credentials the policy still accepts: the worst state, the oldest age', () => {
    const now = 200 * DAY
    const seen: SeenCredential[] = [
      { kind: 'secret', id: 'retired', firstSeen: now - 150 * DAY, lastSeen: now - 100 * DAY },
      { kind: 'secret', id: 'old', firstSeen: now - 80 * DAY, lastSeen: now - DAY },
      { kind: 'secret', id: 'new', firstSeen: now - 2 * DAY, lastSeen: now - 60 },
    ]
    const s = summarizeCredentials('secret', (c) => c.id !== 'retired', seen, now, RULE)
    expect(s).toMatchObject({ kind: 'secret', state: 'rotate_soon', oldestAgeDays: 80, lastUsed: now - 60, maxAge: 90 * DAY })
    expect(s.suggestedFix).toMatch(/private_key_jwt/)
    expect(s.credentials.map((c) => [c.id, c.state, c.inPolicy])).toEqual([
      ['new', 'fresh', true],
      ['old', 'rotate_soon', true],
      ['retired', 'too_old', false],
    ])
    expect(summarizeCredentials('key', undefined, [], now, RULE)).toMatchObject({ state: 'unused', oldestAgeDays: undefined, suggestedFix: undefined })
  })
})

describe('keyThumbprint', () => {
  it('is RFC 7638 §3.1’s example thumbprint', () => {
    const n =
      '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw'
    const key = createPublicKey({ key: { kty: 'RSA', n, e: 'AQAB' }, format: 'jwk' })
    expect(keyThumbprint(key)).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs')
    expect(keyThumbprint(key)).toBe(keyThumbprint(key))
  })
})

describe('the credential ledger in memory', () => {
  it('ages a credential from its first use, warns once a day while rotate_soon, and refuses from max on', async () => {
    const lines: { msg: string }[] = []
    const logger = { warn: (_o: unknown, msg: string) => lines.push({ msg }), info: () => {} } as never
    const ledger = createCredentialLedger({ store: undefined, flushIntervalMs: 60_000, logger })
    const cred = { kind: 'secret' as const, id: 'f'.repeat(64) }
    expect(ledger.use('a', cred, 1_000, RULE)).toEqual({ firstSeen: 1_000, state: 'fresh' })
    expect(ledger.use('a', cred, 1_000 + 80 * DAY, RULE)).toEqual({ firstSeen: 1_000, state: 'rotate_soon' })
    ledger.use('a', cred, 1_000 + 80 * DAY + 60, RULE)
    expect(lines).toHaveLength(1)
    ledger.use('a', cred, 1_000 + 81 * DAY, RULE)
    expect(lines).toHaveLength(2)
    expect(ledger.use('a', cred, 1_000 + 90 * DAY, RULE).state).toBe('too_old')
    // Another agent's use of the same secret is another credential.
    expect(ledger.use('b', cred, 1_000 + 90 * DAY, RULE)).toEqual({ firstSeen: 1_000 + 90 * DAY, state: 'fresh' })
    await ledger.close()
  })
})

describe('the policy schema', () => {
  const policy = (authentication: string, extra = '') =>
    parsePolicy(
      '/p/a.yaml',
      `agent: a
owner: o
purpose: p
expires: 2030-01-01
authentication: ${authentication}
users: [{ issuer: https://idp.test }]
grants: [{ audience: https://api.test, scopes: [read] }]
token_ttl: { default: 60, max: 60 }
${extra}`,
    )
  const hex = (n: number) => hashClientSecret(`s${n}`).toString('hex')
  const fields = (r: ReturnType<typeof policy>) => ('issues' in r ? r.issues.map((i) => `${i.field}: ${i.message}`) : [])

  it('takes one secret hash or a list of up to five distinct ones', () => {
    const one = policy(`{ method: client_secret_basic, secret_sha256: ${hex(1)} }`)
    expect('policy' in one && one.policy.authentication.method === 'client_secret_basic' && one.policy.authentication.secretHashes.length).toBe(1)
    const five = policy(`{ method: client_secret_basic, secret_sha256: [${[1, 2, 3, 4, 5].map(hex).join(', ')}] }`)
    expect('policy' in five && five.policy.authentication.method === 'client_secret_basic' && five.policy.authentication.secretHashes.length).toBe(5)
    expect(fields(policy(`{ method: client_secret_basic, secret_sha256: [${[1, 2, 3, 4, 5, 6].map(hex).join(', ')}] }`)).join()).toMatch(
      /authentication.secret_sha256/,
    )
    expect(fields(policy(`{ method: client_secret_basic, secret_sha256: [${hex(1)}, ${hex(1)}] }`)).join()).toMatch(/must not repeat a secret/)
    expect(fields(policy(`{ method: client_secret_basic, secret_sha256: [] }`))).not.toEqual([])
  })

  it('takes jwks or an https (or loopback http) jwks_uri, not both, not neither', () => {
    const remote = policy(`{ method: private_key_jwt, jwks_uri: 'https://agent.example/jwks.json' }`)
    expect('policy' in remote && remote.policy.authentication.method === 'private_key_jwt' && remote.policy.authentication.jwksUri).toBe(
      'https://agent.example/jwks.json',
    )
    expect('policy' in policy(`{ method: private_key_jwt, jwks_uri: 'http://127.0.0.1:8080/jwks' }`)).toBe(true)
    expect(fields(policy(`{ method: private_key_jwt, jwks_uri: 'http://agent.example/jwks.json' }`)).join()).toMatch(/must be https/)
    expect(fields(policy(`{ method: private_key_jwt, jwks_uri: 'https://agent.example/jwks#k' }`)).join()).toMatch(/without a fragment/)
    expect(fields(policy(`{ method: private_key_jwt }`)).join()).toMatch(/exactly one of jwks and jwks_uri/)
  })

  it('takes max_credential_age as a duration', () => {
    const p = policy(`{ method: client_secret_basic, secret_sha256: ${hex(1)} }`, 'max_credential_age: 30d\n')
    expect('policy' in p && p.policy.maxCredentialAge).toBe(30 * DAY)
    expect(fields(policy(`{ method: client_secret_basic, secret_sha256: ${hex(1)} }`, 'max_credential_age: 30m\n')).join()).toMatch(
      /max_credential_age: must be a duration/,
    )
  })
})
