/**
 * DPoP at the token endpoint (RFC 9449 §5): oauth4webapi's DPoP handle is
 * the client, talking to the broker's app. A good proof binds the token
 * (`cnf.jkt`, `token_type: DPoP`, the hop's `act.jkt`, the record's `jkt`);
 * `require_dpop` agents never get a bearer token; a DPoP-bound subject token
 * is exchanged only with its holder's proof; proofs are single use, across
 * two brokers on one Redis too; nonces (`use_dpop_nonce`, `DPoP-Nonce`).
 */
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose'
import * as oauth from 'oauth4webapi'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { accessTokenHash } from '@mandate/verifier/dpop'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { AUDIENCE, BROKER, GRANT_TYPE_TOKEN_EXCHANGE, SECRET, startTestBroker, TOKEN_TYPE, USER_ISSUER, type TestBroker } from '../support/broker.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'

const TOKEN_ENDPOINT = `${BROKER}/oauth2/token`
const as: oauth.AuthorizationServer = { issuer: BROKER, token_endpoint: TOKEN_ENDPOINT }
const DPOP_INVALID = 'DPoP proof is invalid'

function policy(agent: string, extra = ''): string {
  return `agent: ${agent}
owner: security@example.com
purpose: DPoP test agent
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(SECRET).toString('hex')} }
users: [{ issuer: ${USER_ISSUER} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read, write], default_scopes: [read] }]
token_ttl: { default: 300, max: 600 }
${extra}`
}

const POLICIES = {
  'dpop-agent.yaml': policy('dpop-agent', 'require_dpop: true\ndelegation: { max_depth: 3, sub_agents: [dpop-sub] }\n'),
  'dpop-sub.yaml': policy('dpop-sub', 'require_dpop: true\ndelegation: { max_depth: 3 }\n').replace(/users: .*\n/, ''),
  'plain-agent.yaml': policy('plain-agent', 'delegation: { max_depth: 2, sub_agents: [dpop-sub] }\n'),
}

interface KeyPair {
  readonly privateKey: CryptoKey
  readonly publicKey: CryptoKey
}

interface Agent {
  readonly id: string
  readonly keys: KeyPair
  readonly jkt: string
  /** oauth4webapi's DPoP handle, its clock moved to the broker's (the test clock runs in 2027). */
  handle(): oauth.DPoPHandle
}

async function agentWithKey(broker: TestBroker, id: string): Promise<Agent> {
  const keys: KeyPair = await generateKeyPair('ES256', { extractable: false })
  const jkt = await calculateJwkThumbprint(await exportJWK(keys.publicKey))
  let handle: oauth.DPoPHandle | undefined
  return {
    id,
    keys,
    jkt,
    handle() {
      // oauth4webapi reads the skew once: a test that moves the clock signs its proofs by hand.
      handle ??= oauth.DPoP({ [oauth.clockSkew]: broker.now() - Math.floor(Date.now() / 1000) }, keys)
      return handle
    },
  }
}

/** A token request through oauth4webapi (its DPoP handle signs the proof), into the broker's app. */
async function exchange(
  broker: TestBroker,
  agent: Agent,
  subjectToken: string,
  options: { dpop?: boolean; extra?: Record<string, string>; headers?: Record<string, string> } = {},
): Promise<Response> {
  const params = new URLSearchParams({ subject_token: subjectToken, subject_token_type: TOKEN_TYPE.accessToken, audience: AUDIENCE, ...options.extra })
  return oauth.genericTokenEndpointRequest(as, { client_id: agent.id }, oauth.ClientSecretBasic(SECRET), GRANT_TYPE_TOKEN_EXCHANGE, params, {
    ...(options.dpop === false ? {} : { DPoP: agent.handle() }),
    ...(options.headers === undefined ? {} : { headers: options.headers }),
    [oauth.customFetch]: async (url, init) => broker.mandate.app.request(url, init),
  })
}

async function issued(broker: TestBroker, agent: Agent, res: Response): Promise<oauth.TokenEndpointResponse> {
  return oauth.processGenericTokenEndpointResponse(as, { client_id: agent.id }, res, { DPoP: agent.handle() } as never)
}

