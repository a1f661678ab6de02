/**
 * DPoP at GET /forward-auth (RFC 9449 §7.1), through the real app: the
 * proxy passes the original request's `Authorization: DPoP`, its `DPoP`
 * proof, and its method and URL (`X-Original-Method`, `X-Original-URL`).
 * Proofs are oauth4webapi's (its DPoP client, whose `customFetch` turns the
 * resource request into the proxy's question); a test changes one claim of
 * a proof through its `modifyAssertion` hook. Tokens are signed with the
 * broker's own key and carry `cnf.jkt`, as the token endpoint mints them
 * for a DPoP client.
 *
 * Every proof failure is 401 `invalid_dpop_proof` with one description and
 * a DPoP challenge; a bound token as Bearer and an unbound one as DPoP are
 * `invalid_token`; the proxy not passing the original method or URL is 400.
 * A proof's `jti` is spent in the broker's admission store: in memory, and
 * in Redis (`REDIS_URL`, a key prefix of the test's own, deleted after),
 * where a second broker sharing it refuses the replay.
 */
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { calculateJwkThumbprint, exportJWK } from 'jose'
import { Redis } from 'ioredis'
import * as oauth from 'oauth4webapi'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadSigningKeys, type SigningKey } from '../../src/tokens/keys.js'
import { AUDIENCE, BROKER, USER_ISSUER, startTestBroker, type TestBroker } from '../support/broker.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'
import { brokerToken } from '../support/tokens.js'

const NAMES = { issuer: BROKER, userIssuer: USER_ISSUER, audience: AUDIENCE }

const AUD = encodeURIComponent(AUDIENCE)
const ORIGINAL = 'https://orders.example/orders/7'
/** The broker's `dpop.algorithms` (its default), which its DPoP challenges name: the proofs it accepts there and here. */
const ALGS = 'ES256 ES384 EdDSA Ed25519 PS256 RS256'
const PROOF_CHALLENGE = `DPoP realm="mandate", error="invalid_dpop_proof", error_description="DPoP proof is invalid", algs="${ALGS}"`
const PROOF_BODY = { error: 'invalid_dpop_proof', error_description: 'DPoP proof is invalid' }

const reachable = await redisAvailable('forward-auth-dpop')

type KeyPair = Awaited<ReturnType<typeof oauth.generateKeyPair>>
type FetchInit = oauth.CustomFetchOptions<string, oauth.ProtectedResourceRequestBody>
type Modify = (header: Record<string, unknown>, payload: Record<string, unknown>) => void

interface Broker {
  readonly b: TestBroker
  readonly key: SigningKey
}

async function startBroker(options: Parameters<typeof startTestBroker>[0] = {}): Promise<Broker> {
  const b = await startTestBroker({ logLevel: 'silent', ...options })
  return { b, key: (await loadSigningKeys(join(b.mandate.config.data_dir, 'signing-keys.json'), false)).current }
}

/** A token as the broker mints it for a DPoP client: `cnf.jkt` unless `jkt` is null. */
function mint(broker: Broker, jkt: string | null, claims: Record<string, unknown> = {}): Promise<string> {
  return brokerToken(NAMES, broker.key, broker.b.now(), { ...(jkt === null ? {} : { cnf: { jkt } }), ...claims })
}

async function dpopKey(): Promise<{ pair: KeyPair; jkt: string }> {
  const pair = await oauth.generateKeyPair('ES256')
  return { pair, jkt: await calculateJwkThumbprint(await exportJWK(pair.publicKey)) }
}

function handleOf(broker: Broker, pair: KeyPair, modify?: Modify): oauth.DPoPHandle {
  const skew = broker.b.now() - Math.floor(Date.now() / 1000)
  return oauth.DPoP({ [oauth.clockSkew]: skew }, pair, modify === undefined ? {} : { [oauth.modifyAssertion]: modify })
}

interface Asked {
  readonly res: Response
  /** The headers the proxy passed on (the client's, and the original method and URL). */
  readonly sent: Record<string, string>
}

/**
 * oauth4webapi's DPoP request for `url`, which the proxy turns into its
 * question to the broker: the client's headers plus the original method
 * and URL (`original` replaces what it passes).
 */
