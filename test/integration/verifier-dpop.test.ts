/**
 * DPoP-bound tokens at a resource server (RFC 9449 §7): @mandate/verifier's
 * Express, Fastify and Hono adapters in real servers on 127.0.0.1, against a
 * real broker served over HTTP, asked by oauth4webapi's DPoP client (its own
 * proofs; a test changes one claim of a proof through its `modifyAssertion`
 * hook, never by building proofs itself). Tokens are signed with the broker's
 * own key and carry `cnf.jkt`, as the token endpoint mints them for a DPoP
 * client.
 *
 * Each server has two routes, each behind a verifier of its own:
 * - `/tickets`: Bearer and DPoP, `dpop.baseUrl` https://api.test (the
 *   client calls that URL; its fetch is sent to the loopback server, as a
 *   proxy would), no nonces;
 * - `/strict`: DPoP only, server nonces, no `baseUrl` (`htu` is the URL the
 *   framework builds from `Host`).
 *
 * One test per framework gets its token from the broker's token endpoint
 * instead, through oauth4webapi's DPoP client (a real exchange binding it);
 * at the end @mandate/client gets its own and answers the Hono adapter's
 * nonce challenge by itself.
 *
 * Every proof failure is 401 `invalid_dpop_proof` with one description and
 * one challenge; the reason, for logs, is checked through `authenticate`
 * directly (no framework) at the end.
 */
import { randomBytes } from 'node:crypto'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { serve } from '@hono/node-server'
import express from 'express'
import Fastify from 'fastify'
import { Hono } from 'hono'
import { calculateJwkThumbprint, exportJWK } from 'jose'
import * as oauth from 'oauth4webapi'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { clientSecret, createClient } from '@mandate/client'
import { createMemoryDpopReplayStore, createVerifier, DPOP_ALGORITHMS, type AuthenticateResult, type Verifier, type VerifierOptions } from '@mandate/verifier'
import * as expressAdapter from '@mandate/verifier/express'
import * as fastifyAdapter from '@mandate/verifier/fastify'
import * as honoAdapter from '@mandate/verifier/hono'
import { loadSigningKeys, type SigningKey } from '../../src/tokens/keys.js'
import {
  AUDIENCE,
  BROKER,
  GRANT_TYPE_TOKEN_EXCHANGE,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
  TOKEN_TYPE,
  USER_ISSUER,
  startTestBroker,
  type TestBroker,
} from '../support/broker.js'
import { brokerToken } from '../support/tokens.js'

const NAMES = { issuer: BROKER, userIssuer: USER_ISSUER, audience: AUDIENCE }

const PUBLIC = 'https://api.test'
const ALGS = DPOP_ALGORITHMS.join(' ')
const NONCE_SECRET = randomBytes(32)
/** Every invalid_dpop_proof answer, whatever failed: the RFC's code and nothing that says which check. */
const PROOF_CHALLENGE = `DPoP realm="${AUDIENCE}", error="invalid_dpop_proof", error_description="DPoP proof is invalid", algs="${ALGS}", Bearer realm="${AUDIENCE}"`
const PROOF_BODY = { error: 'invalid_dpop_proof', error_description: 'DPoP proof is invalid' }

interface Listening {
  readonly url: string
  stop(): Promise<void>
}

function stopServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

async function listening(server: Server): Promise<Listening> {
  if (!server.listening) await new Promise<void>((resolve) => server.once('listening', resolve))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, stop: () => stopServer(server) }
}

