/**
 * RFC 9449 §4.3 proof checks, one refusal per check, on proofs made by
 * oauth4webapi's DPoP (a real client implementation) and by hand with jose
 * for the ones no honest client makes.
 */
import { randomBytes } from 'node:crypto'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import * as oauth from 'oauth4webapi'
import { describe, expect, it } from 'vitest'
import { accessTokenHash, createDpopNonces, DpopError, dpopHeaderValue, normalizedHtu, verifyDpopProof } from '../src/dpop.js'

const URL_ = 'https://rs.example/api/things'
const NOW = Math.floor(Date.now() / 1000)
const keys = await generateKeyPair('ES256', { extractable: true })
const publicJwk = await exportJWK(keys.publicKey)

async function proof(claims: Record<string, unknown>, header: Record<string, unknown> = {}, key = keys.privateKey): Promise<string> {
  return new SignJWT({ jti: crypto.randomUUID(), htm: 'GET', htu: URL_, iat: NOW, ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk, ...header })
    .sign(key)
}

/** The proof oauth4webapi sends with a protected-resource request, captured from the request it makes. */
async function oauth4webapiProof(method: string, url: string, accessToken: string, nonce?: string): Promise<string> {
  const dpop = oauth.DPoP({}, keys)
  if (nonce !== undefined) {
    // oauth4webapi learns a nonce from a DPoP-Nonce answer, as a client does.
    await oauth.protectedResourceRequest(accessToken, method, new URL(url), undefined, undefined, {
      DPoP: dpop,
      [oauth.customFetch]: async () => new Response(null, { status: 200, headers: { 'DPoP-Nonce': nonce } }),
    })
  }
  let sent: string | undefined
  await oauth.protectedResourceRequest(accessToken, method, new URL(url), undefined, undefined, {
    DPoP: dpop,
    [oauth.customFetch]: async (_url, init) => {
      sent = new Headers(init.headers).get('dpop') ?? undefined
      return new Response(null, { status: 200 })
    },
  })
  return sent!
}

async function refusal(promise: Promise<unknown>): Promise<DpopError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(DpopError)
  return err as DpopError
}

