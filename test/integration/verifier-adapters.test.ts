/**
 * The framework adapters of @mandate/verifier (`/express`, `/fastify`,
 * `/hono`), each in a real server of its framework listening on 127.0.0.1,
 * asked over HTTP, against a real broker served over HTTP on a loopback port
 * (its issuer https://mandate.test, sent there by the verifier's `fetch`).
 * Every adapter must answer the same: the claims to the handler, RFC 6750
 * refusals with RFC 9728 `resource_metadata`, a kill within the bound, 503
 * once the revocation state is stale, and the RFC 9728 document at its
 * well-known path.
 */
import { request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve } from '@hono/node-server'
import express from 'express'
import Fastify from 'fastify'
import { Hono } from 'hono'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createVerifier, type VerifiedToken, type Verifier } from '@mandate/verifier'
import * as expressAdapter from '@mandate/verifier/express'
import * as fastifyAdapter from '@mandate/verifier/fastify'
import * as honoAdapter from '@mandate/verifier/hono'
import { ADMIN_KEYS, AUDIENCE, BROKER, RESOURCE_SERVERS, RS_SECRET, SECRET, basic, bearer, startTestBroker, type TestBroker } from '../support/broker.js'
import { jtiOf } from '../support/tokens.js'

const RESOURCE = 'https://api.test/tickets'
const METADATA_PATH = '/.well-known/oauth-protected-resource/tickets'
const METADATA_URL = `https://api.test${METADATA_PATH}`
/** Short, so that the stale case takes half a second. */
const STALE_AFTER_MS = 500

interface Listening {
  readonly url: string
  stop(): Promise<void>
}

/** Stops a node:http server, cutting the connections still open (the verifier's feed, keep-alive sockets). */
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

/** The same small API in each framework: GET /tickets needs `read`, GET /admin needs `admin`, and the RFC 9728 document. */
const frameworks: Record<string, (v: Verifier) => Promise<Listening>> = {
  express: (v) => {
    const app = express()
    app.use(expressAdapter.mandateResourceMetadata(v, { scopesSupported: ['read', 'admin'] }))
    app.get('/tickets', expressAdapter.mandateAuth(v, { scopes: ['read'] }), (req, res) => {
      const token: VerifiedToken | undefined = req.mandate
      res.json({ sub: token?.sub, agent: token?.client_id })
    })
    app.get('/admin', expressAdapter.mandateAuth(v, { scopes: ['admin'] }), (_req, res) => {
      res.json({ ok: true })
    })
    return listening(app.listen(0, '127.0.0.1'))
  },
  fastify: async (v) => {
    const app = Fastify()
    fastifyAdapter.mandateResourceMetadata(app, v, { scopesSupported: ['read', 'admin'] })
    app.get('/tickets', { onRequest: fastifyAdapter.mandateAuth(v, { scopes: ['read'] }) }, (request) => ({
      sub: request.mandate?.sub,
      agent: request.mandate?.client_id,
    }))
    app.get('/admin', { preHandler: fastifyAdapter.mandateAuth(v, { scopes: ['admin'] }) }, () => ({ ok: true }))
    await app.listen({ port: 0, host: '127.0.0.1' })
    return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, stop: () => app.close() }
  },
  hono: (v) => {
    const app = new Hono<honoAdapter.MandateEnv>()
    app.use(honoAdapter.mandateResourceMetadata(v, { scopesSupported: ['read', 'admin'] }))
    app.get('/tickets', honoAdapter.mandateAuth(v, { scopes: ['read'] }), (c) => c.json({ sub: c.get('mandate').sub, agent: c.get('mandate').client_id }))
    app.get('/admin', honoAdapter.mandateAuth(v, { scopes: ['admin'] }), (c) => c.json({ ok: true }))
    return listening(serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server)
  },
}