/** `/tickets` behind `both`, `/strict` behind `strict`, in each framework; both answer the token's `sub` and `cnf.jkt`. */
const frameworks: Record<string, (both: Verifier, strict: Verifier) => Promise<Listening>> = {
  express: (both, strict) => {
    const app = express()
    app.get('/tickets', expressAdapter.mandateAuth(both, { scopes: ['read'] }), (req, res) => res.json({ sub: req.mandate?.sub, jkt: req.mandate?.cnf?.jkt }))
    app.get('/strict', expressAdapter.mandateAuth(strict, { scopes: ['read'] }), (req, res) => res.json({ sub: req.mandate?.sub, jkt: req.mandate?.cnf?.jkt }))
    return listening(app.listen(0, '127.0.0.1'))
  },
  fastify: async (both, strict) => {
    const app = Fastify()
    app.get('/tickets', { onRequest: fastifyAdapter.mandateAuth(both, { scopes: ['read'] }) }, (r) => ({ sub: r.mandate?.sub, jkt: r.mandate?.cnf?.jkt }))
    app.get('/strict', { preHandler: fastifyAdapter.mandateAuth(strict, { scopes: ['read'] }) }, (r) => ({ sub: r.mandate?.sub, jkt: r.mandate?.cnf?.jkt }))
    await app.listen({ port: 0, host: '127.0.0.1' })
    return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, stop: () => app.close() }
  },
  hono: (both, strict) => {
    const app = new Hono<honoAdapter.MandateEnv>()
    app.get('/tickets', honoAdapter.mandateAuth(both, { scopes: ['read'] }), (c) => c.json({ sub: c.get('mandate').sub, jkt: c.get('mandate').cnf?.jkt }))
    app.get('/strict', honoAdapter.mandateAuth(strict, { scopes: ['read'] }), (c) => c.json({ sub: c.get('mandate').sub, jkt: c.get('mandate').cnf?.jkt }))
    return listening(serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server)
  },
}

/** The broker, served on loopback, its signing key, and the verifier options that reach it. */
interface Fixture {
  readonly b: TestBroker
  readonly broker: Listening
  readonly key: SigningKey
  /** Seconds to add to this machine's clock to read the broker's (fixed) test clock: oauth4webapi's `clockSkew`. */
  readonly skew: number
  options(extra: Partial<VerifierOptions>): VerifierOptions
}

async function startFixture(): Promise<Fixture> {
  const b = await startTestBroker({ logLevel: 'silent' })
  const broker = await listening(serve({ fetch: b.mandate.app.fetch, port: 0, hostname: '127.0.0.1' }) as Server)
  const key = (await loadSigningKeys(join(b.mandate.config.data_dir, 'signing-keys.json'), false)).current
  const started = performance.now()
  const base = b.now()
  const skew = base - Math.floor(Date.now() / 1000)
  return {
    b,
    broker,
    key,
    skew,
    options: (extra) => ({
      issuer: BROKER,
      audience: AUDIENCE,
      credentials: { clientId: RESOURCE_SERVERS.api, clientSecret: RS_SECRET },
      // The broker's fixed test clock, advancing in real time.
      clock: () => base * 1000 + (performance.now() - started),
      fetch: (input, init) => {
        const target = new URL(input instanceof Request ? input.url : String(input))
        return fetch(target.origin === BROKER ? new URL(`${target.pathname}${target.search}`, broker.url) : target, init)
      },
      ...extra,
    }),
  }
}

/** A token as the broker mints it for a DPoP client: `cnf.jkt` (RFC 9449 §6.1) unless `jkt` is null. */
function mint(f: Fixture, jkt: string | null, claims: Record<string, unknown> = {}): Promise<string> {
  return brokerToken(NAMES, f.key, f.b.now(), { ...(jkt === null ? {} : { cnf: { jkt } }), ...claims })
}

/** A DPoP key pair (oauth4webapi's) and its RFC 7638 thumbprint. */
async function dpopKey(): Promise<{ pair: KeyPair; jkt: string }> {
  const pair = await oauth.generateKeyPair('ES256')
  return { pair, jkt: await calculateJwkThumbprint(await exportJWK(pair.publicKey)) }
}

type KeyPair = Awaited<ReturnType<typeof oauth.generateKeyPair>>
/** What oauth4webapi hands its `customFetch`. */
type FetchInit = oauth.CustomFetchOptions<string, oauth.ProtectedResourceRequestBody>

/** A GET without a body, as fetch and `Request` take it. */
const asInit = (init: FetchInit): RequestInit => ({ method: init.method, headers: init.headers })

type Modify = (header: Record<string, unknown>, payload: Record<string, unknown>) => void

interface Sent {
  readonly res: Response
  /** The headers oauth4webapi sent (its proof among them). */
  readonly sent: Record<string, string>
}

/**
 * GET `url` as oauth4webapi's DPoP client does (`protectedResourceRequest`
 * with a `DPoP` handle), its fetch sent to `server`: the answer, challenged
 * or not, and what was sent.
 */
