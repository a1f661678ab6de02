/**
 * A real OpenID provider (oidc-provider) as the upstream user issuer of the
 * end-to-end tests: RS256 JWT access tokens (RFC 9068) for the resource
 * indicators it is told of, PKCE required, and its dev interactions, which a
 * user signs in through headlessly (the login form, any login name, then the
 * consent form), as a browser would.
 */
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair } from 'jose'
import * as oauth from 'oauth4webapi'

export const WEB_CLIENT_ID = 'web-app'
const WEB_CLIENT_SECRET = 'web-app-secret-0123456789abcdef0123456789abcdef'
/** Never contacted: the flow stops at the redirect and reads the code from it. */
const REDIRECT_URI = 'https://client.example/cb'
export const IDP_KID = 'idp-rs256-1'

/** oidc-provider ships no types: the little of it used here. */
interface OidcProvider {
  callback(): RequestListener
}
interface OidcProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => OidcProvider
  errors: { InvalidTarget: new () => Error }
}

/** Cookies by name, enough for oidc-provider's session and interaction cookies on one host (ports share cookies, as in a browser). */
export class CookieJar {
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
  get(name: string): string | undefined {
    return this.cookies.get(name)
  }
  set(name: string, value: string): void {
    this.cookies.set(name, value)
  }
}

/** Where a browser that followed a link ended up: the first answer that is neither a redirect nor one of the provider's forms. */
export interface BrowsedTo {
  readonly url: string
  readonly status: number
  readonly html: string
  /** The login and consent prompts the provider showed on the way. */
  readonly prompts: readonly string[]
}

/** Fills the provider's dev login (any login name) and consent forms; the form to post next, or undefined when `html` is none of them. */
function devInteraction(html: string, login: string, at: string): { url: string; init: RequestInit; prompt: string } | undefined {
  const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1]
  const prompt = /name="prompt" value="([^"]+)"/.exec(html)?.[1]
  if (action === undefined || (prompt !== 'login' && prompt !== 'consent')) return undefined
  const form: Record<string, string> = prompt === 'login' ? { prompt: 'login', login, password: 'any password' } : { prompt: 'consent' }
  return {
    url: new URL(action.replace(/&amp;/g, '&'), at).href,
    init: { method: 'POST', body: new URLSearchParams(form).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } },
    prompt,
  }
}

export interface UpstreamIdp {
  /** `http://localhost:<port>` */
  readonly issuer: string
  /** Its metadata, as its client (the web app the user signs in to) discovered it. */
  readonly metadata: oauth.AuthorizationServer
  /** `METHOD /path` of every request it received. */
  readonly requests: readonly string[]
  /**
   * A user signs in to the web app: authorization request with PKCE and a
   * resource indicator (RFC 8707), the login form (any login name), the
   * consent form, then the code exchanged at the token endpoint. Throws unless
   * both forms were shown.
   */
  signIn(login: string, resource: string): Promise<oauth.TokenEndpointResponse>
  /**
   * A browser with `jar` opens `start` and follows every redirect, signing in
   * as `login` at the provider's forms, until a page that is not the
   * provider's form answers (a relying party's own page).
   */
  browse(start: string, login: string, jar: CookieJar): Promise<BrowsedTo>
  /** Stops listening (idempotent). */
  stop(): Promise<void>
}

/** Another client of the provider: a relying party that signs people in (code flow, PKCE, client_secret_basic). */
export interface IdpClient {
  readonly client_id: string
  readonly client_secret: string
  readonly redirect_uris: readonly string[]
}

export interface UpstreamIdpOptions {
  /** Resource indicator to the `aud` of the tokens issued for it; any other is `invalid_target`. */
  readonly resourceServers: Readonly<Record<string, string>>
  /** The scopes every resource offers and every sign-in asks for, space-separated. */
  readonly scope: string
  /** More clients than the web app. */
  readonly clients?: readonly IdpClient[]
  /** Claims of an account besides `sub` (`email`, `groups`), in its ID token for the scopes asked (`email`, `groups`). */
  readonly claims?: (sub: string) => Record<string, unknown>
}

