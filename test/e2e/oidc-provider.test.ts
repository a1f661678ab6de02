/**
 * End to end: a real OpenID provider (oidc-provider) is the upstream user
 * issuer; a user signs in through its authorization code flow (dev
 * interactions, driven headlessly); a real OAuth client (oauth4webapi) is the
 * agent and exchanges the user's access token at a broker served over HTTP.
 * The broker finds the provider's keys only through its metadata, and its
 * token validates with stock libraries.
 */
import type { Server } from 'node:http'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serve, type ServerType } from '@hono/node-server'
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, type CryptoKey } from 'jose'
import * as oauth from 'oauth4webapi'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { captureLogs } from '../support/log-sink.js'
import { IDP_KID, startUpstreamIdp, WEB_CLIENT_ID, type UpstreamIdp } from '../support/oidc-provider.js'

const RESOURCE = 'https://resource.example'
const OTHER_RESOURCE = 'https://other-api.example'
const AGENT = 'files-agent'
const AGENT_KID = 'files-agent-es256-1'
/** The resource server at RESOURCE, with an identity of its own at the broker. */
const RS = 'rs/files'
const RS_KID = 'rs-files-es256-1'
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

async function stop(server: Server | ServerType | undefined): Promise<void> {
  if (server === undefined || !server.listening) return
  const s = server as Server
  const closed = new Promise<void>((resolve) => s.close(() => resolve()))
  s.closeAllConnections()
  await closed
}

