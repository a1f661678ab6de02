/**
 * The interop matrix: every agent library against every resource-server
 * check, with one real broker (`mandate serve`, PGlite, a separate process)
 * whose user tokens come from a real OpenID provider (oidc-provider, the
 * upstream IdP of the other e2e tests), signed in through its login and
 * consent forms.
 *
 * Agents (how a token is obtained): oauth4webapi, openid-client (RFC 8414
 * discovery with `algorithm: 'oauth2'`), @mandate/client. Resource servers
 * (how it is checked): plain jose (`jwtVerify` + `createRemoteJWKSet`),
 * express-oauth2-jwt-bearer and express-jwt + jwks-rsa (each in an express 5
 * app), @mandate/verifier (following the revocation feed), and nginx forward
 * auth (the server block of docs/forward-auth.md).
 *
 * Each pair: a token for the resource server's audience is accepted and the
 * server sees the right user and agent; a live token for another audience is
 * refused with 401. Then the kill (the agent, for that user only, through the
 * admin API): the servers that can see a kill (@mandate/verifier, forward
 * auth) refuse the next call within 100 ms of the kill's 201; the stock JWT
 * checks, which cannot, accept the killed token until it expires, and refuse
 * it only then. That difference is why the verifier and forward auth exist
 * (README, "Protecting a resource server").
 *
 * Tokens live 3 s (the agents' policies), so that "until it expires" is
 * watched, not assumed. nginx: see test/support/nginx.ts (skipped with a
 * warning when missing, a failure under CI=true).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { clientSecret, createClient } from '@mandate/client'
import { createVerifier, type Verifier } from '@mandate/verifier'
import express, { type ErrorRequestHandler } from 'express'
import { expressjwt, type GetVerificationKey } from 'express-jwt'
import { auth } from 'express-oauth2-jwt-bearer'
import { createRemoteJWKSet, decodeJwt, jwtVerify, errors as joseErrors } from 'jose'
import { expressJwtSecret } from 'jwks-rsa'
import * as oauth from 'oauth4webapi'
import * as openid from 'openid-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { logSink } from '../support/log-sink.js'
import { freePort } from '../support/net.js'
import { haveNginx, serverBlockFromDoc, startNginx, stopChild, type Nginx } from '../support/nginx.js'
import { startUpstreamIdp, type UpstreamIdp } from '../support/oidc-provider.js'

const root = new URL('../../', import.meta.url).pathname
const NGINX_HERE = haveNginx('the nginx rows of test/e2e/interop.test.ts')

/** The resource servers' audience: the one docs/forward-auth.md's nginx block asks the broker about. */
const AUDIENCE = 'https://orders.example'
const SCOPE = 'orders:read'
/** Another resource server's: its tokens are live, but not for AUDIENCE. */
const OTHER_AUDIENCE = 'https://billing.example'
const OTHER_SCOPE = 'billing:read'
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'
/** The bound the kill switch promises (docs/ARCHITECTURE.md "The kill switch"): every mirror within 100 ms. */
const KILL_BOUND_MS = 100
/** The agents' token lifetime: long enough for a row's calls, short enough to watch a killed token live on until it expires. */
const TOKEN_TTL_SECONDS = 3

const ADMIN_KEY = randomBytes(24).toString('base64url')
const RS_SECRET = randomBytes(24).toString('base64url')
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')

/** How an agent gets a token: one library each. */
interface AgentSpec {
  readonly name: string
  /** Its agent id at the broker. */
  readonly id: string
  readonly secret: string
}
const AGENTS: readonly AgentSpec[] = [
  { name: 'oauth4webapi', id: 'agent-oauth4webapi', secret: randomBytes(24).toString('base64url') },
  { name: 'openid-client', id: 'agent-openid-client', secret: randomBytes(24).toString('base64url') },
  { name: '@mandate/client', id: 'agent-mandate-client', secret: randomBytes(24).toString('base64url') },
]