async function dpopGet(f: Fixture, server: string, url: string, token: string, handle: oauth.DPoPHandle): Promise<Sent> {
  let sent: Record<string, string> = {}
  const options: oauth.ProtectedResourceRequestOptions = {
    DPoP: handle,
    [oauth.allowInsecureRequests]: true,
    [oauth.customFetch]: (target: string, init: FetchInit) => {
      sent = { ...init.headers }
      const u = new URL(target)
      return fetch(`${server}${u.pathname}${u.search}`, asInit(init))
    },
  }
  try {
    const res = await oauth.protectedResourceRequest(token, 'GET', new URL(url), new Headers(), null, options)
    return { res, sent }
  } catch (err) {
    if (err instanceof oauth.WWWAuthenticateChallengeError) return { res: err.response, sent }
    throw err
  }
}

function handleOf(f: Fixture, pair: KeyPair, modify?: Modify): oauth.DPoPHandle {
  return oauth.DPoP({ [oauth.clockSkew]: f.skew }, pair, modify === undefined ? {} : { [oauth.modifyAssertion]: modify })
}

async function expectProofRefused(res: Response): Promise<void> {
  expect(res.status).toBe(401)
  expect(res.headers.get('www-authenticate')).toBe(PROOF_CHALLENGE)
  expect(res.headers.get('cache-control')).toBe('no-store')
  expect(await res.json()).toStrictEqual(PROOF_BODY)
}

