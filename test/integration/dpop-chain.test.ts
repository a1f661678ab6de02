/**
 * A `require_dpop` delegation end to end, every component real: agents on
 * `@mandate/client` (DPoP keys of their own) → the broker over HTTP →
 * a sub-agent with the parent's proof → a resource server on
 * `@mandate/verifier`'s Hono adapter following the broker's feed, and the
 * broker's forward auth. A thief that copied the tokens (even one holding
 * the sub-agent's own client credentials) but not the keys is refused at
 * every hop: at the broker as a subject token, at the resource server, at
 * forward auth; a copied request is refused as a replay.
 *
 * The broker runs on the test clock (test/support/broker.ts); the clients
 * and the verifier read the same clock, so proofs and tokens agree on time.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import { clientSecret, createClient, MandateClientError, type MandateClient, type MandateToken } from '@mandate/client'
import { createVerifier, type Verifier } from '@mandate/verifier'
import { mandateAuth, type MandateEnv } from '@mandate/verifier/hono'
import { Hono } from 'hono'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { AUDIENCE, BROKER, RESOURCE_SERVERS, RS_SECRET, startTestBroker, USER_ISSUER, type TestBroker } from '../support/broker.js'

/** Where the resource server is, as the agents address it (its proofs' `htu`). */
const PUBLIC = 'https://tickets.test'
const ORCHESTRATOR_SECRET = 'orchestrator-secret-8a3c1e5f7b9d0246'
const WORKER_SECRET = 'worker-secret-1b3d5f7a9c0e2468'

function policy(agent: string, secret: string, extra: string): string {
  return `agent: ${agent}
owner: security@example.com
purpose: DPoP delegation chain
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(secret).toString('hex')} }
grants: [{ audience: ${AUDIENCE}, scopes: [read, write], default_scopes: [read] }]
token_ttl: { default: 300, max: 600 }
require_dpop: true
${extra}`
}

interface Listening {
  readonly url: string
  stop(): Promise<void>
}