describe('a DPoP proof (RFC 9449 §4.3)', () => {
  it('from oauth4webapi passes with its access token, and answers the key thumbprint and the jti', async () => {
    const token = 'eyJhbGciOiJFUzI1NiJ9.e30.sig'
    const p = await oauth4webapiProof('POST', `${URL_}?q=1`, token)
    const ok = await verifyDpopProof(p, { method: 'POST', url: URL_, now: Math.floor(Date.now() / 1000), accessToken: token })
    expect(ok.jkt).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(ok.jti.length).toBeGreaterThan(0)
    expect(ok.rememberUntil).toBeGreaterThan(ok.iat)
    // Bound to this key: passes; bound to another: refused.
    await verifyDpopProof(p, { method: 'POST', url: URL_, now: Math.floor(Date.now() / 1000), accessToken: token, boundJkt: ok.jkt })
    const e = await refusal(verifyDpopProof(p, { method: 'POST', url: URL_, now: Math.floor(Date.now() / 1000), accessToken: token, boundJkt: 'x'.repeat(43) }))
    expect(e.code).toBe('invalid_dpop_proof')
  })

  it('refuses each broken check with invalid_dpop_proof and one message', async () => {
    const check = { method: 'GET', url: URL_, now: NOW }
    const other = await generateKeyPair('ES256', { extractable: true })
    const cases: Record<string, Promise<string>> = {
      'wrong typ': proof({}, { typ: 'JWT' }),
      'wrong htm': proof({ htm: 'POST' }),
      'wrong htu': proof({ htu: 'https://rs.example/api/other' }),
      'no jti': proof({ jti: undefined }),
      'iat too old': proof({ iat: NOW - 3600 }),
      'iat in the future': proof({ iat: NOW + 3600 }),
      'signed by another key': proof({}, {}, other.privateKey),
      'private key in jwk': (async () => proof({}, { jwk: { ...(await exportJWK(keys.privateKey)) } }))(),
    }
    const messages = new Set<string>()
    for (const [name, made] of Object.entries(cases)) {
      const e = await refusal(verifyDpopProof(await made, check))
      expect(e.code, name).toBe('invalid_dpop_proof')
      messages.add(e.message)
    }
    expect([...messages]).toEqual(['DPoP proof is invalid'])
    for (const junk of ['', 'a.b', 'a.b.c', 'x'.repeat(9000), 'e30.e30.']) {
      expect((await refusal(verifyDpopProof(junk, check))).code).toBe('invalid_dpop_proof')
    }
    // An HMAC "proof" (alg not asymmetric) and alg none.
    const hs = await new SignJWT({ jti: 'j', htm: 'GET', htu: URL_, iat: NOW })
      .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: publicJwk })
      .sign(randomBytes(32))
    expect((await refusal(verifyDpopProof(hs, check))).code).toBe('invalid_dpop_proof')
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'dpop+jwt', jwk: publicJwk })).toString('base64url')}.${Buffer.from(JSON.stringify({ jti: 'j', htm: 'GET', htu: URL_, iat: NOW })).toString('base64url')}.`
    expect((await refusal(verifyDpopProof(none, check))).code).toBe('invalid_dpop_proof')
  })

  it('refuses a jwk the runtime will not import for the alg (a curve or key type of another algorithm) as a bad proof, never an exception of its own', async () => {
    const check = { method: 'GET', url: URL_, now: NOW }
    const p384 = await generateKeyPair('ES384', { extractable: true })
    const ed = await generateKeyPair('EdDSA', { extractable: true })
    // WebCrypto's importKey throws a DataError (not one of jose's errors) for these.
    // The header says ES384 over the P-256 key: rewritten after signing (the key is refused before the signature is read).
    const swapped = async () => {
      const [, payload, signature] = (await proof({})).split('.') as [string, string, string]
      return `${Buffer.from(JSON.stringify({ alg: 'ES384', typ: 'dpop+jwt', jwk: publicJwk })).toString('base64url')}.${payload}.${signature}`
    }
    const cases: Record<string, Promise<string>> = {
      'ES384 named over a P-256 key': swapped(),
      'ES256 named over a P-384 key': proof({}, { alg: 'ES256', jwk: await exportJWK(p384.publicKey) }),
      'ES256 named over an Ed25519 key': proof({}, { alg: 'ES256', jwk: await exportJWK(ed.publicKey) }),
    }
    for (const [name, made] of Object.entries(cases)) {
      const e = await refusal(verifyDpopProof(await made, check))
      expect({ name, code: e.code, message: e.message }).toEqual({ name, code: 'invalid_dpop_proof', message: 'DPoP proof is invalid' })
    }
  })

  it('checks ath against the access token it comes with', async () => {
    const good = await proof({ ath: await accessTokenHash('token-a') })
    await verifyDpopProof(good, { method: 'GET', url: URL_, now: NOW, accessToken: 'token-a' })
    expect((await refusal(verifyDpopProof(good, { method: 'GET', url: URL_, now: NOW, accessToken: 'token-b' }))).code).toBe('invalid_dpop_proof')
    const without = await proof({})
    expect((await refusal(verifyDpopProof(without, { method: 'GET', url: URL_, now: NOW, accessToken: 'token-a' }))).code).toBe('invalid_dpop_proof')
  })

  it('compares htu without query or fragment, scheme and host case-folded, default port dropped', async () => {
    expect(normalizedHtu('HTTPS://RS.example:443/api/things?x=1#f')).toBe(URL_)
    expect(normalizedHtu('ftp://rs.example/')).toBeUndefined()
    const p = await proof({ htu: 'https://RS.EXAMPLE:443/api/things' })
    await verifyDpopProof(p, { method: 'GET', url: `${URL_}?page=2`, now: NOW })
  })

  it('asks for a nonce (use_dpop_nonce) without one or with a stale one, and takes one it made, from oauth4webapi too', async () => {
    let now = NOW
    const nonces = createDpopNonces({ secrets: [randomBytes(32)], windowSeconds: 60, now: () => now })
    const check = () => ({ method: 'GET', url: URL_, now, nonces })
    expect((await refusal(verifyDpopProof(await proof({}), check()))).code).toBe('use_dpop_nonce')
    expect((await refusal(verifyDpopProof(await proof({ nonce: 'made-up' }), check()))).code).toBe('use_dpop_nonce')
    const current = await nonces.current()
    await verifyDpopProof(await proof({ nonce: current }), check())
    const fromClient = await oauth4webapiProof('GET', URL_, 'tok', current)
    now = Math.floor(Date.now() / 1000)
    await verifyDpopProof(fromClient, { ...check(), accessToken: 'tok' })
    // Good for the window it was made in and the next, then stale.
    let t = 6_000 // the start of window 100 of 60 s
    const windows = createDpopNonces({ secrets: [randomBytes(32)], windowSeconds: 60, now: () => t })
    const made = await windows.current()
    t += 59
    expect(await windows.accepts(made)).toBe(true)
    t += 60
    expect(await windows.accepts(made)).toBe(true)
    t += 1
    expect(await windows.accepts(made)).toBe(false)
    // Another instance with the same secret accepts it; one with another does not.
    const secret = randomBytes(32)
    const a = createDpopNonces({ secrets: [secret], now: () => NOW })
    const b = createDpopNonces({ secrets: [randomBytes(32), secret], now: () => NOW })
    expect(await b.accepts(await a.current())).toBe(true)
    expect(await a.accepts(await b.current())).toBe(false)
    expect(() => createDpopNonces({ secrets: [randomBytes(8)] })).toThrow(TypeError)
  })

  it('reads one DPoP header, and refuses several', () => {
    expect(dpopHeaderValue(undefined)).toBeUndefined()
    expect(dpopHeaderValue(' a.b.c ')).toBe('a.b.c')
    expect(() => dpopHeaderValue('a.b.c, d.e.f')).toThrow(DpopError)
    expect(() => dpopHeaderValue(['a.b.c', 'd.e.f'])).toThrow(DpopError)
  })
})