describe.each(Object.keys(frameworks))('DPoP at the %s adapter, asked by oauth4webapi', (name) => {
  let f: Fixture
  let both: Verifier
  let strict: Verifier
  let api: Listening
  let key: { pair: KeyPair; jkt: string }

  beforeAll(async () => {
    f = await startFixture()
    both = createVerifier(f.options({ dpop: { baseUrl: PUBLIC } }))
    strict = createVerifier(f.options({ dpop: { required: true, nonceSecrets: [NONCE_SECRET] } }))
    await Promise.all([both.ready(), strict.ready()])
    api = await frameworks[name]!(both, strict)
    key = await dpopKey()
  })
  afterAll(async () => {
    await api?.stop()
    await both?.close()
    await strict?.close()
    await f?.broker.stop()
    await f?.b.close()
  })

  const get = (path: string, headers: Record<string, string>) => fetch(`${api.url}${path}`, { headers })

  it('a good proof for the public URL passes, and the handler sees the token bound to its key', async () => {
    const token = await mint(f, key.jkt)
    const { res, sent } = await dpopGet(f, api.url, `${PUBLIC}/tickets?page=2`, token, handleOf(f, key.pair))
    expect(sent['authorization']).toBe(`DPoP ${token}`)
    expect(res.status).toBe(200)
    expect(await res.json()).toStrictEqual({ sub: 'alice', jkt: key.jkt })
  })

  it('a real exchange: the token endpoint binds the token to oauth4webapi’s key, whose proofs pass here and no other key’s do', async () => {
    const as: oauth.AuthorizationServer = { issuer: BROKER, token_endpoint: `${BROKER}/oauth2/token` }
    const client: oauth.Client = { client_id: 'secret-agent' }
    const handle = handleOf(f, key.pair)
    const params = new URLSearchParams({ subject_token: await f.b.userToken(), subject_token_type: TOKEN_TYPE.accessToken, audience: AUDIENCE, scope: 'read' })
    const res = await oauth.genericTokenEndpointRequest(as, client, oauth.ClientSecretBasic(SECRET), GRANT_TYPE_TOKEN_EXCHANGE, params, {
      DPoP: handle,
      [oauth.customFetch]: async (url, init) => f.b.mandate.app.request(url, init),
    })
    const issued = await oauth.processGenericTokenEndpointResponse(as, client, res)
    expect(issued.token_type).toBe('dpop')
    const got = await dpopGet(f, api.url, `${PUBLIC}/tickets`, issued.access_token, handle)
    expect(got.res.status).toBe(200)
    expect(await got.res.json()).toStrictEqual({ sub: 'alice', jkt: key.jkt })
    await expectProofRefused((await dpopGet(f, api.url, `${PUBLIC}/tickets`, issued.access_token, handleOf(f, (await dpopKey()).pair))).res)
  })

  it.each<[string, Modify | 'other key']>([
    ['another method (htm)', (_h, p) => void (p['htm'] = 'POST')],
    ['another URL (htu)', (_h, p) => void (p['htu'] = `${PUBLIC}/other`)],
    ['another origin (htu)', (_h, p) => void (p['htu'] = 'https://elsewhere.test/tickets')],
    ['the hash of another token (ath)', (_h, p) => void (p['ath'] = 'x'.repeat(43))],
    ['an iat older than 60 s', (_h, p) => void (p['iat'] = (p['iat'] as number) - 120)],
    ['an iat in the future', (_h, p) => void (p['iat'] = (p['iat'] as number) + 120)],
    ['a key that is not the token’s cnf.jkt (a stolen token)', 'other key'],
  ])('refuses a proof with %s: 401 invalid_dpop_proof, the same answer', async (_case, modify) => {
    const token = await mint(f, key.jkt)
    const handle = modify === 'other key' ? handleOf(f, (await dpopKey()).pair) : handleOf(f, key.pair, modify)
    await expectProofRefused((await dpopGet(f, api.url, `${PUBLIC}/tickets`, token, handle)).res)
  })

  it('refuses a replayed proof, and a DPoP token without any proof, with the same answer', async () => {
    const token = await mint(f, key.jkt)
    const first = await dpopGet(f, api.url, `${PUBLIC}/tickets`, token, handleOf(f, key.pair))
    expect(first.res.status).toBe(200)
    await expectProofRefused(await get('/tickets', first.sent))
    await expectProofRefused(await get('/tickets', { authorization: `DPoP ${token}` }))
    // Two DPoP headers (RFC 9449 §4.3 item 1).
    await expectProofRefused(await get('/tickets', { authorization: `DPoP ${token}`, dpop: `${first.sent['dpop']!}, ${first.sent['dpop']!}` }))
  })

  it('refuses a bound token sent as Bearer (RFC 9449 §7.2), challenging with both schemes', async () => {
    const res = await get('/tickets', { authorization: `Bearer ${await mint(f, key.jkt)}` })
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toBe(
      `Bearer realm="${AUDIENCE}", error="invalid_token", error_description="token is not valid", DPoP realm="${AUDIENCE}", algs="${ALGS}"`,
    )
    expect(await res.json()).toStrictEqual({ error: 'invalid_token', error_description: 'token is not valid' })
    // An unbound token still passes as Bearer where both schemes are accepted.
    expect((await get('/tickets', { authorization: `Bearer ${await mint(f, null)}` })).status).toBe(200)
  })

  it('refuses an unbound token sent with the DPoP scheme: nothing binds the proof to it', async () => {
    const { res } = await dpopGet(f, api.url, `${PUBLIC}/tickets`, await mint(f, null), handleOf(f, key.pair))
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toBe(
      `DPoP realm="${AUDIENCE}", error="invalid_token", error_description="token is not valid", algs="${ALGS}", Bearer realm="${AUDIENCE}"`,
    )
  })

  it('checks the proof before the scopes: a token lacking the scope with a bad proof is a proof failure, not 403', async () => {
    const token = await mint(f, key.jkt, { scope: 'write' })
    await expectProofRefused(
      (
        await dpopGet(
          f,
          api.url,
          `${PUBLIC}/tickets`,
          token,
          handleOf(f, key.pair, (_h, p) => void (p['htm'] = 'PUT')),
        )
      ).res,
    )
    const good = await dpopGet(f, api.url, `${PUBLIC}/tickets`, token, handleOf(f, key.pair))
    expect(good.res.status).toBe(403)
    expect(good.res.headers.get('www-authenticate')).toMatch(/^DPoP realm="[^"]+", error="insufficient_scope", .*scope="read", algs="[^"]+", Bearer realm=/)
  })

  it('with nonces: use_dpop_nonce and DPoP-Nonce first, then oauth4webapi retries with the nonce and passes', async () => {
    const token = await mint(f, key.jkt)
    const handle = handleOf(f, key.pair)
    const url = new URL(`${api.url}/strict`)
    const call = () => oauth.protectedResourceRequest(token, 'GET', url, new Headers(), null, { DPoP: handle, [oauth.allowInsecureRequests]: true })
    let nonceError: unknown
    try {
      await call()
    } catch (err) {
      nonceError = err
    }
    // oauth4webapi's own test of the answer: the challenge names the DPoP scheme and use_dpop_nonce.
    expect(oauth.isDPoPNonceError(nonceError)).toBe(true)
    const first = (nonceError as oauth.WWWAuthenticateChallengeError).response
    expect(first.status).toBe(401)
    expect(first.headers.get('www-authenticate')).toBe(
      `DPoP realm="${AUDIENCE}", error="use_dpop_nonce", error_description="a DPoP nonce from the server is required", algs="${ALGS}"`,
    )
    const nonce = first.headers.get('dpop-nonce')
    expect(nonce).toMatch(/^[0-9a-z]+\.[A-Za-z0-9_-]{22}$/)
    const second = await call()
    expect(second.status).toBe(200)
    expect(second.headers.get('dpop-nonce')).toBe(nonce)
    expect(await second.json()).toStrictEqual({ sub: 'alice', jkt: key.jkt })
  })

  it('with nonces: a stale or forged nonce is use_dpop_nonce again; a Bearer token gets the bare DPoP challenge', async () => {
    const token = await mint(f, key.jkt)
    const otherSecret = foreignNonce(f)
    for (const nonce of ['0.AAAAAAAAAAAAAAAAAAAAAA', otherSecret]) {
      const { res } = await dpopGet(
        f,
        api.url,
        `${api.url}/strict`,
        token,
        handleOf(f, key.pair, (_h, p) => void (p['nonce'] = nonce)),
      )
      expect(res.status).toBe(401)
      expect(res.headers.get('www-authenticate')).toMatch(/^DPoP realm="[^"]+", error="use_dpop_nonce", /)
      expect(res.headers.get('dpop-nonce')).not.toBeNull()
    }
    const bearer = await get('/strict', { authorization: `Bearer ${await mint(f, null)}` })
    expect(bearer.status).toBe(401)
    expect(bearer.headers.get('www-authenticate')).toBe(`DPoP realm="${AUDIENCE}", algs="${ALGS}"`)
    expect(bearer.headers.get('dpop-nonce')).not.toBeNull()
    expect(await bearer.json()).toStrictEqual({ error_description: 'a DPoP-bound access token is required' })
  })
})