/** Starts the provider on 127.0.0.1, port chosen by the OS. */
export async function startUpstreamIdp(options: UpstreamIdpOptions): Promise<UpstreamIdp> {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- `as string` keeps TypeScript from resolving the untyped package (TS7016); OidcProviderModule types what is used
  const { default: Provider, errors } = (await import('oidc-provider' as string)) as OidcProviderModule
  const keys = await generateKeyPair('RS256', { extractable: true })
  const jwk = { ...(await exportJWK(keys.privateKey)), kid: IDP_KID, alg: 'RS256', use: 'sig' }

  // The port first: the issuer is the provider's real URL.
  let handler: RequestListener = (_req, res) => {
    res.statusCode = 503
    res.end()
  }
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => handler(req, res))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const issuer = `http://localhost:${(server.address() as AddressInfo).port}`

  const idp = new Provider(issuer, {
    clients: [
      {
        client_id: WEB_CLIENT_ID,
        client_secret: WEB_CLIENT_SECRET,
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      ...(options.clients ?? []).map((c) => ({
        ...c,
        redirect_uris: [...c.redirect_uris],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      })),
    ],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
    // The ID token carries the scopes' claims (a relying party reads it, not userinfo); the web app asks for no ID token.
    conformIdTokenClaims: false,
    jwks: { keys: [jwk] },
    cookies: { keys: ['e2e-cookie-signing-key-0123456789'] },
    findAccount: async (_ctx: unknown, sub: string) => ({ accountId: sub, claims: async () => ({ ...options.claims?.(sub), sub }) }),
    pkce: { required: () => true },
    ttl: { AccessToken: 3600, AuthorizationCode: 60, Grant: 3600, Interaction: 600, Session: 3600 },
    features: {
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx: unknown, _client: unknown, oneOf?: string[]) => oneOf ?? Object.keys(options.resourceServers)[0],
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: unknown, resourceIndicator: string) => {
          const audience = options.resourceServers[resourceIndicator]
          if (audience === undefined) throw new errors.InvalidTarget()
          return { scope: options.scope, audience, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }
        },
      },
    },
  })
  const requests: string[] = []
  const callback = idp.callback()
  handler = (req, res) => {
    requests.push(`${req.method ?? ''} ${new URL(req.url ?? '/', issuer).pathname}`)
    return callback(req, res)
  }

  const insecure = { [oauth.allowInsecureRequests]: true }
  const metadata = await oauth.processDiscoveryResponse(new URL(issuer), await oauth.discoveryRequest(new URL(issuer), { algorithm: 'oidc', ...insecure }))

  async function signIn(login: string, resource: string): Promise<oauth.TokenEndpointResponse> {
    const webApp: oauth.Client = { client_id: WEB_CLIENT_ID }
    const verifier = oauth.generateRandomCodeVerifier()
    const state = oauth.generateRandomState()
    const authorize = new URL(metadata.authorization_endpoint!)
    authorize.search = new URLSearchParams({
      client_id: WEB_CLIENT_ID,
      redirect_uri: REDIRECT_URI,
      response_type: 'code',
      scope: options.scope,
      resource,
      state,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    }).toString()

    const jar = new CookieJar()
    let url = authorize.href
    let init: RequestInit = {}
    let redirect: URL | undefined
    const prompts: string[] = []
    for (let hop = 0; hop < 20 && redirect === undefined; hop++) {
      const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: jar.header() } })
      jar.store(res)
      if (res.status >= 300 && res.status < 400) {
        await res.body?.cancel()
        const location = new URL(res.headers.get('location')!, url)
        if (location.href.startsWith(REDIRECT_URI)) redirect = location
        url = location.href
        init = {}
        continue
      }
      const html = await res.text()
      if (res.status !== 200) throw new Error(`sign-in of ${login}: ${res.status} at ${url}: ${html.slice(0, 500)}`)
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1]
      const prompt = /name="prompt" value="([^"]+)"/.exec(html)?.[1]
      if (action === undefined || (prompt !== 'login' && prompt !== 'consent')) throw new Error(`sign-in of ${login}: no login or consent form at ${url}`)
      prompts.push(prompt)
      const form: Record<string, string> = prompt === 'login' ? { prompt: 'login', login, password: 'any password' } : { prompt: 'consent' }
      url = new URL(action.replace(/&amp;/g, '&'), url).href
      init = { method: 'POST', body: new URLSearchParams(form).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } }
    }
    // A real sign-in: the user saw both the login and the consent page.
    if (prompts.join(',') !== 'login,consent') throw new Error(`sign-in of ${login}: saw ${prompts.join(',') || 'no form'}, not login then consent`)
    if (redirect === undefined) throw new Error(`sign-in of ${login}: never redirected back to the web app`)

    const params = oauth.validateAuthResponse(metadata, webApp, redirect, state)
    const response = await oauth.authorizationCodeGrantRequest(metadata, webApp, oauth.ClientSecretBasic(WEB_CLIENT_SECRET), params, REDIRECT_URI, verifier, {
      ...insecure,
      additionalParameters: { resource },
    })
    return oauth.processAuthorizationCodeResponse(metadata, webApp, response)
  }

  async function browse(start: string, login: string, jar: CookieJar): Promise<BrowsedTo> {
    let url = start
    let init: RequestInit = {}
    const prompts: string[] = []
    for (let hop = 0; hop < 20; hop++) {
      const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: jar.header() } })
      jar.store(res)
      if (res.status >= 300 && res.status < 400) {
        await res.body?.cancel()
        url = new URL(res.headers.get('location')!, url).href
        init = {}
        continue
      }
      const html = await res.text()
      const next = url.startsWith(issuer) && res.status === 200 ? devInteraction(html, login, url) : undefined
      if (next === undefined) return { url, status: res.status, html, prompts }
      prompts.push(next.prompt)
      url = next.url
      init = next.init
    }
    throw new Error(`browsing from ${start}: more than 20 hops`)
  }

  async function stop(): Promise<void> {
    if (!server.listening) return
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeAllConnections()
    await closed
  }

  return { issuer, metadata, requests, signIn, browse, stop }
}
