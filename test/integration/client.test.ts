/**
 * `@mandate/client` (packages/client, read from its sources) against a real
 * broker served over HTTP on 127.0.0.1: the test broker of
 * test/support/broker.ts, with its fixed clock shared with the client, a user
 * issuer and a workload issuer whose keys the test holds, and real tokens.
 *
 * The broker's issuer is https://mandate.test; the client's injected fetch
 * sends that origin to the local server (what a proxy or a split-horizon DNS
 * does), which counts every request it passes to the broker. Between the two
 * sits one stand-in for a network element: a switch that answers 503 instead
 * of passing a request on. The 429s come from the broker's own rate limit.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve, type ServerType } from '@hono/node-server'
import { clientSecret, createClient, MandateClientError, privateKeyJwt, workloadIdentity, type ClientOptions, type MandateClient } from '@mandate/client'
import { exportJWK, generateKeyPair, type CryptoKey } from 'jose'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import {
  AUDIENCE,
  basic,
  BROKER,
  OTHER_AUDIENCE,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
  secretAgentPolicy,
  startTestBroker,
  USER_ISSUER,
  type TestBroker,
} from '../support/broker.js'
import { jtiOf, payloadOf } from '../support/tokens.js'

/** burst 1, 1 token a second: a second exchange within the same (fixed) second is refused with 429 and Retry-After: 1. */
const LIMITED = `${secretAgentPolicy('limited-agent', USER_ISSUER)}rate_limit:
  agent: { rate: 60/min, burst: 1 }
`
/** Where the resource server of the fetch tests listens, as the agent addresses it. */
const RS_ORIGIN = 'https://api.test'

async function listen(handler: (req: Request) => Response | Promise<Response>): Promise<{ server: ServerType; origin: string }> {
  const server = serve({ fetch: handler, hostname: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

async function close(server: ServerType): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve())
    ;(server as unknown as { closeAllConnections(): void }).closeAllConnections()
  })
}