/** A well-formed nonce of the current window under a secret the servers do not hold. */
function foreignNonce(f: Fixture): string {
  // The window and the HMAC's shape match the servers' nonces; the secret does not.
  const window = Math.floor(f.b.now() / 300).toString(36)
  return `${window}.${randomBytes(16).toString('base64url').slice(0, 22)}`
}

describe('DPoP reasons, through authenticate (no framework)', () => {
  let f: Fixture
  let v: Verifier
  let key: { pair: KeyPair; jkt: string }

  beforeAll(async () => {
    f = await startFixture()
    v = createVerifier(f.options({ dpop: { baseUrl: PUBLIC } }))
    await v.ready()
    key = await dpopKey()
  })
  afterAll(async () => {
    await v?.close()
    await f?.broker.stop()
    await f?.b.close()
  })

  /** oauth4webapi's request, answered by `verifier.authenticate` in-process: the result, reason included. */
  async function through(verifier: Verifier, token: string, handle: oauth.DPoPHandle, url = `${PUBLIC}/tickets`): Promise<AuthenticateResult> {
    let result: AuthenticateResult | undefined
    const options: oauth.ProtectedResourceRequestOptions = {
      DPoP: handle,
      [oauth.customFetch]: async (target: string, init: FetchInit) => {
        result = await verifier.authenticate(new Request(target, asInit(init)), { scopes: ['read'] })
        return result.ok ? new Response('{}', { headers: result.headers }) : new Response(result.body, { status: result.status, headers: result.headers })
      },
    }
    await oauth.protectedResourceRequest(token, 'GET', new URL(url), new Headers(), null, options).catch((err: unknown) => {
      if (!(err instanceof oauth.WWWAuthenticateChallengeError)) throw err
    })
    return result!
  }

  it.each<[string, Modify | 'other key', string]>([
    ['htm', (_h, p) => void (p['htm'] = 'POST'), 'dpop_proof_invalid'],
    ['htu', (_h, p) => void (p['htu'] = `${PUBLIC}/other`), 'dpop_proof_invalid'],
    ['ath', (_h, p) => void (p['ath'] = 'x'.repeat(43)), 'dpop_proof_invalid'],
    ['iat', (_h, p) => void (p['iat'] = (p['iat'] as number) - 120), 'dpop_proof_invalid'],
    ['typ', (h) => void (h['typ'] = 'JWT'), 'dpop_proof_invalid'],
    ['the key', 'other key', 'dpop_key_mismatch'],
  ])('a bad %s is reason %s', async (_case, modify, reason) => {
    const handle = modify === 'other key' ? handleOf(f, (await dpopKey()).pair) : handleOf(f, key.pair, modify)
    const result = await through(v, await mint(f, key.jkt), handle)
    expect(result).toMatchObject({ ok: false, status: 401, reason })
    expect(!result.ok && result.error?.detail).toBeTruthy()
  })

  it('names a replay, a missing proof, a bound Bearer and an unbound DPoP token', async () => {
    const token = await mint(f, key.jkt)
    let sent: Record<string, string> = {}
    const ok = await oauth.protectedResourceRequest(token, 'GET', new URL(`${PUBLIC}/tickets`), new Headers(), null, {
      DPoP: handleOf(f, key.pair),
      [oauth.customFetch]: async (target: string, init: FetchInit) => {
        sent = { ...init.headers }
        const r = await v.authenticate(new Request(target, asInit(init)))
        return new Response(null, { status: r.ok ? 200 : r.status })
      },
    })
    expect(ok.status).toBe(200)
    const req = (headers: Record<string, string>) => v.authenticate(new Request(`${PUBLIC}/tickets`, { headers }))
    expect(await req(sent)).toMatchObject({ ok: false, status: 401, reason: 'dpop_replayed' })
    expect(await req({ authorization: `DPoP ${token}` })).toMatchObject({ ok: false, status: 401, reason: 'dpop_proof_missing' })
    expect(await req({ authorization: `Bearer ${token}` })).toMatchObject({ ok: false, status: 401, reason: 'bound_token_as_bearer' })
    expect(await through(v, await mint(f, null), handleOf(f, key.pair))).toMatchObject({ ok: false, status: 401, reason: 'unbound_token_as_dpop' })
    // verify() has no proof to check: a bound token is a Bearer token there.
    await expect(v.verify(token)).rejects.toMatchObject({ reason: 'bound_token_as_bearer', error: 'invalid_token' })
  })

  it('without the dpop option, a DPoP request is no credentials and a bound token is refused as Bearer', async () => {
    const plain = createVerifier(f.options({}))
    try {
      await plain.ready()
      const token = await mint(f, key.jkt)
      const result = await through(plain, token, handleOf(f, key.pair))
      expect(result).toMatchObject({ ok: false, status: 401, reason: 'missing_token', headers: { 'WWW-Authenticate': `Bearer realm="${AUDIENCE}"` } })
      expect(await plain.authenticate(new Request(PUBLIC, { headers: { authorization: `Bearer ${token}` } }))).toMatchObject({
        reason: 'bound_token_as_bearer',
      })
    } finally {
      await plain.close()
    }
  })

  it('a full replay memory refuses (503, never lets a proof through), and forgets jtis once their proofs are too old', async () => {
    let now = f.b.now()
    const store = createMemoryDpopReplayStore({ capacity: 2, now: () => now })
    expect(await store.spend('a', now + 65)).toBe(true)
    expect(await store.spend('a', now + 65)).toBe(false)
    expect(await store.spend('b', now + 70)).toBe(true)
    await expect(store.spend('c', now + 70)).rejects.toThrow(/full/)
    now += 66
    expect(await store.spend('c', now + 65)).toBe(true)
    expect(await store.spend('b', now + 65)).toBe(false)
    now += 5
    expect(await store.spend('b', now + 65)).toBe(true)

    const full = createVerifier(f.options({ dpop: { baseUrl: PUBLIC, replayCapacity: 1 } }))
    try {
      await full.ready()
      expect(await through(full, await mint(f, key.jkt), handleOf(f, key.pair))).toMatchObject({ ok: true })
      const refused = await through(full, await mint(f, key.jkt), handleOf(f, key.pair))
      expect(refused).toMatchObject({ ok: false, status: 503, reason: 'dpop_replay_unavailable', headers: { 'Retry-After': '1' } })
      expect(!refused.ok && JSON.parse(refused.body)).toMatchObject({ error: 'temporarily_unavailable' })
    } finally {
      await full.close()
    }
  })

  it('a shared replay store sees a proof spent at another replica', async () => {
    const shared = createMemoryDpopReplayStore()
    const replicas = [
      createVerifier(f.options({ dpop: { baseUrl: PUBLIC, replay: shared } })),
      createVerifier(f.options({ dpop: { baseUrl: PUBLIC, replay: shared } })),
    ]
    try {
      await Promise.all(replicas.map((r) => r.ready()))
      const token = await mint(f, key.jkt)
      let sent: Record<string, string> = {}
      await oauth.protectedResourceRequest(token, 'GET', new URL(`${PUBLIC}/tickets`), new Headers(), null, {
        DPoP: handleOf(f, key.pair),
        [oauth.customFetch]: async (target: string, init: FetchInit) => {
          sent = { ...init.headers }
          const r = await replicas[0]!.authenticate(new Request(target, asInit(init)))
          return new Response(null, { status: r.ok ? 200 : r.status })
        },
      })
      expect(await replicas[1]!.authenticate(new Request(`${PUBLIC}/tickets`, { headers: sent }))).toMatchObject({ ok: false, reason: 'dpop_replayed' })
    } finally {
      await Promise.all(replicas.map((r) => r.close()))
    }
  })

  it('refuses bad dpop options at construction', () => {
    for (const dpop of [
      { baseUrl: 'ftp://x' },
      { baseUrl: 'https://x/?q' },
      { maxAgeSeconds: 1 },
      { algorithms: ['HS256'] },
      { nonceSecrets: [randomBytes(8)] },
    ]) {
      expect(() => createVerifier(f.options({ dpop }))).toThrow(TypeError)
    }
  })
})

