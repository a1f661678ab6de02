/**
 * `@mandate/client`'s DPoP (RFC 9449) against a real broker served over HTTP
 * on 127.0.0.1: the test broker of test/support/broker.ts, its fixed clock
 * shared with the clients (whose proofs take their `iat` from it). As in
 * client.test.ts, the clients' fetch sends the broker's issuer
 * (https://mandate.test) to the local server, which counts the token
 * requests it passes on; a second local server is a resource server that
 * checks each request's proof with `verifyDpopProof` against the token's
 * `cnf.jkt`, as a resource server using @mandate/verifier does.
 */
import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { clientSecret, createClient, MandateClientError, type MandateClient } from '@mandate/client'
import { createDpopNonces, DpopError, verifyDpopProof, type DpopNonces } from '@mandate/verifier/dpop'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { AUDIENCE, BROKER, SECRET, secretAgentPolicy, startTestBroker, USER_ISSUER, type TestBroker } from '../support/broker.js'
import { payloadOf } from '../support/tokens.js'

/** An agent that gets no token without a proof; it may hand its tokens on to `sub-agent`. */
const DPOP_AGENT = 'dpop-agent'
const POLICY = `${secretAgentPolicy(DPOP_AGENT, USER_ISSUER)}require_dpop: true
delegation: { max_depth: 3, sub_agents: [sub-agent] }
`
/** Where the resource server listens, as the agents address it. */
const RS_ORIGIN = 'https://files.test'

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

/** One broker, with or without its nonces, behind a local server, and a resource server that checks proofs. */
function dpopSuite(name: string, nonces: boolean, body: (env: () => Env) => void) {
  describe(name, () => {
    const env = {} as Env
    let servers: ServerType[] = []

    beforeAll(async () => {
      env.broker = await startTestBroker({ policies: { [`${DPOP_AGENT}.yaml`]: POLICY }, ...(nonces ? { dpop: { nonces: true } } : {}) })
      env.tokenRequests = []
      const broker = await listen((req) => {
        if (new URL(req.url).pathname === '/oauth2/token') env.tokenRequests.push(req.headers.get('dpop') === null ? 'no-proof' : 'proof')
        return env.broker.mandate.app.fetch(req)
      })
      env.rsNonces = createDpopNonces({ secrets: [crypto.getRandomValues(new Uint8Array(32))], now: () => env.broker.now() })
      const rs = await listen(async (req) => {
        const [scheme, token] = (req.headers.get('authorization') ?? '').split(' ')
        const cnf = token === undefined ? undefined : (payloadOf(token)['cnf'] as { jkt?: string } | undefined)
        if (scheme !== 'DPoP' || token === undefined || cnf?.jkt === undefined) return new Response(null, { status: 401 })
        try {
          await verifyDpopProof(req.headers.get('dpop') ?? '', {
            method: req.method,
            url: req.url.replace(rsOriginLocal(), RS_ORIGIN),
            now: env.broker.now(),
            accessToken: token,
            boundJkt: cnf.jkt,
            nonces: env.rsNonces,
          })
        } catch (err) {
          if (!(err instanceof DpopError)) throw err
          const headers: Record<string, string> = { 'www-authenticate': `DPoP error="${err.code}"` }
          if (err.code === 'use_dpop_nonce') headers['dpop-nonce'] = await env.rsNonces.current()
          return new Response(null, { status: 401, headers })
        }
        return Response.json({ ok: true })
      })
      servers = [broker.server, rs.server]
      const rsOriginLocal = () => rs.origin
      env.route = (input, init) => {
        const request = new Request(input, init)
        return fetch(new Request(request.url.replace(BROKER, broker.origin).replace(RS_ORIGIN, rs.origin), request))
      }
    })

    afterAll(async () => {
      for (const server of servers) await close(server)
      await env.broker.close()
    })
    beforeEach(() => {
      env.tokenRequests = []
    })
    // Each test starts one hour on: no cached token or proof outlives its test.
    afterEach(() => env.broker.advance(3600))

    body(() => env)
  })
}

interface Env {
  broker: TestBroker
  /** Token requests that reached the broker: whether each carried a DPoP proof. */
  tokenRequests: ('proof' | 'no-proof')[]
  rsNonces: DpopNonces
  route: typeof fetch
}

function client(env: Env, clientId: string, dpop = true): MandateClient {
  return createClient({
    issuer: BROKER,
    clientId,
    auth: clientSecret(SECRET),
    fetch: env.route,
    ...(dpop ? { dpop: true as const } : {}),
    // One clock for broker and clients; nothing really sleeps.
    clock: { now: () => env.broker.now() * 1000, sleep: () => Promise.resolve() },
  })
}