async function ask(
  broker: Broker,
  token: string,
  handle: oauth.DPoPHandle,
  options: { url?: string; query?: string; path?: string; original?: Record<string, string | undefined> } = {},
): Promise<Asked> {
  let sent: Record<string, string> = {}
  const customFetch = async (target: string, init: FetchInit): Promise<Response> => {
    const passed: Record<string, string | undefined> = { ...init.headers, 'x-original-method': init.method, 'x-original-url': target, ...options.original }
    sent = Object.fromEntries(Object.entries(passed).filter((e): e is [string, string] => e[1] !== undefined))
    return broker.b.mandate.app.request(`${options.path ?? '/forward-auth'}?${options.query ?? `audience=${AUD}&scope=read`}`, { headers: sent })
  }
  try {
    const res = await oauth.protectedResourceRequest(token, 'GET', new URL(options.url ?? ORIGINAL), new Headers(), null, {
      DPoP: handle,
      [oauth.customFetch]: customFetch,
    })
    return { res, sent }
  } catch (err) {
    if (err instanceof oauth.WWWAuthenticateChallengeError) return { res: err.response, sent }
    throw err
  }
}

async function expectProofRefused(res: Response): Promise<void> {
  expect(res.status).toBe(401)
  expect(res.headers.get('www-authenticate')).toBe(PROOF_CHALLENGE)
  expect(res.headers.get('cache-control')).toMatch(/no-store/)
  expect(res.headers.get('x-mandate-subject')).toBeNull()
  expect(await res.json()).toStrictEqual(PROOF_BODY)
}