async function refusal(res: Response): Promise<{ status: number; error: unknown; description: unknown; nonce: string | null }> {
  const body = (await res.json()) as Record<string, unknown>
  expect(body['access_token']).toBeUndefined()
  return { status: res.status, error: body['error'], description: body['error_description'], nonce: res.headers.get('dpop-nonce') }
}

/** A proof signed by hand, for what no honest client sends. */
async function handProof(broker: TestBroker, key: CryptoKey, publicJwk: JWK, claims: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ jti: crypto.randomUUID(), htm: 'POST', htu: TOKEN_ENDPOINT, iat: broker.now(), ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk })
    .sign(key)
}

describe('DPoP at the token endpoint (RFC 9449 §5)', () => {
  let broker: TestBroker

  beforeAll(async () => {
    broker = await startTestBroker({ policies: POLICIES })
  })
  afterAll(async () => broker?.close())

  it('advertises the proof algorithms (RFC 9449 §5.1)', async () => {
    const meta = (await (await broker.mandate.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
    expect(meta['dpop_signing_alg_values_supported']).toContain('ES256')
  })

  it('binds the token to the proof’s key: cnf.jkt, token_type DPoP, act.jkt, and the record’s jkt', async () => {
    const agent = await agentWithKey(broker, 'dpop-agent')
    const res = await exchange(broker, agent, await broker.userToken())
    const token = await issued(broker, agent, res)
    expect(token.token_type).toBe('dpop')
    const claims = decodeJwt(token.access_token)
    expect(claims['cnf']).toEqual({ jkt: agent.jkt })
    expect(claims['act']).toEqual({ sub: 'dpop-agent', jkt: agent.jkt })
    const record = broker.audit.events().findLast((r) => r.type === 'token.issued')
    expect(record).toMatchObject({ jti: claims.jti, jkt: agent.jkt })
    // Introspection says so too (RFC 9449 §6.2).
    const intro = await broker.mandate.app.request('/oauth2/introspect', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`dpop-agent:${SECRET}`).toString('base64')}` },
      body: new URLSearchParams({ token: token.access_token }).toString(),
    })
    expect(await intro.json()).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: agent.jkt } })
  })

  it('never gives a require_dpop agent a bearer token; an agent without the rule may have either', async () => {
    const strict = await agentWithKey(broker, 'dpop-agent')
    expect(await refusal(await exchange(broker, strict, await broker.userToken(), { dpop: false }))).toMatchObject({
      status: 400,
      error: 'invalid_dpop_proof',
    })
    const plain = await agentWithKey(broker, 'plain-agent')
    const bearer = (await (await exchange(broker, plain, await broker.userToken(), { dpop: false })).json()) as Record<string, unknown>
    expect(bearer['token_type']).toBe('Bearer')
    expect(decodeJwt(bearer['access_token'] as string)['cnf']).toBeUndefined()
    const bound = await issued(broker, plain, await exchange(broker, plain, await broker.userToken()))
    expect(decodeJwt(bound.access_token)['cnf']).toEqual({ jkt: plain.jkt })
  })

  it('refuses every bad proof with invalid_dpop_proof and one description, and records the denial', async () => {
    const agent = await agentWithKey(broker, 'dpop-agent')
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk = await exportJWK(publicKey)
    const other = await generateKeyPair('ES256')
    const user = await broker.userToken()
    const bad: Record<string, string> = {
      'wrong htm': await handProof(broker, privateKey, jwk, { htm: 'GET' }),
      'wrong htu': await handProof(broker, privateKey, jwk, { htu: `${BROKER}/oauth2/introspect` }),
      'iat too old': await handProof(broker, privateKey, jwk, { iat: broker.now() - 600 }),
      'iat ahead': await handProof(broker, privateKey, jwk, { iat: broker.now() + 600 }),
      'another key signed': await handProof(broker, other.privateKey, jwk),
      'no jti': await handProof(broker, privateKey, jwk, { jti: undefined }),
      'not a JWS': 'not-a-proof',
      'two proofs': `${await handProof(broker, privateKey, jwk)}, ${await handProof(broker, privateKey, jwk)}`,
    }
    for (const [name, proof] of Object.entries(bad)) {
      const answer = await refusal(await exchange(broker, agent, user, { dpop: false, headers: { dpop: proof } }))
      expect({ name, ...answer }).toEqual({ name, status: 400, error: 'invalid_dpop_proof', description: DPOP_INVALID, nonce: null })
    }
    const denied = broker.audit.events().filter((r) => r.type === 'token.denied' && r.error === 'invalid_dpop_proof')
    expect(denied.length).toBeGreaterThanOrEqual(Object.keys(bad).length)
  })

  it('takes a proof once (RFC 9449 §11.1): the same proof again is refused', async () => {
    const agent = await agentWithKey(broker, 'dpop-agent')
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
    const proof = await handProof(broker, privateKey, await exportJWK(publicKey))
    const first = await exchange(broker, agent, await broker.userToken(), { dpop: false, headers: { dpop: proof } })
    expect(first.status).toBe(200)
    expect(await refusal(await exchange(broker, agent, await broker.userToken(), { dpop: false, headers: { dpop: proof } }))).toMatchObject({
      status: 400,
      error: 'invalid_dpop_proof',
      description: DPOP_INVALID,
    })
  })

  describe('across hops', () => {
    it('binds the sub-agent’s token to the sub-agent’s own key, with the parent’s proof; the act chain keeps each hop’s key', async () => {
      const parent = await agentWithKey(broker, 'dpop-agent')
      const child = await agentWithKey(broker, 'dpop-sub')
      const parentToken = (await issued(broker, parent, await exchange(broker, parent, await broker.userToken()))).access_token
      // The parent proves its key for the token endpoint with ath of its token, and hands both to the sub-agent.
      const handOver = await handProof(broker, parent.keys.privateKey, await exportJWK(parent.keys.publicKey), { ath: await accessTokenHash(parentToken) })
      const res = await exchange(broker, child, parentToken, { extra: { subject_token_dpop: handOver } })
      const token = await issued(broker, child, res)
      const claims = decodeJwt(token.access_token)
      expect(claims['cnf']).toEqual({ jkt: child.jkt })
      expect(claims['act']).toMatchObject({ sub: 'dpop-sub', jkt: child.jkt, act: { sub: 'dpop-agent' } })
    })

    it('refuses a stolen bound token: without its holder’s proof, with a thief’s proof, or with a proof of another token', async () => {
      const parent = await agentWithKey(broker, 'dpop-agent')
      const child = await agentWithKey(broker, 'dpop-sub')
      const parentToken = (await issued(broker, parent, await exchange(broker, parent, await broker.userToken()))).access_token
      const thief = await generateKeyPair('ES256', { extractable: true })
      const thiefJwk = await exportJWK(thief.publicKey)
      const without = await refusal(await exchange(broker, child, parentToken))
      expect(without).toMatchObject({ status: 400, error: 'invalid_dpop_proof' })
      const byThief = await handProof(broker, thief.privateKey, thiefJwk, { ath: await accessTokenHash(parentToken) })
      expect(await refusal(await exchange(broker, child, parentToken, { extra: { subject_token_dpop: byThief } }))).toMatchObject({
        status: 400,
        error: 'invalid_dpop_proof',
        description: DPOP_INVALID,
      })
      const otherToken = (await issued(broker, parent, await exchange(broker, parent, await broker.userToken()))).access_token
      const forOther = await handProof(broker, parent.keys.privateKey, await exportJWK(parent.keys.publicKey), { ath: await accessTokenHash(otherToken) })
      expect(await refusal(await exchange(broker, child, parentToken, { extra: { subject_token_dpop: forOther } }))).toMatchObject({
        status: 400,
        error: 'invalid_dpop_proof',
        description: DPOP_INVALID,
      })
      // A thief presenting the bound token as its own DPoP client, with its own key: still no holder's proof.
      const thiefAgent = await agentWithKey(broker, 'dpop-sub')
      expect(await refusal(await exchange(broker, thiefAgent, parentToken))).toMatchObject({ error: 'invalid_dpop_proof' })
    })

    it('refuses a holder’s proof sent for an unbound subject token', async () => {
      const plain = await agentWithKey(broker, 'plain-agent')
      const bearer = (await (await exchange(broker, plain, await broker.userToken(), { dpop: false })).json()) as { access_token: string }
      const child = await agentWithKey(broker, 'dpop-sub')
      const proof = await handProof(broker, plain.keys.privateKey, await exportJWK(plain.keys.publicKey), { ath: await accessTokenHash(bearer.access_token) })
      expect(await refusal(await exchange(broker, child, bearer.access_token, { extra: { subject_token_dpop: proof } }))).toMatchObject({
        status: 400,
        error: 'invalid_request',
      })
      // Without it, an unbound parent token is exchanged as before, and the child's own token is bound.
      const token = await issued(broker, child, await exchange(broker, child, bearer.access_token))
      expect(decodeJwt(token.access_token)['cnf']).toEqual({ jkt: child.jkt })
    })
  })
})

describe('DPoP nonces (RFC 9449 §8)', () => {
  let broker: TestBroker
  beforeAll(async () => {
    broker = await startTestBroker({ policies: POLICIES, dpop: { nonces: true } })
  })
  afterAll(async () => broker?.close())

  it('asks for a nonce (use_dpop_nonce with DPoP-Nonce); oauth4webapi retries with it and gets the token', async () => {
    const agent = await agentWithKey(broker, 'dpop-agent')
    const user = await broker.userToken()
    const first = await exchange(broker, agent, user)
    expect(first.status).toBe(400)
    const nonce = first.headers.get('dpop-nonce')
    expect(nonce).toMatch(/^[0-9a-z]+\.[A-Za-z0-9_-]{22}$/)
    // oauth4webapi learned the nonce from the refusal (it tells it is a nonce error) and now sends it.
    await expect(issued(broker, agent, first)).rejects.toSatisfy((e: unknown) => oauth.isDPoPNonceError(e))
    const second = await exchange(broker, agent, user)
    expect(second.status).toBe(200)
    expect(second.headers.get('dpop-nonce')).toBe(nonce)
    // A nonce made up, or from another broker's keys, is asked again.
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
    const made = await handProof(broker, privateKey, await exportJWK(publicKey), { nonce: `${nonce!.split('.')[0]!}.${'A'.repeat(22)}` })
    expect(await refusal(await exchange(broker, agent, user, { dpop: false, headers: { dpop: made } }))).toMatchObject({ status: 400, error: 'use_dpop_nonce' })
  })

  it('a nonce goes stale two windows on, and the refusal carries the fresh one', async () => {
    const agent = await agentWithKey(broker, 'dpop-agent')
    const nonce = (await exchange(broker, agent, await broker.userToken())).headers.get('dpop-nonce')!
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk = await exportJWK(publicKey)
    const withNonce = async (n: string) =>
      exchange(broker, agent, await broker.userToken(), { dpop: false, headers: { dpop: await handProof(broker, privateKey, jwk, { nonce: n }) } })
    expect((await withNonce(nonce)).status).toBe(200)
    broker.advance(301)
    expect((await withNonce(nonce)).status).toBe(200)
    broker.advance(300)
    const stale = await withNonce(nonce)
    const fresh = stale.headers.get('dpop-nonce')!
    expect(await refusal(stale)).toMatchObject({ status: 400, error: 'use_dpop_nonce' })
    expect(fresh).not.toBe(nonce)
    expect((await withNonce(fresh)).status).toBe(200)
  })
})

describe('DPoP proofs are single use across brokers sharing Redis', () => {
  const prefix = `mandate-test:dpop:${process.pid}:${Date.now()}:`
  let a: TestBroker
  let b: TestBroker
  let redis: Redis
  let available = false

  beforeAll(async () => {
    available = await redisAvailable('dpop')
    if (!available) return
    redis = new Redis(REDIS_URL, REDIS_CLIENT_OPTIONS)
    redis.on('error', () => {})
    a = await startTestBroker({ policies: POLICIES, storage: { redis_url: REDIS_URL, key_prefix: prefix } })
    b = await startTestBroker({ policies: POLICIES, storage: { redis_url: REDIS_URL, key_prefix: prefix } })
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    if (available) {
      await deletePrefix(redis, prefix)
      redis.disconnect()
    }
  })

  it('a proof spent at one broker is refused at the other', async (ctx) => {
    if (!available) ctx.skip()
    const agent = await agentWithKey(a, 'dpop-agent')
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
    const proof = await handProof(a, privateKey, await exportJWK(publicKey))
    expect((await exchange(a, agent, await a.userToken(), { dpop: false, headers: { dpop: proof } })).status).toBe(200)
    expect(await refusal(await exchange(b, agent, await b.userToken(), { dpop: false, headers: { dpop: proof } }))).toMatchObject({
      status: 400,
      error: 'invalid_dpop_proof',
    })
  })
})
