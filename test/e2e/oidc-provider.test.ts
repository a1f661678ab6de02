/**
 * End to end: a real OpenID provider (oidc-provider) is the upstream user
 * issuer; a user signs in through its authorization code flow (dev
 * interactions, driven headlessly); a real OAuth client (oauth4webapi) is the
 * agent and exchanges the user's access token at a broker served over HTTP.
 * The broker finds the provider's keys only through its metadata, and its
 * token validates with stock libraries.
 */
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
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

const RESOURCE = 'https://resource.example'
const OTHER_RESOURCE = 'https://other-api.example'
const AGENT = 'files-agent'
const AGENT_KID = 'files-agent-es256-1'
/** The resource server at RESOURCE, with an identity of its own at the broker. */
const RS = 'rs/files'
const RS_KID = 'rs-files-es256-1'
const WEB_CLIENT_ID = 'web-app'
const WEB_CLIENT_SECRET = 'web-app-secret-0123456789abcdef0123456789abcdef'
/** Never contacted: the flow stops at the redirect and reads the code from it. */
const REDIRECT_URI = 'https://client.example/cb'
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

/** oidc-provider ships no types: the little of it this test touches. */
interface OidcProvider {
  callback(): RequestListener
}
interface OidcProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => OidcProvider
  errors: { InvalidTarget: new () => Error }
}

/** A node:http server on 127.0.0.1, port chosen by the OS, whose handler is set once the port is known. */
async function listenLater(): Promise<{ server: Server; port: number; handle: (h: RequestListener) => void }> {
  let handler: RequestListener = (_req, res) => {
    res.statusCode = 503
    res.end()
  }
  const server = createServer((req: IncomingMessage, res: ServerResponse) => handler(req, res))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, port: (server.address() as AddressInfo).port, handle: (h) => (handler = h) }
}

async function stop(server: Server | ServerType | undefined): Promise<void> {
  if (server === undefined || !server.listening) return
  const s = server as Server
  const closed = new Promise<void>((resolve) => s.close(() => resolve()))
  s.closeAllConnections()
  await closed
}

/** Cookies by name, enough for oidc-provider's session and interaction cookies on one host. */
class CookieJar {
  private readonly cookies = new Map<string, string>()
  store(res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';')
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      const expired = attributes.some((a) => {
        const [k = '', v = ''] = a.split('=').map((x) => x.trim())
        return (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) || (k.toLowerCase() === 'max-age' && Number(v) <= 0)
      })
      if (expired || value === '') this.cookies.delete(name)
      else this.cookies.set(name, value)
    }
  }
  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ')
  }
}