describe('@mandate/client against a real broker over HTTP', () => {
  let broker: TestBroker
  let brokerServer: ServerType
  let rsServer: ServerType
  let brokerOrigin: string
  let rsOrigin: string
  let dir: string
  /** Token-endpoint requests that reached the broker. */
  let tokenRequests = 0
  /** Requests the 503 switch answers itself before passing requests on again, and the Retry-After it sends (none when undefined). */
  let unavailable = { count: 0, retryAfter: undefined as string | undefined }
  /** Requests the resource server received, with the Authorization header each carried. */
  let rsRequests: string[] = []
  /** Every wait the client asked for, ms. */
  let sleeps: number[] = []
  /** Private keys of the two Ed25519 agents, by the alg their policies name. */
  const edKeys: Record<string, CryptoKey> = {}

  /** The client's fetch: the broker's and the resource server's public origins go to their local servers. */
  const route: typeof fetch = (input, init) => {
    const request = new Request(input, init)
    const url = request.url.replace(BROKER, brokerOrigin).replace(RS_ORIGIN, rsOrigin)
    return fetch(new Request(url, request))
  }

  const make = (clientId: string, auth: ClientOptions['auth'], extra: Partial<ClientOptions> = {}): MandateClient =>
    createClient({
      issuer: BROKER,
      clientId,
      auth,
      fetch: route,
      clock: {
        // One clock for broker and client; a wait moves it, and nothing really sleeps.
        now: () => broker.now() * 1000,
        sleep: (ms) => {
          sleeps.push(ms)
          broker.advance(Math.ceil(ms / 1000))
          return Promise.resolve()
        },
      },
      ...extra,
    })

  const issued = () => broker.audit.events().filter((e) => e.type === 'token.issued').length

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-client-'))
    const policies: Record<string, string> = { 'limited-agent.yaml': LIMITED }
    for (const alg of ['EdDSA', 'Ed25519'] as const) {
      const { privateKey, publicKey } = await generateKeyPair('Ed25519', { extractable: true })
      edKeys[alg] = privateKey
      const agent = `ed-agent-${alg.toLowerCase()}`
      policies[`${agent}.yaml`] = secretAgentPolicy(agent, USER_ISSUER).replace(
        /authentication: .*/,
        `authentication: { method: private_key_jwt, jwks: { keys: [${JSON.stringify({ ...(await exportJWK(publicKey)), kid: 'ed-1', alg })}] } }`,
      )
    }
    broker = await startTestBroker({ policies })
    ;({ server: brokerServer, origin: brokerOrigin } = await listen((req) => {
      if (new URL(req.url).pathname === '/oauth2/token') {
        if (unavailable.count > 0) {
          unavailable.count--
          const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' }
          if (unavailable.retryAfter !== undefined) headers['retry-after'] = unavailable.retryAfter
          return new Response(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'try again' }), { status: 503, headers })
        }
        tokenRequests++
      }
      return broker.mandate.app.fetch(req)
    }))
    // A resource server for AUDIENCE that asks the broker (RFC 7662) whether each token is still active.
    ;({ server: rsServer, origin: rsOrigin } = await listen(async (req) => {
      const authorization = req.headers.get('authorization') ?? ''
      rsRequests.push(authorization)
      const { pathname } = new URL(req.url)
      if (pathname === '/refuse') return new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer realm="api", error="invalid_token"' } })
      if (pathname === '/insufficient') return new Response(null, { status: 403, headers: { 'www-authenticate': 'Bearer error="insufficient_scope"' } })
      const token = /^Bearer (\S+)$/.exec(authorization)?.[1]
      const answer = await broker.mandate.app.request('/oauth2/introspect', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic(RESOURCE_SERVERS.api, RS_SECRET) },
        body: new URLSearchParams({ token: token ?? '-' }).toString(),
      })
      const { active } = (await answer.json()) as { active: boolean }
      if (!active) return new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } })
      return Response.json({ ok: true, body: req.method === 'POST' ? await req.text() : null })
    }))
  })

  afterAll(async () => {
    await close(brokerServer)
    await close(rsServer)
    await broker.close()
    await rm(dir, { recursive: true, force: true })
  })

  beforeEach(() => {
    tokenRequests = 0
    unavailable = { count: 0, retryAfter: undefined }
    rsRequests = []
    sleeps = []
  })
  // Each test starts one hour on: no rate-limit bucket, cached assertion or token outlives its test.
  afterEach(() => broker.advance(3600))

  describe('each authentication method', () => {
    it('client_secret_basic', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const token = await client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE, scope: 'read' })
      expect(token).toMatchObject({
        tokenType: 'Bearer',
        audience: AUDIENCE,
        scope: ['read'],
        issuedTokenType: 'urn:ietf:params:oauth:token-type:access_token',
      })
      expect(token.expiresAt).toBe((broker.now() + 300) * 1000)
      expect(payloadOf(token.accessToken)).toMatchObject({ iss: BROKER, sub: 'alice', aud: AUDIENCE, act: { sub: 'secret-agent' }, scope: 'read' })
    })

    it('private_key_jwt, with a CryptoKey and with a private JWK', async () => {
      const subjectToken = await broker.userToken({ groups: ['engineering'] })
      const fromKey = make('jwt-agent', privateKeyJwt(broker.agentKey.privateKey, { kid: broker.agentKey.kid, alg: 'ES256' }))
      const jwk = { ...(await exportJWK(broker.agentKeys.privateKey)), kid: broker.agentKey.kid }
      const fromJwk = make('jwt-agent', privateKeyJwt(jwk))
      for (const client of [fromKey, fromJwk]) {
        const token = await client.getToken({ subjectToken, audience: AUDIENCE, scope: ['write'] })
        expect(payloadOf(token.accessToken)).toMatchObject({ act: { sub: 'jwt-agent' }, scope: 'write' })
      }
      expect(tokenRequests).toBe(2)
    })

    it('private_key_jwt with an Ed25519 key, as the policy names its alg (EdDSA or Ed25519)', async () => {
      for (const [alg, privateKey] of Object.entries(edKeys)) {
        const agent = `ed-agent-${alg.toLowerCase()}`
        const client = make(agent, privateKeyJwt(privateKey, { kid: 'ed-1', alg: alg as 'EdDSA' | 'Ed25519' }))
        const token = await client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE })
        expect(payloadOf(token.accessToken)).toMatchObject({ act: { sub: agent } })
      }
    })

    it('refuses a key that cannot sign the algorithm asked for', () => {
      expect(() => privateKeyJwt(broker.agentKey.privateKey, { alg: 'RS256' })).toThrow(TypeError)
    })

    it('workload identity, reading the token file again for every request', async () => {
      const file = join(dir, 'workload-token')
      await writeFile(file, `${await broker.workloads.sign({}, { typ: 'JWT' })}\n`)
      const client = make('workload-agent', workloadIdentity(file))
      const subjectToken = await broker.userToken()
      const token = await client.getToken({ subjectToken, audience: AUDIENCE })
      expect(payloadOf(token.accessToken)).toMatchObject({ act: { sub: 'workload-agent' }, scope: 'read' })

      // The platform rotates the file to a token of another workload: the next request presents it, and is refused.
      await writeFile(file, await broker.workloads.sign({ sub: 'spiffe://test/ns/agents/sa/someone-else' }, { typ: 'JWT' }))
      const refused = await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' }).catch((e: unknown) => e)
      expect(refused).toBeInstanceOf(MandateClientError)
      expect(refused).toMatchObject({ error: 'invalid_client', status: 401, attempts: 1 })
    })

    it('refuses a workload token file that holds no JWT, before sending anything', async () => {
      const file = join(dir, 'not-a-token')
      await writeFile(file, 'hello')
      const client = make('workload-agent', workloadIdentity(file))
      await expect(client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE })).rejects.toMatchObject({ error: 'invalid_client' })
      expect(tokenRequests).toBe(0)
    })
  })

  describe('the cache', () => {
    it('answers a second call without a request', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const subjectToken = await broker.userToken()
      const first = await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })
      const before = issued()
      // The same scopes in another spelling are the same token.
      const second = await client.getToken({ subjectToken, audience: AUDIENCE, scope: ['read', 'read'] })
      expect(second).toBe(first)
      expect(tokenRequests).toBe(1)
      expect(issued()).toBe(before)
      // Another user token is another key.
      await client.getToken({ subjectToken: await broker.userToken({ sub: 'bob' }), audience: AUDIENCE, scope: 'read' })
      expect(tokenRequests).toBe(2)
    })

    it('shares one exchange among 10 concurrent calls', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const subjectToken = await broker.userToken()
      const before = issued()
      const tokens = await Promise.all(Array.from({ length: 10 }, () => client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })))
      expect(new Set(tokens.map((t) => t.accessToken)).size).toBe(1)
      expect(tokenRequests).toBe(1)
      expect(issued() - before).toBe(1)
    })

    it('a caller that aborts leaves the shared exchange to the others; when all abort, it is aborted', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const subjectToken = await broker.userToken()
      const leaving = new AbortController()
      const a = client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read', signal: leaving.signal })
      const b = client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })
      leaving.abort(new Error('caller left'))
      await expect(a).rejects.toThrow('caller left')
      expect((await b).audience).toBe(AUDIENCE)
      expect(tokenRequests).toBe(1)

      const all = [new AbortController(), new AbortController()]
      const calls = all.map((c) => client.getToken({ subjectToken, audience: OTHER_AUDIENCE, scope: 'read', signal: c.signal }))
      for (const c of all) c.abort(new Error('everyone left'))
      for (const call of calls) await expect(call).rejects.toThrow('everyone left')
      // Nothing came back to cache: the shared exchange was aborted (before or after it reached the broker).
      expect(client.cachedTokens).toBe(1)
    })

    it('refreshes a token 30 s before it expires (10 % of a 300 s lifetime), and keeps no stale entry', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const subjectToken = await broker.userToken()
      const first = await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })
      await client.getToken({ subjectToken, audience: OTHER_AUDIENCE, scope: 'read' })
      expect(client.cachedTokens).toBe(2)
      broker.advance(269)
      expect(await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })).toBe(first)
      expect(tokenRequests).toBe(2)
      broker.advance(1)
      const second = await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })
      expect(second.accessToken).not.toBe(first.accessToken)
      expect(tokenRequests).toBe(3)
      // The other audience's token is as old: it went when the stale entries were swept, not when asked for.
      expect(client.cachedTokens).toBe(1)
    })

    it('uses the configured margin when it is the smaller', async () => {
      const client = make('secret-agent', clientSecret(SECRET), { cache: { refreshMarginSeconds: 5 } })
      const subjectToken = await broker.userToken()
      const first = await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })
      broker.advance(294)
      expect(await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })).toBe(first)
      broker.advance(1)
      expect(await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })).not.toBe(first)
      expect(tokenRequests).toBe(2)
    })

    it('is bounded: the least recently used token goes first', async () => {
      const client = make('secret-agent', clientSecret(SECRET), { cache: { maxEntries: 2 } })
      const subjectToken = await broker.userToken()
      const get = (scope: string) => client.getToken({ subjectToken, audience: AUDIENCE, scope })
      await get('read')
      await get('write')
      await get('read') // read is now the most recently used
      await get('read write')
      expect(client.cachedTokens).toBe(2)
      expect(tokenRequests).toBe(3)
      await get('read')
      expect(tokenRequests).toBe(3)
      await get('write')
      expect(tokenRequests).toBe(4)
    })

    it('does not cache a refusal', async () => {
      const client = make('secret-agent', clientSecret('wrong-secret'))
      const subjectToken = await broker.userToken()
      for (let i = 0; i < 2; i++) await expect(client.getToken({ subjectToken, audience: AUDIENCE })).rejects.toBeInstanceOf(MandateClientError)
      expect(tokenRequests).toBe(2)
    })
  })

  describe('retries', () => {
    it("retries a 429 from the broker's rate limit after its Retry-After", async () => {
      const client = make('limited-agent', clientSecret(SECRET))
      const subjectToken = await broker.userToken()
      await client.getToken({ subjectToken, audience: AUDIENCE })
      const token = await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' })
      expect(payloadOf(token.accessToken)).toMatchObject({ act: { sub: 'limited-agent' } })
      expect(tokenRequests).toBe(3)
      expect(sleeps).toHaveLength(1)
      // Retry-After: 1, and at most 10 % jitter on top.
      expect(sleeps[0]).toBeGreaterThanOrEqual(1000)
      expect(sleeps[0]).toBeLessThanOrEqual(1100)
    })

    it('throws the 429, typed, once the attempts are spent', async () => {
      const client = make('limited-agent', clientSecret(SECRET), { retry: { maxAttempts: 1 } })
      const subjectToken = await broker.userToken()
      await client.getToken({ subjectToken, audience: AUDIENCE })
      const err = (await client.getToken({ subjectToken, audience: AUDIENCE, scope: 'read' }).catch((e: unknown) => e)) as MandateClientError
      expect(err).toBeInstanceOf(MandateClientError)
      expect(err).toMatchObject({ error: 'temporarily_unavailable', status: 429, retryAfter: 1, attempts: 1, retryable: true })
      expect(sleeps).toEqual([])
    })

    it('retries a 503 after its Retry-After', async () => {
      unavailable = { count: 2, retryAfter: '2' }
      const client = make('secret-agent', clientSecret(SECRET))
      await client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE })
      expect(tokenRequests).toBe(1)
      expect(sleeps).toHaveLength(2)
      for (const ms of sleeps) expect(ms).toBeGreaterThanOrEqual(2000)
    })

    it('backs off with jitter when a 503 has no Retry-After', async () => {
      unavailable = { count: 2, retryAfter: undefined }
      const client = make('secret-agent', clientSecret(SECRET), { retry: { baseDelayMs: 400 } })
      await client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE })
      expect(sleeps).toHaveLength(2)
      expect(sleeps[0]).toBeLessThanOrEqual(400)
      expect(sleeps[1]).toBeLessThanOrEqual(800)
    })

    it('does not start a wait longer than the budget left', async () => {
      unavailable = { count: 5, retryAfter: '30' }
      const client = make('secret-agent', clientSecret(SECRET), { retry: { maxWaitMs: 10_000 } })
      const err = await client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE }).catch((e: unknown) => e)
      expect(err).toMatchObject({ error: 'temporarily_unavailable', status: 503, retryAfter: 30, attempts: 1 })
      expect(sleeps).toEqual([])
    })

    it('gives up after maxAttempts', async () => {
      unavailable = { count: 5, retryAfter: '1' }
      const client = make('secret-agent', clientSecret(SECRET), { retry: { maxAttempts: 3 } })
      const err = await client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE }).catch((e: unknown) => e)
      expect(err).toMatchObject({ status: 503, attempts: 3 })
      expect(sleeps).toHaveLength(2)
      expect(unavailable.count).toBe(2)
    })
  })

  describe('typed errors, never retried', () => {
    it('invalid_target for an audience the policy does not grant', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const err = (await client
        .getToken({ subjectToken: await broker.userToken(), audience: 'https://nope.test' })
        .catch((e: unknown) => e)) as MandateClientError
      expect(err).toBeInstanceOf(MandateClientError)
      expect(err).toMatchObject({ error: 'invalid_target', status: 400, attempts: 1, retryable: false })
      expect(typeof err.description).toBe('string')
      expect(tokenRequests).toBe(1)
    })

    it('invalid_client for a wrong secret', async () => {
      const client = make('secret-agent', clientSecret('not-the-secret'))
      await expect(client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE })).rejects.toMatchObject({
        error: 'invalid_client',
        status: 401,
        description: 'client authentication failed',
      })
      expect(tokenRequests).toBe(1)
    })

    it('invalid_scope for a scope beyond the policy', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      await expect(client.getToken({ subjectToken: await broker.userToken(), audience: OTHER_AUDIENCE, scope: 'write' })).rejects.toMatchObject({
        error: 'invalid_scope',
        status: 400,
      })
    })

    it('aborts: an aborted call sends nothing', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const controller = new AbortController()
      controller.abort(new Error('task cancelled'))
      await expect(client.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE, signal: controller.signal })).rejects.toThrow('task cancelled')
      expect(tokenRequests).toBe(0)
    })
  })

  describe('delegation', () => {
    it('a sub-agent hop: the parent token as subject, the sub-agent as actor', async () => {
      const parent = make('secret-agent', clientSecret(SECRET))
      const parentToken = await parent.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE, scope: 'read write' })
      const child = await parent.delegate({
        parentToken: parentToken.accessToken,
        actor: { clientId: 'sub-agent', auth: clientSecret(SECRET) },
        audience: AUDIENCE,
        scope: 'read',
      })
      const claims = payloadOf(child.accessToken)
      expect(claims).toMatchObject({
        sub: 'alice',
        aud: AUDIENCE,
        scope: 'read',
        client_id: 'sub-agent',
        act: { sub: 'sub-agent', act: { sub: 'secret-agent' } },
      })
      expect(claims['chain']).toEqual([jtiOf(parentToken.accessToken)])
      // Cached like any token, per actor.
      await parent.delegate({
        parentToken: parentToken.accessToken,
        actor: { clientId: 'sub-agent', auth: clientSecret(SECRET) },
        audience: AUDIENCE,
        scope: 'read',
      })
      expect(tokenRequests).toBe(2)
    })

    it('a hop to an agent the parent may not delegate to is refused', async () => {
      const parent = make('secret-agent', clientSecret(SECRET))
      const parentToken = await parent.getToken({ subjectToken: await broker.userToken(), audience: AUDIENCE })
      const refused = await parent
        .delegate({ parentToken: parentToken.accessToken, actor: { clientId: 'limited-agent', auth: clientSecret(SECRET) }, audience: AUDIENCE })
        .catch((e: unknown) => e)
      expect(refused).toBeInstanceOf(MandateClientError)
      expect((refused as MandateClientError).status).toBe(400)
    })
  })

  describe('fetch', () => {
    it("attaches the token for the request's audience, and none where there is none", async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const api = client.fetch(await broker.userToken(), {
        audienceFor: (url) => (url.origin === RS_ORIGIN ? { audience: AUDIENCE, scope: 'read' } : undefined),
      })
      const res = await api(`${RS_ORIGIN}/things`, { method: 'POST', body: 'hello' })
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ ok: true, body: 'hello' })
      expect(rsRequests).toHaveLength(1)
      expect(payloadOf(rsRequests[0]!.slice('Bearer '.length))).toMatchObject({ aud: AUDIENCE })
      await api(`${RS_ORIGIN}/things`)
      expect(tokenRequests).toBe(1)
    })

    it('on 401 invalid_token drops the token and retries once with a new one', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const api = client.fetch(await broker.userToken(), { audienceFor: () => ({ audience: AUDIENCE, scope: 'read' }) })
      await api(`${RS_ORIGIN}/things`)
      const revoked = rsRequests[0]!.slice('Bearer '.length)
      await broker.revocations.revokeToken(jtiOf(revoked) as never)
      const res = await api(`${RS_ORIGIN}/things`, { method: 'POST', body: 'again' })
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ ok: true, body: 'again' })
      expect(rsRequests).toHaveLength(3)
      expect(rsRequests[1]).toBe(`Bearer ${revoked}`)
      expect(rsRequests[2]).not.toBe(`Bearer ${revoked}`)
      expect(tokenRequests).toBe(2)
    })

    it('retries only once', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const api = client.fetch(await broker.userToken(), { audienceFor: () => ({ audience: AUDIENCE, scope: 'read' }) })
      const res = await api(`${RS_ORIGIN}/refuse`)
      expect(res.status).toBe(401)
      expect(rsRequests).toHaveLength(2)
      expect(tokenRequests).toBe(2)
    })

    it('does not retry a 401 that is not invalid_token', async () => {
      const client = make('secret-agent', clientSecret(SECRET))
      const api = client.fetch(await broker.userToken(), { audienceFor: () => ({ audience: AUDIENCE, scope: 'read' }) })
      const res = await api(`${RS_ORIGIN}/insufficient`)
      expect(res.status).toBe(403)
      expect(rsRequests).toHaveLength(1)
    })
  })
})