describe('@mandate/client’s DPoP against the Hono adapter (DPoP only, nonces)', () => {
  let f: Fixture
  let v: Verifier
  let api: Listening
  /** What the resource server answered, in order. */
  const answers: number[] = []

  beforeAll(async () => {
    f = await startFixture()
    v = createVerifier(f.options({ dpop: { required: true, baseUrl: PUBLIC, nonceSecrets: [NONCE_SECRET] } }))
    await v.ready()
    const app = new Hono<honoAdapter.MandateEnv>()
    app.use('*', async (c, next) => {
      await next()
      answers.push(c.res.status)
    })
    app.get('/tickets', honoAdapter.mandateAuth(v, { scopes: ['read'] }), (c) => c.json({ sub: c.get('mandate').sub, jkt: c.get('mandate').cnf?.jkt }))
    api = await listening(serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server)
  })
  afterAll(async () => {
    await api?.stop()
    await v?.close()
    await f?.broker.stop()
    await f?.b.close()
  })

  it('gets a bound token from the broker, answers the nonce challenge by itself, and passes; its token alone (Bearer) does not', async () => {
    const agent = createClient({
      issuer: BROKER,
      clientId: 'secret-agent',
      auth: clientSecret(SECRET),
      dpop: true,
      // The broker's issuer and this resource server's public URL, both sent to their loopback servers.
      fetch: (input, init) => {
        const target = new URL(input instanceof Request ? input.url : String(input))
        const base = target.origin === BROKER ? f.broker.url : target.origin === PUBLIC ? api.url : undefined
        const url = base === undefined ? target : new URL(`${target.pathname}${target.search}`, base)
        // A Request carries its own method, headers and body.
        return input instanceof Request ? fetch(new Request(url, input), init) : fetch(url, init)
      },
      clock: { now: () => f.b.now() * 1000, sleep: () => Promise.resolve() },
    })
    const token = await agent.getToken({ subjectToken: await f.b.userToken(), audience: AUDIENCE, scope: 'read' })
    expect(token.tokenType).toBe('DPoP')
    answers.length = 0
    const res = await agent.fetchWithToken(token, `${PUBLIC}/tickets`)
    expect(res.status).toBe(200)
    expect(await res.json()).toStrictEqual({ sub: 'alice', jkt: await agent.dpopThumbprint() })
    // The first proof had no nonce: use_dpop_nonce, then the client's retry with it.
    expect(answers).toEqual([401, 200])
    const bearer = await fetch(`${api.url}/tickets`, { headers: { authorization: `Bearer ${token.accessToken}` } })
    expect(bearer.status).toBe(401)
    expect(bearer.headers.get('www-authenticate')).toBe(`DPoP realm="${AUDIENCE}", algs="${ALGS}"`)
  })
})
