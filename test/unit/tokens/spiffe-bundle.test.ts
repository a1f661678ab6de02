/**
 * SPIFFE bundles (SPIFFE Trust Domain and Bundle §4): only `jwt-svid` keys
 * with a `kid` verify SVIDs; a bundle file is read again when it changes and
 * after `spiffe_refresh_hint`; a bundle that cannot be read again stops
 * serving once it is past its refresh and the stale allowance: fail closed.
 */
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, type JWK } from 'jose'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { JwtError } from '../../../src/tokens/jws.js'
import { createSpiffeBundles, parseSpiffeBundle } from '../../../src/tokens/spiffe-bundle.js'

const LIMITS = { timeoutMs: 1000, maxBytes: 64 * 1024, maxKeys: 10, staleMaxAgeMs: 10_000 }

async function jwk(kid: string | undefined, use: string | undefined): Promise<JWK> {
  const { publicKey } = await generateKeyPair('ES256', { extractable: true })
  return { ...(await exportJWK(publicKey)), ...(kid === undefined ? {} : { kid }), ...(use === undefined ? {} : { use }) }
}

const code = (f: () => unknown) => {
  try {
    f()
  } catch (err) {
    if (err instanceof JwtError) return err.code
    throw err
  }
  return 'ok'
}

describe('parseSpiffeBundle', () => {
  it('keeps jwt-svid keys with a kid, skips x509-svid keys, and names what it leaves out', async () => {
    const keys = [await jwk('a', 'jwt-svid'), await jwk('x', 'x509-svid'), await jwk('b', undefined), await jwk(undefined, 'jwt-svid'), await jwk('s', 'sig')]
    const { bundle, ignored } = parseSpiffeBundle(JSON.stringify({ keys, spiffe_sequence: 7, spiffe_refresh_hint: 60 }), 10)
    expect(bundle.keys.map((k) => k.kid)).toEqual(['a'])
    expect(bundle.sequence).toBe(7)
    expect(bundle.refreshHint).toBe(60)
    expect(ignored).toEqual(['b: use is not jwt-svid', '(no kid): no kid', 's: use is not jwt-svid'])
  })

  it('refuses what is not a bundle', () => {
    expect(() => parseSpiffeBundle('nope', 10)).toThrow('not JSON')
    expect(() => parseSpiffeBundle('[]', 10)).toThrow('not a JSON object')
    expect(() => parseSpiffeBundle('{}', 10)).toThrow('no keys array')
  })
})

describe('createSpiffeBundles (file)', () => {
  let dir: string
  let now: number
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-spiffe-bundle-'))
    now = 1_000_000
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('serves the keys, rereads after the hint, and fails closed once the bundle is gone past the stale allowance', async () => {
    const file = join(dir, 'bundle.json')
    const a = await jwk('a', 'jwt-svid')
    await writeFile(file, JSON.stringify({ keys: [a], spiffe_refresh_hint: 5 }))
    const bundles = createSpiffeBundles([{ trustDomain: 'td', file, refreshSeconds: 300 }], LIMITS, () => now)
    expect(code(() => bundles.key('td', { alg: 'ES256', kid: 'a' }))).toBe('bundle_unavailable')
    await bundles.refreshIfDue()
    expect(code(() => bundles.key('td', { alg: 'ES256', kid: 'a' }))).toBe('ok')
    expect(code(() => bundles.key('td', { alg: 'ES256', kid: 'b' }))).toBe('unknown_kid')
    expect(code(() => bundles.key('td', { alg: 'RS256', kid: 'a' }))).toBe('unknown_kid')
    expect(code(() => bundles.key('other', { alg: 'ES256', kid: 'a' }))).toBe('trust_domain_not_trusted')
    expect(bundles.status()).toEqual([{ trustDomain: 'td', usable: true, keys: 1, fetchedAt: 1_000_000 }])

    await unlink(file)
    now += 6_000 // past the 5 s hint: a reread is due, and fails
    await bundles.refreshIfDue()
    expect(code(() => bundles.key('td', { alg: 'ES256', kid: 'a' }))).toBe('ok')
    expect(bundles.status()[0]).toMatchObject({ usable: true, lastFailure: expect.stringContaining('ENOENT') })
    now += 10_000 // past the hint and the stale allowance
    expect(code(() => bundles.key('td', { alg: 'ES256', kid: 'a' }))).toBe('bundle_unavailable')
    expect(bundles.status()[0]).toMatchObject({ usable: false })
  })

  it('rereads a file as soon as it changes', async () => {
    const file = join(dir, 'bundle.json')
    await writeFile(file, JSON.stringify({ keys: [await jwk('a', 'jwt-svid')] }))
    const bundles = createSpiffeBundles([{ trustDomain: 'td', file, refreshSeconds: 300 }], LIMITS, () => now)
    await bundles.refreshIfDue()
    await writeFile(file, JSON.stringify({ keys: [await jwk('rotated-key', 'jwt-svid')], spiffe_sequence: 2 }))
    await bundles.refreshIfDue()
    expect(code(() => bundles.key('td', { alg: 'ES256', kid: 'rotated-key' }))).toBe('ok')
    expect(code(() => bundles.key('td', { alg: 'ES256', kid: 'a' }))).toBe('unknown_kid')
    expect(bundles.status()[0]).toMatchObject({ sequence: 2 })
  })
})