/** How a resource server checks a token. */
interface ResourceServerSpec {
  readonly name: string
  /** Whether a kill reaches it before the token expires. */
  readonly seesKills: boolean
  readonly needsNginx?: boolean
  /** What its 401 body's `detail` says of a token for another audience; undefined where the body says nothing (nginx). */
  readonly wrongAudience?: RegExp
}
const RESOURCE_SERVERS: readonly ResourceServerSpec[] = [
  { name: 'jose', seesKills: false, wrongAudience: /^ERR_JWT_CLAIM_VALIDATION_FAILED aud$/ },
  { name: 'express-oauth2-jwt-bearer', seesKills: false, wrongAudience: /^invalid_token Unexpected 'aud' value$/ },
  { name: 'express-jwt + jwks-rsa', seesKills: false, wrongAudience: /^invalid_token jwt audience invalid/ },
  { name: '@mandate/verifier', seesKills: true, wrongAudience: /^invalid_token wrong_audience$/ },
  { name: 'nginx forward auth', seesKills: true, needsNginx: true },
]

/** What a resource server answers with 200: the user and the agent as it saw them. */
interface Seen {
  readonly sub: string
  readonly agent: string
}

/** One call to a resource server: when it was sent and answered (performance.now() and epoch ms), and the answer. */
interface Call {
  readonly sentAt: number
  readonly answeredAt: number
  readonly sentEpochMs: number
  readonly answeredEpochMs: number
  readonly status: number
}

