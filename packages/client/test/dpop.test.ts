/**
 * The client's DPoP proofs (RFC 9449) as a server receives them: a local
 * HTTP server on 127.0.0.1 plays the broker's token endpoint and a resource
 * server, and judges every proof with `verifyDpopProof` of
 * @mandate/verifier/dpop, the same checks the broker makes. What it answers
 * is set per test (a nonce refusal, a Bearer token, a token bound to another
 * key), so each rule of the client is seen against the answer that calls
 * for it. The broker itself is in test/integration/client-dpop.test.ts.
 */
import type { webcrypto } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { clientSecret, createClient, MandateClientError, type ClientOptions, type MandateToken } from '@mandate/client'
import { accessTokenHash, createDpopNonces, DpopError, verifyDpopProof, type DpopNonces, type DpopProof } from '@mandate/verifier/dpop'
import { generateKeyPair } from 'jose'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

const AGENT = 'dpop-agent'
const SUBAGENT = 'dpop-subagent'
const USER_TOKEN = 'user-token-of-alice'

/** A JWT-shaped access token naming `jkt` as its key (unsigned: the client reads `cnf.jkt` only to compare it with its own). */
function accessToken(jkt: string | undefined, extra: Record<string, unknown> = {}): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')
  return `${part({ alg: 'ES256', typ: 'at+jwt' })}.${part({ sub: 'alice', ...(jkt === undefined ? {} : { cnf: { jkt } }), ...extra })}.c2ln`
}

interface Seen {
  readonly form: URLSearchParams
  /** The DPoP header's proof as verified; undefined when none came. */
  readonly proof: DpopProof | undefined
  readonly rawProof: string | undefined
  /** The refusal the proof earned, when it did. */
  readonly refusal: DpopError | undefined
}