dpopSuite('@mandate/client DPoP against a real broker', false, (get) => {
  it('an agent with require_dpop gets a DPoP token bound to its key (cnf.jkt); without a key it gets none', async () => {
    const env = get()
    const agent = client(env, DPOP_AGENT)
    const token = await agent.getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
    expect(token.tokenType).toBe('DPoP')
    expect(payloadOf(token.accessToken)).toMatchObject({ cnf: { jkt: await agent.dpopThumbprint() }, act: { sub: DPOP_AGENT } })

    const err = await client(env, DPOP_AGENT, false)
      .getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(MandateClientError)
    expect(err).toMatchObject({ error: 'invalid_dpop_proof', status: 400 })
  })

  it('an agent without require_dpop gets a Bearer token without a key, a DPoP token with one', async () => {
    const env = get()
    const subject = await env.broker.userToken()
    expect((await client(env, 'secret-agent', false).getToken({ subjectToken: subject, audience: AUDIENCE })).tokenType).toBe('Bearer')
    const agent = client(env, 'secret-agent')
    const token = await agent.getToken({ subjectToken: subject, audience: AUDIENCE })
    expect(token.tokenType).toBe('DPoP')
    expect(payloadOf(token.accessToken)['cnf']).toEqual({ jkt: await agent.dpopThumbprint() })
  })

  it('a sub-agent exchange with the parent’s proof works, and the new token is bound to the sub-agent’s key', async () => {
    const env = get()
    const parent = client(env, DPOP_AGENT)
    const sub = client(env, 'sub-agent')
    const parentToken = await parent.getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
    const proof = await parent.delegationProof(parentToken.accessToken)
    const token = await sub.delegate({ parentToken: parentToken.accessToken, subjectTokenProof: proof, audience: AUDIENCE, scope: 'read' })
    expect(token.tokenType).toBe('DPoP')
    const claims = payloadOf(token.accessToken)
    expect(claims['cnf']).toEqual({ jkt: await sub.dpopThumbprint() })
    expect(claims).toMatchObject({ act: { sub: 'sub-agent', act: { sub: DPOP_AGENT } } })
  })

  it('without the parent’s proof, or with a proof of another key, the hop is refused', async () => {
    const env = get()
    const parent = client(env, DPOP_AGENT)
    const sub = client(env, 'sub-agent')
    const parentToken = await parent.getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
    const without = await sub.delegate({ parentToken: parentToken.accessToken, audience: AUDIENCE, scope: 'read' }).catch((e: unknown) => e)
    expect(without).toBeInstanceOf(MandateClientError)
    expect(without).toMatchObject({ error: 'invalid_dpop_proof', status: 400 })
    // The sub-agent's own key cannot stand in for the parent's.
    const forged = await sub.delegationProof(parentToken.accessToken)
    const other = await sub
      .delegate({ parentToken: parentToken.accessToken, subjectTokenProof: forged, audience: AUDIENCE, scope: 'read' })
      .catch((e: unknown) => e)
    expect(other).toBeInstanceOf(MandateClientError)
    expect(other).toMatchObject({ error: 'invalid_dpop_proof', status: 400 })
  })

  it('a parent and sub-agent in one client: the client proves the parent token itself', async () => {
    const env = get()
    const parent = client(env, DPOP_AGENT)
    const parentToken = await parent.getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
    const token = await parent.delegate({
      parentToken: parentToken.accessToken,
      actor: { clientId: 'sub-agent', auth: clientSecret(SECRET) },
      audience: AUDIENCE,
      scope: 'read',
    })
    expect(payloadOf(token.accessToken)).toMatchObject({ cnf: { jkt: await parent.dpopThumbprint() }, act: { sub: 'sub-agent' } })
  })

  it('a resource server takes the DPoP token with the client’s proofs, its nonce asked for once', async () => {
    const env = get()
    const agent = client(env, DPOP_AGENT)
    const token = await agent.getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
    expect((await agent.fetchWithToken(token, `${RS_ORIGIN}/reports`)).status).toBe(200)
    // Another client holds no key the token is bound to: its proofs are refused.
    const thief = client(env, DPOP_AGENT)
    await thief.dpopThumbprint()
    expect((await thief.fetchWithToken(token, `${RS_ORIGIN}/reports`)).status).toBe(401)
  })
})

dpopSuite('@mandate/client DPoP against a broker that requires its nonces', true, (get) => {
  it('the first proof is refused with use_dpop_nonce, the retry with the nonce gets the token', async () => {
    const env = get()
    const agent = client(env, DPOP_AGENT)
    const token = await agent.getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
    expect(token.tokenType).toBe('DPoP')
    expect(env.tokenRequests).toEqual(['proof', 'proof'])
    // The nonce is learned: the next exchange is one request.
    await agent.getToken({ subjectToken: await env.broker.userToken({ sub: 'bob' }), audience: AUDIENCE })
    expect(env.tokenRequests).toHaveLength(3)
  })

  it('a delegation hop with the parent’s proof works under nonces', async () => {
    const env = get()
    const parent = client(env, DPOP_AGENT)
    const sub = client(env, 'sub-agent')
    const parentToken = await parent.getToken({ subjectToken: await env.broker.userToken(), audience: AUDIENCE })
    const token = await sub.delegate({
      parentToken: parentToken.accessToken,
      subjectTokenProof: await parent.delegationProof(parentToken.accessToken),
      audience: AUDIENCE,
      scope: 'read',
    })
    expect(payloadOf(token.accessToken)['cnf']).toEqual({ jkt: await sub.dpopThumbprint() })
  })
})