/** Listens on 127.0.0.1, port chosen by the OS; the URL of `/orders` on it. */
async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/orders`
}

async function close(server: Server | undefined): Promise<void> {
  if (server === undefined || !server.listening) return
  const closed = new Promise<void>((resolve) => server.close(() => resolve()))
  server.closeAllConnections()
  await closed
}

/** express's error handler for both middlewares: the 401 and its challenge as they made them, the reason as `detail`. */
const expressErrors: ErrorRequestHandler = (err: { status?: number; headers?: Record<string, string>; code?: string; message?: string }, _req, res, _next) => {
  res
    .status(err.status ?? 500)
    .set({ 'www-authenticate': 'Bearer', ...err.headers })
    .json({ detail: `${err.code ?? ''} ${err.message ?? ''}` })
}

describe('interop: agent libraries × resource-server checks, against one real broker', () => {
  let dir: string
  let broker: ChildProcess | undefined
  let brokerErr = ''
  let issuer: string
  let idp: UpstreamIdp | undefined
  let metadata: oauth.AuthorizationServer
  let verifier: Verifier | undefined
  let nginx: Nginx | undefined
  const servers: Server[] = []
  /** Resource server name → the URL an agent calls. */
  const urls = new Map<string, string>()
  /** Agent name → (user token, audience, scope) → access token. */
  const getters = new Map<string, (userToken: string, audience: string, scope: string) => Promise<string>>()
  const startedAt = performance.now()
  /** Kill to first refusal (ms), per resource server that sees kills; for the report at the end. */
  const refusedAfter = new Map<string, number[]>()

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-interop-'))
    const port = await freePort()
    issuer = `http://127.0.0.1:${port}`

    // The upstream IdP first: the broker trusts it by its issuer, which holds its port.
    idp = await startUpstreamIdp({ resourceServers: { [issuer]: issuer }, scope: `${SCOPE} ${OTHER_SCOPE}` })

    const policies = join(dir, 'policies')
    await mkdir(policies)
    for (const agent of AGENTS) {
      await writeFile(
        join(policies, `${agent.id}.yaml`),
        `agent: ${agent.id}
owner: interop@example.com
purpose: gets tokens with ${agent.name} (interop e2e test)
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${sha256(agent.secret)} }
users:
  - issuer: ${idp.issuer}
grants:
  - { audience: ${AUDIENCE}, scopes: [${SCOPE}] }
  - { audience: ${OTHER_AUDIENCE}, scopes: [${OTHER_SCOPE}] }
token_ttl: { default: ${TOKEN_TTL_SECONDS}, max: ${TOKEN_TTL_SECONDS} }
`,
      )
    }
    const config = join(dir, 'mandate.yaml')
    await writeFile(
      config,
      `issuer: ${issuer}
policies_dir: ${policies}
data_dir: ${join(dir, 'data')}
signing: { generate_if_missing: true }
trust:
  subjects:
    - { issuer: ${idp.issuer}, algorithms: [RS256] }
admin:
  keys:
    - { name: interop-test, sha256: ${sha256(ADMIN_KEY)}, roles: [responder] }
resource_servers:
  - id: rs/orders
    audiences: [${AUDIENCE}]
    authentication: { method: client_secret_basic, secret_sha256: ${sha256(RS_SECRET)} }
`,
    )
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), LOG_LEVEL: 'warn' }
    for (const k of Object.keys(env)) if (k.startsWith('OTEL_') || k.startsWith('MANDATE_')) delete env[k]
    delete env['DATABASE_URL']
    delete env['REDIS_URL']
    broker = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--config', config], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    broker.stderr!.on('data', (d: Buffer) => (brokerErr += d.toString()))
    broker.stderr!.on('data', logSink('interop broker stderr'))
    broker.stdout!.on('data', logSink('interop broker stdout'))
    for (const deadline = Date.now() + 50_000; ;) {
      if (broker.exitCode !== null) throw new Error(`mandate serve exited ${broker.exitCode}: ${brokerErr}`)
      const ready = await fetch(`${issuer}/readyz`).then(
        (r) => r.ok,
        () => false,
      )
      if (ready) break
      if (Date.now() > deadline) throw new Error(`mandate serve not ready in 50 s: ${brokerErr}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    const insecure = { [oauth.allowInsecureRequests]: true }
    metadata = await oauth.processDiscoveryResponse(new URL(issuer), await oauth.discoveryRequest(new URL(issuer), { algorithm: 'oauth2', ...insecure }))

    // The agents, each discovering the broker its own way.
    const [byOauth4webapi, byOpenidClient, byMandateClient] = AGENTS as [AgentSpec, AgentSpec, AgentSpec]
    getters.set(byOauth4webapi.name, async (subject_token, audience, scope) => {
      const client: oauth.Client = { client_id: byOauth4webapi.id }
      const response = await oauth.genericTokenEndpointRequest(
        metadata,
        client,
        oauth.ClientSecretBasic(byOauth4webapi.secret),
        TOKEN_EXCHANGE,
        { subject_token, subject_token_type: ACCESS_TOKEN_TYPE, audience, scope },
        insecure,
      )
      return (await oauth.processGenericTokenEndpointResponse(metadata, client, response)).access_token
    })
    const openidConfig = await openid.discovery(new URL(issuer), byOpenidClient.id, undefined, openid.ClientSecretBasic(byOpenidClient.secret), {
      algorithm: 'oauth2',
      execute: [openid.allowInsecureRequests],
    })
    getters.set(
      byOpenidClient.name,
      async (subject_token, audience, scope) =>
        (await openid.genericGrantRequest(openidConfig, TOKEN_EXCHANGE, { subject_token, subject_token_type: ACCESS_TOKEN_TYPE, audience, scope }))
          .access_token,
    )
    const mandateClient = createClient({ issuer, clientId: byMandateClient.id, auth: clientSecret(byMandateClient.secret) })
    getters.set(byMandateClient.name, async (subjectToken, audience, scope) => (await mandateClient.getToken({ subjectToken, audience, scope })).accessToken)

    // The resource servers. Each answers GET /orders with the user and agent it saw, or 401 with why.
    const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri!))
    const joseServer = createServer((req, res) => {
      const token = /^Bearer ([^ ]+)$/.exec(req.headers.authorization ?? '')?.[1] ?? ''
      jwtVerify(token, jwks, { issuer, audience: AUDIENCE, typ: 'at+jwt', algorithms: ['ES256'] }).then(
        ({ payload }) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sub: payload.sub, agent: payload['client_id'] })),
        (err: unknown) => {
          const detail =
            err instanceof joseErrors.JWTClaimValidationFailed ? `${err.code} ${err.claim}` : err instanceof joseErrors.JOSEError ? err.code : 'error'
          res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer error="invalid_token"' }).end(JSON.stringify({ detail }))
        },
      )
    })
    urls.set('jose', await listen(joseServer))
    servers.push(joseServer)

    // RFC 9068 strict: typ at+jwt, and iat, sub, client_id and jti present. No clock tolerance: it refuses at exp exactly.
    const bearer = express()
    bearer.use(auth({ issuerBaseURL: issuer, audience: AUDIENCE, tokenSigningAlg: 'ES256', strict: true, clockTolerance: 0 }))
    bearer.get('/orders', (req, res) => {
      res.json({ sub: req.auth?.payload.sub, agent: req.auth?.payload['client_id'] })
    })
    bearer.use(expressErrors)
    const bearerServer = createServer(bearer)
    urls.set('express-oauth2-jwt-bearer', await listen(bearerServer))
    servers.push(bearerServer)

    const jwt = express()
    jwt.use(
      expressjwt({
        secret: expressJwtSecret({ jwksUri: metadata.jwks_uri!, cache: true, rateLimit: true }) as GetVerificationKey,
        algorithms: ['ES256'],
        issuer,
        audience: AUDIENCE,
      }),
    )
    jwt.get('/orders', (req, res) => {
      // express-jwt puts the claims where express-oauth2-jwt-bearer's type augmentation says something else is.
      const claims = (req as unknown as { auth?: Record<string, unknown> }).auth
      res.json({ sub: claims?.['sub'], agent: claims?.['client_id'] })
    })
    jwt.use(expressErrors)
    const jwtServer = createServer(jwt)
    urls.set('express-jwt + jwks-rsa', await listen(jwtServer))
    servers.push(jwtServer)

    verifier = createVerifier({ issuer, audience: AUDIENCE, credentials: { clientId: 'rs/orders', clientSecret: RS_SECRET } })
    await verifier.ready()
    const v = verifier
    const verifierServer = createServer((req, res) => {
      const headers = new Headers()
      if (req.headers.authorization !== undefined) headers.set('authorization', req.headers.authorization)
      void v.authenticate(new Request(`http://localhost${req.url ?? '/'}`, { headers }), { scopes: [SCOPE] }).then((result) => {
        if (!result.ok)
          res
            .writeHead(result.status, { ...result.headers, 'content-type': 'application/json' })
            .end(JSON.stringify({ detail: `${result.error?.error ?? ''} ${result.reason}` }))
        else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sub: result.token.sub, agent: result.token.client_id }))
      })
    })
    urls.set('@mandate/verifier', await listen(verifierServer))
    servers.push(verifierServer)

    if (NGINX_HERE) {
      // The upstream behind nginx does no authentication: it reports the headers nginx copied from the broker's decision.
      const upstream = createServer((req, res) => {
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ sub: req.headers['x-mandate-subject'], agent: req.headers['x-mandate-agent'] }))
      })
      const upstreamPort = Number(new URL(await listen(upstream)).port)
      servers.push(upstream)
      const nginxPort = await freePort()
      nginx = await startNginx(dir, await serverBlockFromDoc(port, upstreamPort, nginxPort))
      const front = `http://127.0.0.1:${nginxPort}/orders`
      for (const deadline = Date.now() + 30_000; ;) {
        if (nginx.child.exitCode !== null) throw new Error(`nginx exited with ${nginx.child.exitCode}: ${nginx.lines.slice(-5).join('\n')}`)
        // 401 for a request without a token once nginx is up (the broker is).
        if (
          (await fetch(front).then(
            (r) => r.status,
            () => 0,
          )) === 401
        )
          break
        if (Date.now() > deadline) throw new Error(`nginx not ready in 30 s: ${nginx.lines.slice(-5).join('\n')}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      urls.set('nginx forward auth', front)
    }
  }, 120_000)

  afterAll(async () => {
    await nginx?.stop()
    await verifier?.close()
    for (const server of servers) await close(server)
    await stopChild(broker, 'SIGTERM')
    await idp?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
    const figures = [...refusedAfter].map(([rs, ms]) => `${rs} ${ms.map((m) => m.toFixed(0)).join(', ')} ms`).join('; ')
    console.log(`interop matrix: ${((performance.now() - startedAt) / 1000).toFixed(1)} s with one broker; kill to first refusal: ${figures}`)
  })

  /** A user of the upstream IdP signs in; a token for the broker. */
  async function userToken(login: string): Promise<string> {
    return (await idp!.signIn(login, issuer)).access_token
  }

  async function call(rs: ResourceServerSpec, token: string): Promise<Response> {
    return fetch(urls.get(rs.name)!, { headers: { authorization: `Bearer ${token}` } })
  }

  /** The broker's own view of a token, for `audience`: forward auth's status (200 live, 401 not). */
  async function brokerSays(token: string, audience: string): Promise<number> {
    const res = await fetch(`${issuer}/forward-auth?audience=${encodeURIComponent(audience)}`, { headers: { authorization: `Bearer ${token}` } })
    await res.body?.cancel()
    return res.status
  }

  /** Kills the agent for that user only (RFC 9493 iss_sub), through the admin API; resolves at the 201. */
  async function kill(agent: AgentSpec, login: string): Promise<void> {
    const res = await fetch(`${issuer}/admin/revocations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ agent: agent.id, sub: login, iss: idp!.issuer, reason: 'interop e2e' }),
    })
    expect(res.status, await res.clone().text()).toBe(201)
  }

  /** Calls the resource server until `stop` says so or `ms` pass: every call, in order. */
  async function callUntil(rs: ResourceServerSpec, token: string, ms: number, stop: (c: Call) => boolean): Promise<Call[]> {
    const calls: Call[] = []
    const start = performance.now()
    while (performance.now() - start < ms) {
      const sentAt = performance.now()
      const sentEpochMs = Date.now()
      const res = await call(rs, token)
      await res.body?.cancel()
      const c = { sentAt, answeredAt: performance.now(), sentEpochMs, answeredEpochMs: Date.now(), status: res.status }
      calls.push(c)
      if (stop(c)) break
      // A call every few ms at most: several rows may poll at once on a 2-core machine.
      await new Promise((r) => setTimeout(r, 10))
    }
    return calls
  }

  const rows = (rs: ResourceServerSpec) => AGENTS.map((agent) => ({ agent, rs }))

  describe.each(RESOURCE_SERVERS)('resource server: $name', (rs) => {
    const available = rs.needsNginx !== true || NGINX_HERE
    /** A user per pair: a kill in one row never touches another. */
    const loginOf = (agent: AgentSpec, what: string) => `${what}-${agent.name}-${rs.name}`.replace(/[^a-z0-9]+/gi, '-').toLowerCase()
    const row = available ? it : it.skip

    row.for(rows(rs))(
      'agent $agent.name: 200 with the user and agent; a live token for another audience is 401',
      { timeout: 30_000 },
      async ({ agent }, { expect }) => {
        const login = loginOf(agent, 'user')
        const subject = await userToken(login)
        const get = getters.get(agent.name)!
        const token = await get(subject, AUDIENCE, SCOPE)
        expect(decodeJwt(token)).toMatchObject({ aud: AUDIENCE, sub: login, client_id: agent.id })

        const ok = await call(rs, token)
        const okBody = await ok.text()
        expect(ok.status, okBody).toBe(200)
        expect(JSON.parse(okBody) as Seen).toEqual({ sub: login, agent: agent.id })

        const other = await get(subject, OTHER_AUDIENCE, OTHER_SCOPE)
        // Live, for its own audience: the refusal below is the audience's doing, nothing else's.
        expect(await brokerSays(other, OTHER_AUDIENCE)).toBe(200)
        const refused = await call(rs, other)
        const refusedBody = await refused.text()
        expect(refused.status, refusedBody).toBe(401)
        expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer\b/)
        if (rs.wrongAudience !== undefined) expect((JSON.parse(refusedBody) as { detail: string }).detail).toMatch(rs.wrongAudience)
        else expect(refused.headers.get('www-authenticate')).toMatch(/error="invalid_token"/)
      },
    )

    if (rs.seesKills) {
      // One row at a time: each measures a bound in milliseconds.
      row.for(rows(rs))(
        `agent $agent.name: after a kill, the next call is refused within ${KILL_BOUND_MS} ms`,
        { timeout: 30_000 },
        async ({ agent }, { expect }) => {
          const login = loginOf(agent, 'killed')
          const token = await getters.get(agent.name)!(await userToken(login), AUDIENCE, SCOPE)
          const exp = decodeJwt(token).exp! * 1000
          expect((await call(rs, token)).status).toBe(200)

          await kill(agent, login)
          const killedAt = performance.now()
          const calls = await callUntil(rs, token, 5_000, (c) => c.status !== 200)
          const refusal = calls.at(-1)!
          expect(refusal.status, `statuses: ${calls.map((c) => c.status).join(',')}`).toBe(401)
          // Refused for the kill, not for expiry: the token was still unexpired.
          expect(refusal.answeredEpochMs).toBeLessThan(exp)
          refusedAfter.set(rs.name, [...(refusedAfter.get(rs.name) ?? []), refusal.answeredAt - killedAt])
          expect(refusal.answeredAt - killedAt).toBeLessThan(KILL_BOUND_MS)
        },
      )
    } else {
      // Concurrently: each row waits out its token's lifetime (at most 3 s), and nothing is timed to the millisecond.
      row.concurrent.for(rows(rs))(
        'agent $agent.name: after a kill, keeps accepting the token until it expires, and refuses it only then',
        { timeout: 30_000 },
        async ({ agent }, { expect }) => {
          const login = loginOf(agent, 'killed')
          const token = await getters.get(agent.name)!(await userToken(login), AUDIENCE, SCOPE)
          const exp = decodeJwt(token).exp! * 1000
          expect((await call(rs, token)).status).toBe(200)

          await kill(agent, login)
          // The kill is in force: the broker itself refuses the token now.
          expect(await brokerSays(token, AUDIENCE)).toBe(401)
          const calls = await callUntil(rs, token, exp - Date.now() + 2_000, (c) => c.sentEpochMs >= exp)
          const statuses = calls.map((c) => `${c.status}@${c.sentEpochMs - exp}ms`).join(',')
          // Every answer given before exp accepted the killed token; the first call after exp was refused.
          expect(
            calls.filter((c) => c.answeredEpochMs < exp && c.status !== 200),
            statuses,
          ).toEqual([])
          expect(calls.filter((c) => c.answeredEpochMs < exp).length, statuses).toBeGreaterThan(0)
          expect(calls.at(-1)!.sentEpochMs, statuses).toBeGreaterThanOrEqual(exp)
          expect(calls.at(-1)!.status, statuses).toBe(401)
        },
      )
    }
  })

  describe('openid-client discovery', () => {
    it('finds the broker through RFC 8414 metadata with algorithm: oauth2, and exchanges a token with genericGrantRequest', async () => {
      const agent = AGENTS[1]!
      const config = await openid.discovery(new URL(issuer), agent.id, undefined, openid.ClientSecretBasic(agent.secret), {
        algorithm: 'oauth2',
        execute: [openid.allowInsecureRequests],
      })
      const server = config.serverMetadata()
      expect(server.issuer).toBe(issuer)
      expect(server.token_endpoint).toBe(`${issuer}/oauth2/token`)
      expect(server.grant_types_supported).toContain(TOKEN_EXCHANGE)

      const login = 'openid-client-discovery'
      const response = await openid.genericGrantRequest(config, TOKEN_EXCHANGE, {
        subject_token: await userToken(login),
        subject_token_type: ACCESS_TOKEN_TYPE,
        audience: AUDIENCE,
        scope: SCOPE,
      })
      expect(response).toMatchObject({ token_type: 'bearer', issued_token_type: ACCESS_TOKEN_TYPE, scope: SCOPE })
      expect(response.expiresIn()).toBeLessThanOrEqual(TOKEN_TTL_SECONDS)
      expect(decodeJwt(response.access_token)).toMatchObject({ iss: issuer, aud: AUDIENCE, sub: login, client_id: agent.id })
    })

    it('without algorithm: oauth2 it asks for OpenID Connect discovery, which the broker does not serve: it is no OpenID Provider', async () => {
      const agent = AGENTS[1]!
      const failed = await openid
        .discovery(new URL(issuer), agent.id, undefined, openid.ClientSecretBasic(agent.secret), { execute: [openid.allowInsecureRequests] })
        .then(
          () => undefined,
          (err: unknown) => err,
        )
      // openid-client's own words for a 404 from the OpenID Connect Discovery path.
      expect(failed).toMatchObject({
        name: 'ClientError',
        code: 'OAUTH_RESPONSE_IS_NOT_CONFORM',
        cause: { status: 404, url: `${issuer}/.well-known/openid-configuration` },
      })
    })
  })
})