describe('@mandate/client DPoP proofs, as a server checks them', () => {
  let server: ServerType
  let origin: string
  let tokenEndpoint: string
  /** Token requests as received. */
  let seen: Seen[] = []
  /** Resource requests as received: the Authorization header, the proof's check, the body. */
  let rsSeen: { authorization: string | null; proof: DpopProof | undefined; refusal: DpopError | undefined; body: string }[] = []
  /** When set, the token endpoint requires its nonces in proofs. */
  let nonces: DpopNonces | undefined
  /** When set, the resource server requires its nonces in proofs. */
  let rsNonces: DpopNonces | undefined
  /** How the token endpoint answers a request it accepts; default: a token bound to the proof's key, DPoP when a proof came. */
  let answer: ((s: Seen) => Response) | undefined
  /** 503s the token endpoint answers before checking a request, and the forms it answered so. */
  let unavailable = 0
  let unavailableForms: URLSearchParams[] = []

  const json = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers } })

  const now = () => Math.floor(Date.now() / 1000)

  async function check(proof: string | null, method: string, url: string, extra: { accessToken?: string; nonces?: DpopNonces; boundJkt?: string }) {
    if (proof === null) return { proof: undefined, refusal: undefined }
    try {
      return { proof: await verifyDpopProof(proof, { method, url, now: now(), ...extra }), refusal: undefined }
    } catch (err) {
      if (err instanceof DpopError) return { proof: undefined, refusal: err }
      throw err
    }
  }

  async function tokenEndpointAnswer(req: Request): Promise<Response> {
    if (unavailable > 0) {
      unavailable--
      unavailableForms.push(new URLSearchParams(await req.text()))
      return json({ error: 'temporarily_unavailable' }, 503, { 'retry-after': '0' })
    }
    const form = new URLSearchParams(await req.text())
    const rawProof = req.headers.get('dpop') ?? undefined
    const { proof, refusal } = await check(req.headers.get('dpop'), 'POST', tokenEndpoint, nonces === undefined ? {} : { nonces })
    const s: Seen = { form, proof, rawProof, refusal }
    seen.push(s)
    const nonceHeader: Record<string, string> = nonces === undefined ? {} : { 'dpop-nonce': await nonces.current() }
    if (refusal !== undefined) return json({ error: refusal.code, error_description: refusal.message }, 400, nonceHeader)
    if (answer !== undefined) return answer(s)
    const body = {
      access_token: accessToken(proof?.jkt, { jti: crypto.randomUUID() }),
      token_type: proof === undefined ? 'Bearer' : 'DPoP',
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      expires_in: 300,
    }
    return json(body, 200, nonceHeader)
  }

  async function resourceAnswer(req: Request): Promise<Response> {
    const authorization = req.headers.get('authorization')
    const token = authorization?.replace(/^(DPoP|Bearer) /, '') ?? ''
    const { proof, refusal } = await check(req.headers.get('dpop'), req.method, req.url, {
      accessToken: token,
      ...(rsNonces === undefined ? {} : { nonces: rsNonces }),
    })
    rsSeen.push({ authorization, proof, refusal, body: await req.text() })
    if (refusal?.code === 'use_dpop_nonce') {
      return new Response(null, {
        status: 401,
        headers: { 'www-authenticate': 'DPoP error="use_dpop_nonce", algs="ES256"', 'dpop-nonce': await rsNonces!.current() },
      })
    }
    return new Response(refusal === undefined ? 'ok' : 'refused', { status: refusal === undefined ? 200 : 401 })
  }

  beforeAll(async () => {
    server = serve({
      hostname: '127.0.0.1',
      port: 0,
      fetch: (req) => {
        const path = new URL(req.url).pathname
        if (path === '/.well-known/oauth-authorization-server') {
          return json({
            issuer: origin,
            token_endpoint: tokenEndpoint,
            backchannel_authentication_endpoint: `${origin}/bc-authorize`,
            backchannel_token_delivery_modes_supported: ['poll'],
            dpop_signing_alg_values_supported: ['ES256', 'EdDSA'],
          })
        }
        if (path === '/bc-authorize') return json({ auth_req_id: 'req-1', expires_in: 60, interval: 1 })
        if (path === '/token') return tokenEndpointAnswer(req)
        if (path.startsWith('/api/')) return resourceAnswer(req)
        return new Response(null, { status: 404 })
      },
    })
    await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    tokenEndpoint = `${origin}/token`
  })

  afterAll(async () => {
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      ;(server as unknown as { closeAllConnections(): void }).closeAllConnections()
    })
  })

  beforeEach(() => {
    seen = []
    rsSeen = []
    nonces = undefined
    rsNonces = undefined
    answer = undefined
    unavailable = 0
    unavailableForms = []
  })

  const make = (clientId = AGENT, extra: Partial<ClientOptions> = {}) =>
    createClient({ issuer: origin, clientId, auth: clientSecret('s3cret'), dpop: true, retry: { baseDelayMs: 1 }, ...extra })

  const secret = () => crypto.getRandomValues(new Uint8Array(32))

  describe('token requests', () => {
    it('carry a proof of the client key for a POST to the token endpoint; the token comes back as DPoP, bound to that key', async () => {
      const client = make()
      const token = await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      expect(seen).toHaveLength(1)
      expect(seen[0]!.refusal).toBeUndefined()
      expect(seen[0]!.proof?.jkt).toBe(await client.dpopThumbprint())
      // A token request's proof has no ath: there is no access token yet (RFC 9449 §4.2).
      expect(JSON.parse(Buffer.from(seen[0]!.rawProof!.split('.')[1]!, 'base64url').toString())).not.toHaveProperty('ath')
      expect(token.tokenType).toBe('DPoP')
      // Cached as any token: the same again is no request.
      expect(await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })).toBe(token)
      expect(seen).toHaveLength(1)
    })

    it('one client is one key: its proofs all name the same key, another client’s another', async () => {
      const a = make()
      const b = make()
      await a.getToken({ subjectToken: USER_TOKEN, audience: 'https://one.example' })
      await a.getToken({ subjectToken: USER_TOKEN, audience: 'https://two.example' })
      await b.getToken({ subjectToken: USER_TOKEN, audience: 'https://one.example' })
      expect(seen[0]!.proof!.jkt).toBe(seen[1]!.proof!.jkt)
      expect(seen[2]!.proof!.jkt).not.toBe(seen[0]!.proof!.jkt)
      expect(new Set(seen.map((s) => s.proof!.jti)).size).toBe(3)
    })

    it('a dpop option that is no usable key pair is a TypeError at once', async () => {
      expect(() => createClient({ issuer: origin, clientId: AGENT, auth: clientSecret('s'), dpop: {} as webcrypto.CryptoKeyPair })).toThrow(TypeError)
      const { publicKey } = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
      expect(() => createClient({ issuer: origin, clientId: AGENT, auth: clientSecret('s'), dpop: { publicKey, privateKey: publicKey } })).toThrow(TypeError)
    })

    it('a key pair of the caller’s signs the proofs (Ed25519 here)', async () => {
      const pair = await generateKeyPair('Ed25519')
      const client = make(AGENT, { dpop: pair })
      const token = await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      expect(token.tokenType).toBe('DPoP')
      expect(seen[0]!.proof!.jkt).toBe(await client.dpopThumbprint())
    })

    it('use_dpop_nonce with a DPoP-Nonce: sent again at once with the nonce, once', async () => {
      nonces = createDpopNonces({ secrets: [secret()] })
      const client = make()
      const token = await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      expect(token.tokenType).toBe('DPoP')
      expect(seen.map((s) => s.refusal?.code ?? 'ok')).toEqual(['use_dpop_nonce', 'ok'])
      // The nonce is learned for good: the next request carries it from the start.
      await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://other.example' })
      expect(seen.map((s) => s.refusal?.code ?? 'ok')).toEqual(['use_dpop_nonce', 'ok', 'ok'])
    })

    it('a broker that keeps asking for a nonce gets two requests, then the refusal is thrown', async () => {
      // Each nonce it hands out is one it will not take: a fresh secret for every check.
      nonces = { current: () => createDpopNonces({ secrets: [secret()] }).current(), accepts: () => Promise.resolve(false) }
      const err = await make()
        .getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
        .catch((e: unknown) => e)
      expect(err).toBeInstanceOf(MandateClientError)
      expect((err as MandateClientError).error).toBe('use_dpop_nonce')
      expect(seen).toHaveLength(2)
    })

    it('the CIBA polls of waitForApproval carry proofs too, and answer use_dpop_nonce at once', async () => {
      nonces = createDpopNonces({ secrets: [secret()] })
      // Waits nothing: the test is about the polls, not their pace.
      const client = make(AGENT, { clock: { sleep: () => Promise.resolve() } })
      const pending = await client.requestApproval({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      const token = await client.waitForApproval(pending)
      expect(token.tokenType).toBe('DPoP')
      expect(seen.map((s) => [s.form.get('grant_type'), s.refusal?.code ?? 'ok'])).toEqual([
        ['urn:openid:params:grant-type:ciba', 'use_dpop_nonce'],
        ['urn:openid:params:grant-type:ciba', 'ok'],
      ])
      expect(seen[1]!.proof!.jkt).toBe(await client.dpopThumbprint())
    })

    it('a Bearer answer to a DPoP client is a Bearer token; a DPoP answer to a client without a key is invalid_response', async () => {
      answer = () =>
        json({ access_token: accessToken(undefined), token_type: 'Bearer', issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', expires_in: 60 })
      expect((await make().getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })).tokenType).toBe('Bearer')
      answer = () =>
        json({ access_token: accessToken('x'), token_type: 'DPoP', issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', expires_in: 60 })
      const plain = createClient({ issuer: origin, clientId: AGENT, auth: clientSecret('s3cret') })
      await expect(plain.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })).rejects.toMatchObject({ error: 'invalid_response' })
      expect(seen.at(-1)!.rawProof).toBeUndefined()
    })

    it('a DPoP token bound to a key other than the client’s is invalid_response', async () => {
      answer = () =>
        json({
          access_token: accessToken('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs'),
          token_type: 'DPoP',
          issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          expires_in: 60,
        })
      await expect(make().getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })).rejects.toMatchObject({ error: 'invalid_response' })
    })

    it('a client without a key sends no proof and has no thumbprint or delegation proof to give', async () => {
      const plain = createClient({ issuer: origin, clientId: AGENT, auth: clientSecret('s3cret') })
      expect((await plain.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })).tokenType).toBe('Bearer')
      expect(seen[0]!.rawProof).toBeUndefined()
      await expect(plain.dpopThumbprint()).rejects.toThrow(TypeError)
      await expect(plain.delegationProof('t')).rejects.toThrow(TypeError)
    })
  })

  describe('delegation', () => {
    it('the parent’s delegationProof is its key’s proof of the parent token for the token endpoint; the sub-agent sends it as subject_token_dpop and its own key in DPoP', async () => {
      const parent = make(AGENT)
      const child = make(SUBAGENT)
      const parentToken = await parent.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      const parentJkt = await parent.dpopThumbprint()
      const proof = await parent.delegationProof(parentToken.accessToken)
      // What the broker checks of it: POST, the token endpoint, ath of the parent token, the parent's key.
      const checked = await verifyDpopProof(proof, {
        method: 'POST',
        url: tokenEndpoint,
        now: now(),
        accessToken: parentToken.accessToken,
        boundJkt: parentJkt,
      })
      expect(checked.jkt).toBe(parentJkt)
      expect(JSON.parse(Buffer.from(proof.split('.')[1]!, 'base64url').toString())).toMatchObject({ ath: await accessTokenHash(parentToken.accessToken) })

      const token = await child.delegate({ parentToken: parentToken.accessToken, subjectTokenProof: proof, audience: 'https://api.example' })
      const hop = seen.at(-1)!
      expect(hop.form.get('subject_token')).toBe(parentToken.accessToken)
      expect(hop.form.get('subject_token_dpop')).toBe(proof)
      expect(hop.proof!.jkt).toBe(await child.dpopThumbprint())
      expect(hop.proof!.jkt).not.toBe(parentJkt)
      expect(token.tokenType).toBe('DPoP')
    })

    it('a parent token bound to the client’s own key is proved by the client itself, with a fresh proof on each attempt', async () => {
      const client = make()
      const parentToken = await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      unavailable = 1
      await client.delegate({ parentToken: parentToken.accessToken, actor: { clientId: SUBAGENT, auth: clientSecret('sub') }, audience: 'https://api.example' })
      const first = unavailableForms[0]!.get('subject_token_dpop')!
      const retried = seen.at(-1)!.form.get('subject_token_dpop')!
      const expected = { method: 'POST', url: tokenEndpoint, accessToken: parentToken.accessToken, boundJkt: await client.dpopThumbprint() }
      const [a, b] = [await verifyDpopProof(first, { ...expected, now: now() }), await verifyDpopProof(retried, { ...expected, now: now() })]
      expect(a.jti).not.toBe(b.jti)
    })

    it('a subject token bound to no key, or another key, gets no proof of the client’s', async () => {
      const client = make()
      await client.getToken({ subjectToken: accessToken('some-other-key'), audience: 'https://api.example' })
      await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://other.example' })
      expect(seen.map((s) => s.form.has('subject_token_dpop'))).toEqual([false, false])
    })

    it('the delegation proof carries the broker’s nonce once the client has learned it', async () => {
      nonces = createDpopNonces({ secrets: [secret()] })
      const parent = make()
      const parentToken = await parent.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      const proof = await parent.delegationProof(parentToken.accessToken)
      await expect(
        verifyDpopProof(proof, { method: 'POST', url: tokenEndpoint, now: now(), accessToken: parentToken.accessToken, nonces }),
      ).resolves.toBeDefined()
    })
  })

  describe('resource requests', () => {
    it('a DPoP token goes as Authorization: DPoP with a proof of the method, URI and token (ath); a nonce challenge is answered once, body and all', async () => {
      rsNonces = createDpopNonces({ secrets: [secret()] })
      const client = make()
      const token = await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      const response = await client.fetchWithToken(token, `${origin}/api/files?x=1`, { method: 'PUT', body: 'the body' })
      expect(response.status).toBe(200)
      expect(rsSeen.map((r) => r.refusal?.code ?? 'ok')).toEqual(['use_dpop_nonce', 'ok'])
      expect(rsSeen.map((r) => r.body)).toEqual(['the body', 'the body'])
      expect(rsSeen[1]!.authorization).toBe(`DPoP ${token.accessToken}`)
      expect(rsSeen[1]!.proof!.jkt).toBe(await client.dpopThumbprint())
      // The nonce is kept per origin: the next request needs no second try.
      await client.fetchWithToken(token, `${origin}/api/other`)
      expect(rsSeen).toHaveLength(3)
      expect(rsSeen[2]!.refusal).toBeUndefined()
    })

    it('a server that refuses the nonce again gets its 401 back after the one retry', async () => {
      rsNonces = { current: () => Promise.resolve('n-1'), accepts: () => Promise.resolve(false) }
      const client = make()
      const token = await client.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      expect((await client.fetchWithToken(token, `${origin}/api/x`)).status).toBe(401)
      expect(rsSeen).toHaveLength(2)
    })

    it('a Bearer token goes as Authorization: Bearer without a proof', async () => {
      const plain = createClient({ issuer: origin, clientId: AGENT, auth: clientSecret('s3cret') })
      const token = await plain.getToken({ subjectToken: USER_TOKEN, audience: 'https://api.example' })
      await plain.fetchWithToken(token, `${origin}/api/x`)
      expect(rsSeen[0]).toMatchObject({ authorization: `Bearer ${token.accessToken}`, proof: undefined, refusal: undefined })
      // A DPoP token is of no use to a client without its key: refused before anything is sent.
      const dpopToken: MandateToken = { ...token, tokenType: 'DPoP' }
      await expect(plain.fetchWithToken(dpopToken, `${origin}/api/x`)).rejects.toThrow(TypeError)
      expect(rsSeen).toHaveLength(1)
    })

    it('client.fetch sends each request’s DPoP token with a proof', async () => {
      rsNonces = createDpopNonces({ secrets: [secret()] })
      const client = make()
      const fetchAs = client.fetch(USER_TOKEN, { audienceFor: () => ({ audience: 'https://api.example' }) })
      expect((await fetchAs(`${origin}/api/a`, { method: 'POST', body: 'x' })).status).toBe(200)
      expect(rsSeen.map((r) => r.refusal?.code ?? 'ok')).toEqual(['use_dpop_nonce', 'ok'])
      expect(rsSeen[1]!.authorization).toMatch(/^DPoP /)
      expect(rsSeen[1]!.body).toBe('x')
    })
  })
})