async function listen(fetchHandler: (req: Request) => Response | Promise<Response>): Promise<Listening> {
  const server = serve({ fetch: fetchHandler, port: 0, hostname: '127.0.0.1' }) as Server
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

describe('a require_dpop delegation chain: client → broker → sub-agent → verifier, and a thief with the tokens but not the keys', () => {
  let b: TestBroker
  let broker: Listening
  let api: Listening
  let verifier: Verifier
  let orchestrator: MandateClient
  let worker: MandateClient
  let thief: MandateClient
  /** Sends the broker's issuer and the resource server's public URL to their loopback servers. */
  let route: typeof fetch
  /** The headers of the thief's last request to the resource server (its proof among them). */
  let thiefSent: Headers | undefined

  beforeAll(async () => {
    b = await startTestBroker({
      logLevel: 'silent',
      policies: {
        'orchestrator.yaml': policy(
          'orchestrator',
          ORCHESTRATOR_SECRET,
          `users: [{ issuer: ${USER_ISSUER} }]\ndelegation: { max_depth: 3, sub_agents: [worker] }\n`,
        ),
        'worker.yaml': policy('worker', WORKER_SECRET, 'delegation: { max_depth: 3 }\n'),
      },
    })
    broker = await listen(b.mandate.app.fetch)
    route = (input, init) => {
      const target = new URL(input instanceof Request ? input.url : String(input))
      const base = target.origin === BROKER ? broker.url : target.origin === PUBLIC ? api.url : undefined
      const url = base === undefined ? target : new URL(`${target.pathname}${target.search}`, base)
      return input instanceof Request ? fetch(new Request(url, input), init) : fetch(url, init)
    }
    verifier = createVerifier({
      issuer: BROKER,
      audience: AUDIENCE,
      credentials: { clientId: RESOURCE_SERVERS.api, clientSecret: RS_SECRET },
      clock: () => b.now() * 1000,
      fetch: route,
      dpop: { required: true, baseUrl: PUBLIC },
    })
    await verifier.ready()
    const app = new Hono<MandateEnv>()
    app.get('/tickets', mandateAuth(verifier, { scopes: ['read'] }), (c) =>
      c.json({ sub: c.get('mandate').sub, agent: c.get('mandate').client_id, jkt: c.get('mandate').cnf?.jkt }),
    )
    api = await listen(app.fetch)
    const client = (clientId: string, secret: string, via = route) =>
      createClient({
        issuer: BROKER,
        clientId,
        auth: clientSecret(secret),
        dpop: true,
        fetch: via,
        clock: { now: () => b.now() * 1000, sleep: () => Promise.resolve() },
        retry: { maxAttempts: 1 },
      })
    orchestrator = client('orchestrator', ORCHESTRATOR_SECRET)
    worker = client('worker', WORKER_SECRET)
    // The thief even holds the worker's client credentials; its key is its own.
    thief = client('worker', WORKER_SECRET, (input, init) => {
      if (new URL(input instanceof Request ? input.url : String(input)).origin === PUBLIC) {
        thiefSent = new Headers(input instanceof Request ? input.headers : init?.headers)
      }
      return route(input, init)
    })
  })
  afterAll(async () => {
    await api?.stop()
    await verifier?.close()
    await broker?.stop()
    await b?.close()
  })

  async function refused(call: Promise<unknown>): Promise<MandateClientError> {
    const err = await call.then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(MandateClientError)
    return err as MandateClientError
  }

  async function dpopRefusal(res: Response): Promise<void> {
    expect(res.status).toBe(401)
    expect(res.headers.get('www-authenticate')).toMatch(/^DPoP .*error="invalid_dpop_proof"/)
    expect(await res.json()).toMatchObject({ error: 'invalid_dpop_proof' })
  }

  it('binds each hop to its own agent’s key, keeps both keys in act and the log, and lets the holders in; the thief is refused at every hop', async () => {
    const orchestratorKey = await orchestrator.dpopThumbprint()
    const workerKey = await worker.dpopThumbprint()
    const thiefKey = await thief.dpopThumbprint()
    expect(new Set([orchestratorKey, workerKey, thiefKey]).size).toBe(3)

    // Hop 1: the orchestrator, for alice.
    const parent = await orchestrator.getToken({ subjectToken: await b.userToken(), audience: AUDIENCE, scope: 'read write' })
    expect(parent.tokenType).toBe('DPoP')
    expect(decodeJwt(parent.accessToken)['cnf']).toEqual({ jkt: orchestratorKey })
    expect((await orchestrator.fetchWithToken(parent, `${PUBLIC}/tickets`)).status).toBe(200)

    // Hop 2: the orchestrator hands its token and a proof of its key to the worker.
    const handOver = await orchestrator.delegationProof(parent.accessToken)
    const child = await worker.delegate({ parentToken: parent.accessToken, subjectTokenProof: handOver, audience: AUDIENCE, scope: 'read' })
    const claims = decodeJwt(child.accessToken)
    expect(claims['cnf']).toEqual({ jkt: workerKey })
    expect(claims['act']).toMatchObject({ sub: 'worker', jkt: workerKey, act: { sub: 'orchestrator', jkt: orchestratorKey } })
    const records = b.audit.events().filter((e) => e.type === 'token.issued')
    expect(records.find((r) => r.jti === claims.jti)).toMatchObject({ jkt: workerKey, parentJti: decodeJwt(parent.accessToken).jti })
    expect(records.find((r) => r.jti === decodeJwt(parent.accessToken).jti)).toMatchObject({ jkt: orchestratorKey })
    const seen = await worker.fetchWithToken(child, `${PUBLIC}/tickets`)
    expect(seen.status).toBe(200)
    expect(await seen.json()).toEqual({ sub: 'alice', agent: 'worker', jkt: workerKey })

    // The thief at the broker: the parent token as a subject token, without its holder's proof, with its own, with the spent one.
    expect((await refused(thief.delegate({ parentToken: parent.accessToken, audience: AUDIENCE, scope: 'read' }))).error).toBe('invalid_dpop_proof')
    const ownProof = await thief.delegationProof(parent.accessToken)
    expect((await refused(thief.delegate({ parentToken: parent.accessToken, subjectTokenProof: ownProof, audience: AUDIENCE, scope: 'read' }))).error).toBe(
      'invalid_dpop_proof',
    )
    expect((await refused(thief.delegate({ parentToken: parent.accessToken, subjectTokenProof: handOver, audience: AUDIENCE, scope: 'read' }))).error).toBe(
      'invalid_dpop_proof',
    )
    // …and the worker's token as a subject token for one more hop (the worker may delegate to no one, but the proof fails first).
    expect((await refused(thief.delegate({ parentToken: child.accessToken, audience: AUDIENCE, scope: 'read' }))).error).toBe('invalid_dpop_proof')

    // The thief at the resource server: either token with its own key's proofs, or as a bearer token.
    const stolen = (t: MandateToken): MandateToken => ({ ...t })
    await dpopRefusal(await thief.fetchWithToken(stolen(parent), `${PUBLIC}/tickets`))
    await dpopRefusal(await thief.fetchWithToken(stolen(child), `${PUBLIC}/tickets`))
    const asBearer = await route(`${PUBLIC}/tickets`, { headers: { authorization: `Bearer ${child.accessToken}` } })
    expect(asBearer.status).toBe(401)

    // A copied request (the worker's token and proof, both taken off the wire) is a replay.
    let copied: Headers | undefined
    const copying: typeof fetch = (input, init) => {
      copied = new Headers(input instanceof Request ? input.headers : init?.headers)
      return route(input, init)
    }
    const wire = createClient({
      issuer: BROKER,
      clientId: 'worker',
      auth: clientSecret(WORKER_SECRET),
      dpop: true,
      fetch: copying,
      clock: { now: () => b.now() * 1000, sleep: () => Promise.resolve() },
    })
    const wireToken = await wire.delegate({
      parentToken: parent.accessToken,
      subjectTokenProof: await orchestrator.delegationProof(parent.accessToken),
      audience: AUDIENCE,
      scope: 'read',
    })
    expect((await wire.fetchWithToken(wireToken, `${PUBLIC}/tickets`)).status).toBe(200)
    await dpopRefusal(await route(`${PUBLIC}/tickets`, { headers: copied! }))

    // The thief at forward auth: the proxy passes the proof, the method and the URL it received (its last proof: for the worker's token).
    await dpopRefusal(await thief.fetchWithToken(stolen(child), `${PUBLIC}/tickets`))
    const forward = await b.mandate.app.request(`/forward-auth?audience=${encodeURIComponent(AUDIENCE)}&scope=read`, {
      headers: {
        authorization: `DPoP ${child.accessToken}`,
        dpop: thiefSent!.get('dpop')!,
        'x-original-method': 'GET',
        'x-original-url': `${PUBLIC}/tickets`,
      },
    })
    expect(forward.status).toBe(401)
    expect(await forward.json()).toMatchObject({ error: 'invalid_dpop_proof' })
  })
})