describe('e2e: oidc-provider user tokens exchanged by an oauth4webapi agent at a broker over HTTP', () => {
  let dir: string
  let idp: UpstreamIdp | undefined
  let providerIssuer: string
  let brokerServer: ServerType | undefined
  let brokerIssuer: string
  let mandate: Mandate | undefined
  let agentKey: CryptoKey
  let rsKey: CryptoKey
  /** The broker, as the agent sees it. */
  let broker: oauth.AuthorizationServer
  const brokerLogs: string[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-e2e-'))

    // The broker's port first: its issuer is its real URL, and the provider
    // needs that as the audience of the tokens it issues.
    let app: Mandate['app'] | undefined
    brokerServer = serve({
      fetch: (req, env) => (app === undefined ? new Response(null, { status: 503 }) : app.fetch(req, env)),
      hostname: '127.0.0.1',
      port: 0,
    })
    await new Promise<void>((resolve) => {
      if (brokerServer!.listening) resolve()
      else brokerServer!.once('listening', () => resolve())
    })
    brokerIssuer = `http://localhost:${(brokerServer.address() as AddressInfo).port}`

    // The upstream OpenID provider: RS256, JWT access tokens for the broker.
    idp = await startUpstreamIdp({ resourceServers: { [brokerIssuer]: brokerIssuer, [OTHER_RESOURCE]: OTHER_RESOURCE }, scope: 'files:read files:write' })
    providerIssuer = idp.issuer

    // The agent's key pair: the private half stays here, the public half goes into its policy.
    const agentKeys = await generateKeyPair('ES256', { extractable: true })
    agentKey = agentKeys.privateKey
    const agentJwk = { ...(await exportJWK(agentKeys.publicKey)), kid: AGENT_KID, alg: 'ES256' }
    const rsKeys = await generateKeyPair('ES256', { extractable: true })
    rsKey = rsKeys.privateKey
    const rsJwk = { ...(await exportJWK(rsKeys.publicKey)), kid: RS_KID, alg: 'ES256' }
    const policiesDir = join(dir, 'policies')
    await mkdir(policiesDir)
    await writeFile(
      join(policiesDir, `${AGENT}.yaml`),
      `agent: ${AGENT}
owner: e2e@example.com
purpose: reads and writes files for the user it works for (e2e test)
expires: 2099-01-01
authentication:
  method: private_key_jwt
  jwks: { keys: [${JSON.stringify(agentJwk)}] }
users:
  - issuer: ${providerIssuer}
grants:
  - { audience: ${RESOURCE}, scopes: [files:read, files:write], default_scopes: [files:read] }
token_ttl: { default: 300, max: 600 }
`,
    )

    const sink = captureLogs('oidc-provider broker', brokerLogs).stream
    mandate = await composeMandate(
      Config.parse({
        issuer: brokerIssuer,
        policies_dir: policiesDir,
        data_dir: join(dir, 'data'),
        signing: { generate_if_missing: true },
        // No jwks_uri: the broker must discover it from the provider's metadata.
        trust: { subjects: [{ issuer: providerIssuer, algorithms: ['RS256'] }] },
        resource_servers: [{ id: RS, audiences: [RESOURCE], authentication: { method: 'private_key_jwt', jwks: { keys: [rsJwk] } } }],
        // oauth4webapi's assertions live 60 s. Allowing no more means none of them can predate the
        // replay memory of a broker that has just started, so none is refused as possibly replayed.
        limits: { client_assertion_max_lifetime_seconds: 60 },
        log: { level: 'debug' },
      }),
      { dev: false, logger: createLogger('debug', sink) },
    )
    app = mandate.app
    // Its replay memory began when it started, to the millisecond, and an assertion's iat is in whole
    // seconds: one stamped in that same second may predate it and is refused (fail closed). So the
    // agent makes its first one a second later.
    await new Promise((resolve) => setTimeout(resolve, 1010 - (Date.now() % 1000)))

    broker = await oauth.processDiscoveryResponse(
      new URL(brokerIssuer),
      await oauth.discoveryRequest(new URL(brokerIssuer), { algorithm: 'oauth2', [oauth.allowInsecureRequests]: true }),
    )
  })

  afterAll(async () => {
    await stop(brokerServer)
    await idp?.stop()
    await mandate?.close()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  const signIn = (login: string, resource: string) => idp!.signIn(login, resource)

  /** The agent asks the broker for a token for `subjectToken`, as a stock RFC 8693 client. */
  function exchange(subjectToken: string, extra: Record<string, string> = {}): Promise<Response> {
    return oauth.genericTokenEndpointRequest(
      broker,
      { client_id: AGENT },
      oauth.PrivateKeyJwt({ key: agentKey, kid: AGENT_KID }),
      TOKEN_EXCHANGE,
      { subject_token: subjectToken, subject_token_type: ACCESS_TOKEN_TYPE, resource: RESOURCE, ...extra },
      { [oauth.allowInsecureRequests]: true },
    )
  }

  it('discovers the broker through RFC 8414 metadata at its real URL', () => {
    expect(broker.issuer).toBe(brokerIssuer)
    expect(broker.token_endpoint).toBe(`${brokerIssuer}/oauth2/token`)
    expect(broker.grant_types_supported).toContain(TOKEN_EXCHANGE)
    expect(broker.token_endpoint_auth_methods_supported).toContain('private_key_jwt')
  })

  it('exchanges a signed-in user’s provider token for a delegated token that stock libraries validate', async () => {
    const user = await signIn('alice@example.com', brokerIssuer)
    // The subject token is what the broker is built for: an RFC 9068 JWT for the broker, for a real user.
    expect(decodeProtectedHeader(user.access_token)).toMatchObject({ alg: 'RS256', typ: 'at+jwt', kid: IDP_KID })
    const upstream = decodeJwt(user.access_token)
    expect(upstream).toMatchObject({ iss: providerIssuer, aud: brokerIssuer, sub: 'alice@example.com', client_id: WEB_CLIENT_ID })

    const jwksPath = new URL(idp!.metadata.jwks_uri!).pathname
    const response = await exchange(user.access_token, { scope: 'files:read files:write' })
    expect(response.status, brokerLogs.slice(-3).join('\n')).toBe(200)
    // The broker found the provider's keys through its RFC 8414 metadata (no jwks_uri configured), fetching
    // them once: at start, before any token asked (or shared with the first exchange's wait).
    expect(idp!.requests).toContain('GET /.well-known/oauth-authorization-server')
    expect(idp!.requests.filter((r) => r === `GET ${jwksPath}`)).toHaveLength(1)
    expect(response.headers.get('cache-control')).toBe('no-store')
    const raw = (await response.clone().json()) as Record<string, unknown>
    expect(raw).toMatchObject({
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      scope: 'files:read files:write',
    })
    expect(typeof raw['access_token']).toBe('string')
    expect(Object.keys(raw).sort()).toEqual(['access_token', 'expires_in', 'issued_token_type', 'scope', 'token_type'])
    const result = await oauth.processGenericTokenEndpointResponse(broker, { client_id: AGENT }, response)
    expect(result.expires_in).toBeGreaterThan(0)
    expect(result.expires_in).toBeLessThanOrEqual(300)
    const token = result.access_token

    // oauth4webapi, as a resource server would call it: nothing special beyond plain http on localhost.
    const claims = await oauth.validateJwtAccessToken(broker, new Request(`${RESOURCE}/files`, { headers: { authorization: `Bearer ${token}` } }), RESOURCE, {
      [oauth.allowInsecureRequests]: true,
    })
    expect(claims).toMatchObject({
      iss: brokerIssuer,
      aud: RESOURCE,
      sub: upstream.sub,
      client_id: AGENT,
      act: { sub: AGENT },
      scope: 'files:read files:write',
    })

    // jose, against the JWKS the metadata names.
    const verified = await jwtVerify(token, createRemoteJWKSet(new URL(broker.jwks_uri!)), {
      issuer: brokerIssuer,
      audience: RESOURCE,
      typ: 'at+jwt',
    })
    expect(verified.protectedHeader.typ).toBe('at+jwt')
    expect(verified.payload.sub).toBe('alice@example.com')
    expect(verified.payload['act']).toEqual({ sub: AGENT })
    expect(verified.payload['client_id']).toBe(AGENT)
    // Never outlives the user's token.
    expect(verified.payload.exp!).toBeLessThanOrEqual(upstream.exp!)
  })

  it('a stock client finds introspection and revocation in the metadata: the resource server introspects, the agent revokes', async () => {
    const insecure = { [oauth.allowInsecureRequests]: true }
    expect(broker.introspection_endpoint).toBe(`${brokerIssuer}/oauth2/introspect`)
    expect(broker.revocation_endpoint).toBe(`${brokerIssuer}/oauth2/revoke`)
    expect(broker.introspection_endpoint_auth_methods_supported).toContain('private_key_jwt')
    expect(broker.revocation_endpoint_auth_methods_supported).toContain('private_key_jwt')

    const user = await signIn('carol', brokerIssuer)
    const issued = await exchange(user.access_token)
    expect(issued.status, brokerLogs.slice(-3).join('\n')).toBe(200)
    const token = (await oauth.processGenericTokenEndpointResponse(broker, { client_id: AGENT }, issued)).access_token

    const rs: oauth.Client = { client_id: RS }
    const introspect = async () =>
      oauth.processIntrospectionResponse(
        broker,
        rs,
        await oauth.introspectionRequest(broker, rs, oauth.PrivateKeyJwt({ key: rsKey, kid: RS_KID }), token, insecure),
      )
    expect(await introspect()).toMatchObject({ active: true, client_id: AGENT, aud: RESOURCE, sub: 'carol' })

    const agent: oauth.Client = { client_id: AGENT }
    await oauth.processRevocationResponse(await oauth.revocationRequest(broker, agent, oauth.PrivateKeyJwt({ key: agentKey, kid: AGENT_KID }), token, insecure))
    expect(await introspect()).toEqual({ active: false })
  })

  it('grants the policy’s default scope when the agent names none', async () => {
    const user = await signIn('bob', brokerIssuer)
    const result = await oauth.processGenericTokenEndpointResponse(broker, { client_id: AGENT }, await exchange(user.access_token))
    expect(result.scope).toBe('files:read')
    expect(decodeJwt(result.access_token)).toMatchObject({ sub: 'bob', client_id: AGENT, act: { sub: AGENT } })
  })

  it('refuses a provider token issued for another audience with 400 invalid_request', async () => {
    const user = await signIn('carol', OTHER_RESOURCE)
    expect(decodeJwt(user.access_token)).toMatchObject({ iss: providerIssuer, aud: OTHER_RESOURCE, sub: 'carol' })

    const response = await exchange(user.access_token)
    expect(response.status).toBe(400)
    expect(response.headers.get('cache-control')).toBe('no-store')
    const body = (await response.json()) as Record<string, unknown>
    expect(body['error']).toBe('invalid_request')
    expect(body).not.toHaveProperty('access_token')
  })

  it('refuses a scope beyond the policy with invalid_scope through the stock client', async () => {
    const user = await signIn('dave', brokerIssuer)
    await expect(
      oauth.processGenericTokenEndpointResponse(broker, { client_id: AGENT }, await exchange(user.access_token, { scope: 'files:delete' })),
    ).rejects.toMatchObject({ error: 'invalid_scope', status: 400 })
  })

  // Last: it stops the provider.
  it('keeps exchanging new user tokens with the last good key set once the provider is down', async () => {
    const first = await signIn('erin', brokerIssuer)
    const second = await signIn('frank', brokerIssuer)
    expect((await exchange(first.access_token)).status).toBe(200)
    // One JWKS fetch served every exchange so far.
    expect(idp!.requests.filter((r) => r === `GET ${new URL(idp!.metadata.jwks_uri!).pathname}`)).toHaveLength(1)

    await idp!.stop()
    await expect(fetch(`${providerIssuer}/.well-known/openid-configuration`)).rejects.toThrow()

    // A token the broker has never seen: its signature is checked with the cached provider keys.
    const response = await exchange(second.access_token)
    expect(response.status).toBe(200)
    const result = await oauth.processGenericTokenEndpointResponse(broker, { client_id: AGENT }, response)
    expect(decodeJwt(result.access_token)).toMatchObject({ sub: 'frank', client_id: AGENT, act: { sub: AGENT } })
  })
})