/** GET with the raw header lines given, as node:http sends them (two `Authorization` lines stay two). */
function rawGet(url: string, headers: Record<string, string | string[]>): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe.each(Object.keys(frameworks))('the %s adapter in a real server', (name) => {
  let b: TestBroker
  let broker: Listening
  let v: Verifier
  let api: Listening

  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'silent' })
    broker = await listening(serve({ fetch: b.mandate.app.fetch, port: 0, hostname: '127.0.0.1' }) as Server)
    const started = performance.now()
    const base = b.now()
    v = createVerifier({
      issuer: BROKER,
      audience: AUDIENCE,
      resource: RESOURCE,
      credentials: { clientId: RESOURCE_SERVERS.api, clientSecret: RS_SECRET },
      staleAfterMs: STALE_AFTER_MS,
      // The broker's fixed test clock, advancing in real time so that liveness works.
      clock: () => base * 1000 + (performance.now() - started),
      fetch: (input, init) => {
        const target = new URL(input instanceof Request ? input.url : String(input))
        return fetch(target.origin === BROKER ? new URL(`${target.pathname}${target.search}`, broker.url) : target, init)
      },
    })
    await v.ready()
    api = await frameworks[name]!(v)
  })
  afterAll(async () => {
    await api?.stop()
    await v?.close()
    await broker?.stop()
    await b?.close()
  })

  async function issue(): Promise<string> {
    const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))
    expect(res.status).toBe(200)
    return ((await res.json()) as { access_token: string }).access_token
  }
  const get = (path: string, authorization?: string) => fetch(`${api.url}${path}`, { headers: authorization === undefined ? {} : { authorization } })

  it('serves the RFC 9728 document at the path §3.1 inserts, naming the broker', async () => {
    const res = await get(METADATA_PATH)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(await res.json()).toStrictEqual({
      resource: RESOURCE,
      authorization_servers: [BROKER],
      scopes_supported: ['read', 'admin'],
      bearer_methods_supported: ['header'],
    })
  })

  it('hands a valid token’s claims to the handler the framework’s way', async () => {
    const res = await get('/tickets', `Bearer ${await issue()}`)
    expect(res.status).toBe(200)
    expect(await res.json()).toStrictEqual({ sub: 'alice', agent: 'secret-agent' })
  })

  it('answers no token (or another scheme) with 401 and a bare challenge naming the metadata', async () => {
    for (const authorization of [undefined, basic('secret-agent', SECRET)['authorization']]) {
      const res = await get('/tickets', authorization)
      expect(res.status).toBe(401)
      expect(res.headers.get('www-authenticate')).toBe(`Bearer realm="${AUDIENCE}", resource_metadata="${METADATA_URL}"`)
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(await res.json()).toStrictEqual({ error_description: 'a bearer token is required' })
    }
  })

  it('answers a bad token with 401 invalid_token, and two Authorization headers with 400 invalid_request', async () => {
    const token = await issue()
    const [h, , s] = token.split('.') as [string, string, string]
    const forged = `${h}.${Buffer.from(JSON.stringify({ sub: 'mallory' })).toString('base64url')}.${s}`
    for (const bad of [forged, 'not-a-jwt']) {
      const res = await get('/tickets', `Bearer ${bad}`)
      expect(res.status).toBe(401)
      expect(res.headers.get('www-authenticate')).toMatch(
        new RegExp(`^Bearer realm="${AUDIENCE}", error="invalid_token", error_description="[^"]+", resource_metadata="${METADATA_URL}"$`),
      )
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(await res.json()).toMatchObject({ error: 'invalid_token' })
    }
    const twice = await rawGet(`${api.url}/tickets`, { authorization: [`Bearer ${token}`, `Bearer ${token}`] })
    expect(twice.status).toBe(400)
    expect(twice.headers['www-authenticate']).toMatch(/error="invalid_request"/)
  })

  it('answers a token lacking the route’s scope with 403 insufficient_scope naming the scope needed', async () => {
    const res = await get('/admin', `Bearer ${await issue()}`)
    expect(res.status).toBe(403)
    expect(res.headers.get('www-authenticate')).toBe(
      `Bearer realm="${AUDIENCE}", error="insufficient_scope", error_description="token lacks a required scope", scope="admin", resource_metadata="${METADATA_URL}"`,
    )
    expect(await res.json()).toStrictEqual({ error: 'insufficient_scope', error_description: 'token lacks a required scope' })
  })

  it('refuses a token within 100 ms of the admin API acknowledging its revocation', async () => {
    const token = await issue()
    expect((await get('/tickets', `Bearer ${token}`)).status).toBe(200)
    const res = await fetch(`${broker.url}/admin/revocations`, {
      method: 'POST',
      headers: { ...bearer(ADMIN_KEYS.responder), 'content-type': 'application/json' },
      body: JSON.stringify({ jti: jtiOf(token), reason: 'adapter test' }),
    })
    expect(res.status).toBe(201)
    const acknowledged = performance.now()
    // The bound is the kill switch's (the verifier's own test holds the same one).
    await vi.waitFor(async () => expect((await get('/tickets', `Bearer ${token}`)).status).toBe(401), { timeout: 100, interval: 2 })
    expect(performance.now() - acknowledged).toBeLessThan(100)
    expect((await get('/tickets', `Bearer ${token}`)).headers.get('www-authenticate')).toMatch(/error_description="token revoked"/)
  })

  // Last: it stops the broker.
  it('answers 503 with Retry-After once the revocation state is stale (the broker gone), not before', async () => {
    const token = await issue()
    await broker.stop()
    const stopped = performance.now()
    await vi.waitFor(async () => expect((await get('/tickets', `Bearer ${token}`)).status).toBe(503), { timeout: STALE_AFTER_MS + 400, interval: 10 })
    expect(performance.now() - stopped).toBeGreaterThanOrEqual(STALE_AFTER_MS - 300)
    const res = await get('/tickets', `Bearer ${token}`)
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toBe('1')
    expect(res.headers.get('www-authenticate')).toMatch(/error="temporarily_unavailable"/)
    expect(await res.json()).toMatchObject({ error: 'temporarily_unavailable' })
  })
})