describe('GET /forward-auth with DPoP', () => {
  let broker: Broker
  let key: { pair: KeyPair; jkt: string }
  beforeAll(async () => {
    broker = await startBroker()
    key = await dpopKey()
  })
  afterAll(async () => {
    await broker?.b.close()
  })

  it('names in its challenges the proof algorithms the broker advertises (dpop.algorithms)', async () => {
    const metadata = (await (await broker.b.mandate.app.request('/.well-known/oauth-authorization-server')).json()) as Record<string, unknown>
    expect((metadata['dpop_signing_alg_values_supported'] as string[]).join(' ')).toBe(ALGS)
  })

  it('allows a bound token with a proof for the original request, with the claims in headers', async () => {
    const { res, sent } = await ask(broker, await mint(broker, key.jkt), handleOf(broker, key.pair))
    expect(sent['authorization']).toMatch(/^DPoP /)
    expect(res.status).toBe(200)
    expect(res.headers.get('x-mandate-subject')).toBe('alice')
    expect(res.headers.get('x-mandate-agent')).toBe('secret-agent')
  })

  it.each<[string, Modify | 'other key']>([
    ['another method (htm)', (_h, p) => void (p['htm'] = 'DELETE')],
    ['another URL (htu)', (_h, p) => void (p['htu'] = 'https://orders.example/orders/8')],
    ['the hash of another token (ath)', (_h, p) => void (p['ath'] = 'x'.repeat(43))],
    ['an iat older than 60 s', (_h, p) => void (p['iat'] = (p['iat'] as number) - 120)],
    ['typ JWT', (h) => void (h['typ'] = 'JWT')],
    ['a key that is not the token’s cnf.jkt (a stolen token)', 'other key'],
  ])('refuses a proof with %s: 401 invalid_dpop_proof, the same answer', async (_case, modify) => {
    const token = await mint(broker, key.jkt)
    const handle = modify === 'other key' ? handleOf(broker, (await dpopKey()).pair) : handleOf(broker, key.pair, modify)
    await expectProofRefused((await ask(broker, token, handle)).res)
  })

  it('refuses a replayed proof, a DPoP token without a proof, and two DPoP headers', async () => {
    const token = await mint(broker, key.jkt)
    const first = await ask(broker, token, handleOf(broker, key.pair))
    expect(first.res.status).toBe(200)
    const again = (headers: Record<string, string>) => broker.b.mandate.app.request(`/forward-auth?audience=${AUD}&scope=read`, { headers })
    await expectProofRefused(await again(first.sent))
    const { dpop, ...noProof } = first.sent
    await expectProofRefused(await again(noProof))
    await expectProofRefused(await again({ ...first.sent, dpop: `${dpop!}, ${dpop!}` }))
  })

  it('a proof for the URL the proxy names: the same proof for another original URL is refused', async () => {
    const token = await mint(broker, key.jkt)
    const { res } = await ask(broker, token, handleOf(broker, key.pair), { original: { 'x-original-url': 'https://other.example/orders/7' } })
    await expectProofRefused(res)
  })

  it('refuses a bound token sent as Bearer, and an unbound one sent as DPoP, as invalid_token (RFC 9449 §7.1, §7.2)', async () => {
    const bound = await broker.b.mandate.app.request(`/forward-auth?audience=${AUD}`, { headers: { authorization: `Bearer ${await mint(broker, key.jkt)}` } })
    expect(bound.status).toBe(401)
    expect(bound.headers.get('www-authenticate')).toMatch(/^Bearer realm="mandate", error="invalid_token", /)
    const unbound = await ask(broker, await mint(broker, null), handleOf(broker, key.pair))
    expect(unbound.res.status).toBe(401)
    expect(unbound.res.headers.get('www-authenticate')).toMatch(
      new RegExp(`^DPoP realm="mandate", error="invalid_token", error_description="[^"]+", algs="${ALGS}"$`),
    )
  })

  it('checks the proof before the scopes, then answers 403 insufficient_scope with the DPoP challenge', async () => {
    const token = await mint(broker, key.jkt, { scope: 'write' })
    await expectProofRefused(
      (
        await ask(
          broker,
          token,
          handleOf(broker, key.pair, (_h, p) => void (p['htm'] = 'PUT')),
        )
      ).res,
    )
    const { res } = await ask(broker, token, handleOf(broker, key.pair))
    expect(res.status).toBe(403)
    expect(res.headers.get('www-authenticate')).toMatch(/^DPoP realm="mandate", error="insufficient_scope", .*scope="read", algs="/)
  })

  it('answers 400 when the proxy passes no original method or URL (its configuration is wrong)', async () => {
    for (const original of [
      { 'x-original-url': undefined },
      { 'x-original-method': undefined },
      { 'x-original-url': '/orders/7' },
      { 'x-original-method': 'get me' },
    ]) {
      const { res } = await ask(broker, await mint(broker, key.jkt), handleOf(broker, key.pair), { original })
      expect(res.status).toBe(400)
      expect(await res.json()).toMatchObject({ error: 'invalid_request' })
    }
  })

  it('at /forward-auth/ext-authz, the request’s own method is the original one when none is passed', async () => {
    const token = await mint(broker, key.jkt)
    let res = (await ask(broker, token, handleOf(broker, key.pair), { path: '/forward-auth/ext-authz', original: { 'x-original-method': undefined } })).res
    expect(res.status).toBe(200)
    res = (
      await ask(
        broker,
        token,
        handleOf(broker, key.pair, (_h, p) => void (p['htm'] = 'POST')),
        { path: '/forward-auth/ext-authz', original: { 'x-original-method': undefined } },
      )
    ).res
    await expectProofRefused(res)
  })
})

describe.runIf(reachable)('GET /forward-auth with DPoP, replay through Redis', () => {
  const prefix = `mandate-test-fwd-dpop-${randomUUID()}:`
  let broker: Broker
  let redis: Redis
  beforeAll(async () => {
    broker = await startBroker({ storage: { redis_url: REDIS_URL, key_prefix: prefix } })
    redis = new Redis(REDIS_URL, REDIS_CLIENT_OPTIONS)
  })
  afterAll(async () => {
    await broker?.b.close()
    if (redis !== undefined) {
      await deletePrefix(redis, prefix)
      redis.disconnect()
    }
  })

  it('spends the proof’s jti in the shared store, under #dpop-rs:<audience>#<jkt>#<jti>, until the proof is too old', async () => {
    const key = await dpopKey()
    const first = await ask(broker, await mint(broker, key.jkt), handleOf(broker, key.pair))
    expect(first.res.status).toBe(200)
    const keys = await redis.keys(`${prefix}*dpop-rs*`)
    expect(keys).toHaveLength(1)
    expect(keys[0]).toContain(`#dpop-rs:${encodeURIComponent(AUDIENCE)}#${key.jkt}#`)
    // Until iat + 60 s + 5 s of skew, read against the broker's clock (PX from its now).
    const ttl = await redis.pttl(keys[0]!)
    expect(ttl).toBeGreaterThan(55_000)
    expect(ttl).toBeLessThanOrEqual(66_000)
    const replay = () => broker.b.mandate.app.request(`/forward-auth?audience=${AUD}&scope=read`, { headers: first.sent })
    await expectProofRefused(await replay())
    // The memory is Redis's, not this process's: with the key gone, the same proof passes again.
    await redis.del(keys[0]!)
    expect((await replay()).status).toBe(200)
  })
})