describe('e2e: oidc-provider user tokens exchanged by an oauth4webapi agent at a broker over HTTP', () => {
  let dir: string
  let providerServer: Server | undefined
  let providerIssuer: string
  let brokerServer: ServerType | undefined
  let brokerIssuer: string
  let mandate: Mandate | undefined
  let agentKey: CryptoKey
  let rsKey: CryptoKey
  /** The provider, as its client (the web app the user signs in to) sees it. */
  let provider: oauth.AuthorizationServer
  /** The broker, as the agent sees it. */
  let broker: oauth.AuthorizationServer
  const brokerLogs: string[] = []
  /** `METHOD /path` of every request the provider received. */
  const providerRequests: string[] = []

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
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- `as string` keeps TypeScript from resolving the untyped package (TS7016); OidcProviderModule types what is used
    const { default: Provider, errors } = (await import('oidc-provider' as string)) as OidcProviderModule
    const providerKeys = await generateKeyPair('RS256', { extractable: true })
    const providerJwk = { ...(await exportJWK(providerKeys.privateKey)), kid: 'idp-rs256-1', alg: 'RS256', use: 'sig' }
    const listening = await listenLater()
    providerServer = listening.server
    providerIssuer = `http://localhost:${listening.port}`
    const resourceServers: Record<string, string> = { [brokerIssuer]: brokerIssuer, [OTHER_RESOURCE]: OTHER_RESOURCE }
    const idp = new Provider(providerIssuer, {
      clients: [
        {
          client_id: WEB_CLIENT_ID,
          client_secret: WEB_CLIENT_SECRET,
          redirect_uris: [REDIRECT_URI],
          grant_types: ['authorization_code'],
          response_types: ['code'],
          token_endpoint_auth_method: 'client_secret_basic',
        },
      ],
      jwks: { keys: [providerJwk] },
      cookies: { keys: ['e2e-cookie-signing-key-0123456789'] },
      findAccount: async (_ctx: unknown, sub: string) => ({ accountId: sub, claims: async () => ({ sub }) }),
      pkce: { required: () => true },
      ttl: { AccessToken: 3600, AuthorizationCode: 60, Grant: 3600, Interaction: 600, Session: 3600 },
      features: {
        devInteractions: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: async (_ctx: unknown, _client: unknown, oneOf?: string[]) => oneOf ?? brokerIssuer,
          useGrantedResource: async () => true,
          getResourceServerInfo: async (_ctx: unknown, resourceIndicator: string) => {
            const audience = resourceServers[resourceIndicator]
            if (audience === undefined) throw new errors.InvalidTarget()
            return { scope: 'files:read files:write', audience, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }
          },
        },
      },
    })
    const callback = idp.callback()
    listening.handle((req, res) => {
      providerRequests.push(`${req.method ?? ''} ${new URL(req.url ?? '/', providerIssuer).pathname}`)
      return callback(req, res)
    })

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

    const insecure = { [oauth.allowInsecureRequests]: true }
    provider = await oauth.processDiscoveryResponse(
      new URL(providerIssuer),
      await oauth.discoveryRequest(new URL(providerIssuer), { algorithm: 'oidc', ...insecure }),
    )
    broker = await oauth.processDiscoveryResponse(
      new URL(brokerIssuer),
      await oauth.discoveryRequest(new URL(brokerIssuer), { algorithm: 'oauth2', ...insecure }),
    )
  })

  afterAll(async () => {
    await stop(brokerServer)
    await stop(providerServer)
    await mandate?.close()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  /**
   * A user signs in to the web app at the provider: authorization request with
   * PKCE and a resource indicator, the dev login form (any login name), the
   * consent form, then the code exchanged at the provider's token endpoint.
   */
  async function signIn(login: string, resource: string): Promise<oauth.TokenEndpointResponse> {
    const webApp: oauth.Client = { client_id: WEB_CLIENT_ID }
    const verifier = oauth.generateRandomCodeVerifier()
    const state = oauth.generateRandomState()
    const authorize = new URL(provider.authorization_endpoint!)
    authorize.search = new URLSearchParams({
      client_id: WEB_CLIENT_ID,
      redirect_uri: REDIRECT_URI,
      response_type: 'code',
      scope: 'files:read files:write',
      resource,
      state,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    }).toString()

    const jar = new CookieJar()
    let url = authorize.href
    let init: RequestInit = {}
    let callback: URL | undefined
    const prompts: string[] = []
    for (let hop = 0; hop < 20 && callback === undefined; hop++) {
      const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: jar.header() } })
      jar.store(res)
      if (res.status >= 300 && res.status < 400) {
        await res.body?.cancel()
        const location = new URL(res.headers.get('location')!, url)
        if (location.href.startsWith(REDIRECT_URI)) callback = location
        url = location.href
        init = {}
        continue
      }
      const html = await res.text()
      expect(res.status, html).toBe(200)
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1]
      const prompt = /name="prompt" value="([^"]+)"/.exec(html)?.[1]
      expect(action).toBeDefined()
      expect(['login', 'consent']).toContain(prompt)
      prompts.push(prompt!)
      const form: Record<string, string> = prompt === 'login' ? { prompt: 'login', login, password: 'any password' } : { prompt: 'consent' }
      url = new URL(action!.replace(/&amp;/g, '&'), url).href
      init = { method: 'POST', body: new URLSearchParams(form).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } }
    }
    // A real sign-in: the user saw both the login and the consent page.
    expect(prompts).toEqual(['login', 'consent'])
    expect(callback).toBeDefined()

    const params = oauth.validateAuthResponse(provider, webApp, callback!, state)
    const response = await oauth.authorizationCodeGrantRequest(provider, webApp, oauth.ClientSecretBasic(WEB_CLIENT_SECRET), params, REDIRECT_URI, verifier, {
      [oauth.allowInsecureRequests]: true,
      additionalParameters: { resource },
    })
    return oauth.processAuthorizationCodeResponse(provider, webApp, response)
  }

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
    expect(decodeProtectedHeader(user.access_token)).toMatchObject({ alg: 'RS256', typ: 'at+jwt', kid: 'idp-rs256-1' })
    const upstream = decodeJwt(user.access_token)
    expect(upstream).toMatchObject({ iss: providerIssuer, aud: brokerIssuer, sub: 'alice@example.com', client_id: WEB_CLIENT_ID })

    const jwksPath = new URL(provider.jwks_uri!).pathname
    const response = await exchange(user.access_token, { scope: 'files:read files:write' })
    expect(response.status, brokerLogs.slice(-3).join('\n')).toBe(200)
    // The broker found the provider's keys through its RFC 8414 metadata (no jwks_uri configured), fetching
    // them once: at start, before any token asked (or shared with the first exchange's wait).
    expect(providerRequests).toContain('GET /.well-known/oauth-authorization-server')
    expect(providerRequests.filter((r) => r === `GET ${jwksPath}`)).toHaveLength(1)
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
    expect(providerRequests.filter((r) => r === `GET ${new URL(provider.jwks_uri!).pathname}`)).toHaveLength(1)

    await stop(providerServer)
    await expect(fetch(`${providerIssuer}/.well-known/openid-configuration`)).rejects.toThrow()

    // A token the broker has never seen: its signature is checked with the cached provider keys.
    const response = await exchange(second.access_token)
    expect(response.status).toBe(200)
    const result = await oauth.processGenericTokenEndpointResponse(broker, { client_id: AGENT }, response)
    expect(decodeJwt(result.access_token)).toMatchObject({ sub: 'frank', client_id: AGENT, act: { sub: AGENT } })
  })
})
