/**
 * Signing-key rotation: a key in the keys file signs only from its
 * `mandate_activates_at`; every key in the file is published at once; the
 * key ring follows the file and switches at the activation second.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { decodeProtectedHeader, type JWK } from 'jose'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createLogger } from '../../../src/telemetry/log.js'
import { ACTIVATES_AT, generateSigningJwk, openSigningKeys, signingKeysFromJwks, type SigningKey, type SigningKeyRing } from '../../../src/tokens/keys.js'
import { createTokenMinter } from '../../../src/tokens/mint.js'

const T0 = 1_900_000_000 // epoch seconds
/** `k` with Mandate's activation member (any value: some tests give bad ones). */
const at = (k: JWK, t: unknown): JWK => ({ ...k, [ACTIVATES_AT]: t }) as JWK
let a: JWK
let b: JWK
let c: JWK
beforeAll(async () => {
  ;[a, b, c] = await Promise.all([generateSigningJwk(), generateSigningJwk(), generateSigningJwk()])
})

describe('signingKeysFromJwks: which key signs', () => {
  it('the first key when none names an activation (files from before rotation)', async () => {
    const keys = await signingKeysFromJwks({ keys: [a, b] }, T0)
    expect(keys.current.kid).toBe(a.kid)
    expect(keys.jwks.keys.map((k) => k.kid)).toEqual([a.kid, b.kid])
  })

  it('the key activated last among those already active; a pending key is published but does not sign', async () => {
    const keys = await signingKeysFromJwks({ keys: [a, at(b, T0 - 10), at(c, T0 + 10)] }, T0)
    expect(keys.current.kid).toBe(b.kid)
    expect(keys.jwks.keys.map((k) => k.kid)).toEqual([a.kid, b.kid, c.kid])
    expect((await signingKeysFromJwks({ keys: [a, at(b, T0 - 10), at(c, T0 + 10)] }, T0 + 10)).current.kid).toBe(c.kid)
  })

  it('publishes no private member and no activation member', async () => {
    const keys = await signingKeysFromJwks({ keys: [at(a, T0)] }, T0)
    expect(Object.keys(keys.jwks.keys[0]!).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'])
  })

  it('refuses a set in which no key is active yet, and an activation that is not epoch seconds', async () => {
    await expect(signingKeysFromJwks({ keys: [at(a, T0 + 1)] }, T0)).rejects.toThrow(/no signing key is active yet/)
    await expect(signingKeysFromJwks({ keys: [at(a, '2030-01-01')] }, T0)).rejects.toThrow(/epoch seconds/)
    await expect(signingKeysFromJwks({ keys: [at(a, 1.5)] }, T0)).rejects.toThrow(/epoch seconds/)
  })
})

describe('openSigningKeys: the keys file, followed', () => {
  let dir: string
  let file: string
  let now: number
  let lines: Record<string, unknown>[]
  let ring: SigningKeyRing | undefined
  const switches: [string, string][] = []
  const logger = () =>
    createLogger(
      'debug',
      new Writable({
        write(chunk, _e, cb) {
          for (const l of String(chunk).split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>)
          cb()
        },
      }),
    )
  const open = async (pollMs = 60_000) => {
    ring = await openSigningKeys(file, {
      generateIfMissing: false,
      clock: () => now * 1000,
      logger: logger(),
      pollMs,
    })
    ring.onSwitch((k: SigningKey, p: SigningKey) => void switches.push([p.kid, k.kid]))
    return ring
  }
  const write = (keys: JWK[]) => writeFile(file, JSON.stringify({ keys }), { mode: 0o600 })

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-keys-'))
    file = join(dir, 'keys.json')
    now = T0
    lines = []
    switches.length = 0
  })
  afterEach(async () => {
    ring?.close()
    ring = undefined
    await rm(dir, { recursive: true, force: true })
  })

  it('publishes a rotated-in key at the reload, signs with it from its activation second, and says so once', async () => {
    await write([a])
    const keys = await open()
    const mint = createTokenMinter(keys)
    const kidOf = async () => decodeProtectedHeader(await mint.mint({ sub: 'x' } as never)).kid

    await write([a, at(b, T0 + 600)])
    expect(await keys.reload()).toBe(true)
    expect(keys.jwks.keys.map((k) => k.kid)).toEqual([a.kid, b.kid])
    expect(keys.byKid(b.kid!)).toBeDefined()
    expect(await kidOf()).toBe(a.kid)

    now = T0 + 599
    expect(await kidOf()).toBe(a.kid)
    now = T0 + 600
    expect(await kidOf()).toBe(b.kid)
    expect(keys.current.kid).toBe(b.kid)
    expect(switches).toEqual([[a.kid, b.kid]])
    expect(lines.filter((l) => l['msg'] === 'signing with a new key')).toHaveLength(1)
    // The old key still verifies (tokens it signed live on) until it leaves the file.
    expect(keys.byKid(a.kid!)).toBeDefined()
    await write([at(b, T0 + 600)])
    await keys.reload()
    expect(keys.jwks.keys.map((k) => k.kid)).toEqual([b.kid])
    expect(keys.byKid(a.kid!)).toBeUndefined()
  })

  it('signs with the reloaded material when a key is replaced under the same kid', async () => {
    await write([a])
    const keys = await open()
    const mint = createTokenMinter(keys)
    const replaced = { ...c, kid: a.kid! }
    await write([replaced])
    expect(await keys.reload()).toBe(true)
    const token = await mint.mint({ sub: 'x' } as never)
    const { verify } = await import('node:crypto')
    const [h, p, sig] = token.split('.')
    const ok = verify('sha256', Buffer.from(`${h!}.${p!}`), { key: keys.byKid(a.kid!)!.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig!, 'base64url'))
    expect(ok).toBe(true)
    expect(keys.current.publicJwk.x).toBe(c.x)
    expect(switches).toEqual([])
  })

  it('keeps the last good set when the file is broken, or holds no key active yet', async () => {
    await write([a])
    const keys = await open()
    await writeFile(file, '{"keys": [')
    expect(await keys.reload()).toBe(false)
    await write([at(c, T0 + 60)])
    expect(await keys.reload()).toBe(false)
    expect(keys.current.kid).toBe(a.kid)
    expect(keys.jwks.keys.map((k) => k.kid)).toEqual([a.kid])
    const errors = lines.filter((l) => l['msg'] === 'signing keys not reloaded; the last good set stays')
    expect(errors).toHaveLength(2)
    expect(JSON.stringify(errors)).not.toContain(String(c.d))
  })

  it('notices a changed file by itself (polling, as a Kubernetes Secret is swapped)', async () => {
    await write([a])
    const keys = await open(50)
    await new Promise((r) => setTimeout(r, 100))
    await write([a, at(b, T0 + 600)])
    const deadline = Date.now() + 5_000
    while (keys.jwks.keys.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25))
    expect(keys.jwks.keys.map((k) => k.kid)).toEqual([a.kid, b.kid])
    expect(lines.some((l) => l['msg'] === 'signing keys reloaded')).toBe(true)
  })
})
