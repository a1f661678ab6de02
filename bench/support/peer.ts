/**
 * FOR BENCHMARKS ONLY. The reference peer of `npm run bench`, never part
 * of Mandate: nothing under src/ imports it and it is not built into dist/.
 *
 *   tsx bench/support/peer.ts <server.json>     (from bench/support/inputs.ts)
 *
 * What a team would otherwise build on: the `oidc-provider` package with a
 * token-exchange grant registered through its grant-type API
 * (`provider.registerGrantType`), its in-memory adapter, and its own
 * `private_key_jwt` client authentication (agents are its clients, with their
 * public JWKS). The grant verifies the subject token as a JWT (jose: RS256,
 * the IdP's JWKS, issuer, audience = the broker, expiry, `typ: at+jwt`),
 * checks the requested resource and scope against the agent's grants, then
 * issues a JWT access token through the provider's own `AccessToken` class
 * bound to a resource server (`accessTokenFormat: 'jwt'`, ES256), so the
 * provider signs and stores it as it would any access token. The answer is
 * RFC 8693 §2.2.1's.
 *
 * Listens on PORT (127.0.0.1); prints `{"ready":true,"port":…,"token_endpoint":…}`
 * once listening; SIGTERM/SIGINT close it and exit 0.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createLocalJWKSet, jwtVerify } from 'jose'
import { ACCESS_TOKEN_TYPE, settingsFromArgv, TOKEN_EXCHANGE, type ServerSettings } from './inputs.js'

/** oidc-provider ships no types: the little of it this peer touches. */
interface OidcContext {
  oidc: {
    params: Record<string, string | string[] | undefined>
    client: { clientId: string }
    entity(name: string, value: unknown): void
  }
  body: unknown
}
interface AccessTokenInstance {
  resourceServer: unknown
  expiration: number
  save(): Promise<string>
}
interface OidcProvider {
  AccessToken: new (fields: Record<string, unknown>) => AccessTokenInstance
  registerGrantType(name: string, handler: (ctx: OidcContext) => Promise<void>, params?: string[], dupes?: string[]): void
  callback(): (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void
}
type ErrorClass = new (description?: string, detail?: string) => Error
interface OidcProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => OidcProvider
  errors: { InvalidRequest: ErrorClass; InvalidTarget: ErrorClass; InvalidScope: ErrorClass }
}

const settings = settingsFromArgv<ServerSettings>('bench/support/peer.ts', 'server.json')
const port = Number(process.env['PORT'] ?? 0)

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- `as string` keeps TypeScript from resolving the untyped package (TS7016); OidcProviderModule types what is used
const { default: Provider, errors } = (await import('oidc-provider' as string)) as OidcProviderModule
const idpKeys = createLocalJWKSet({ keys: settings.idp.jwks.keys.map((k) => ({ ...k })) })
const grantsByAgent = new Map(settings.agents.map((a) => [a.id, new Map(a.grants.map((g) => [g.audience, g]))]))

/** A resource server as oidc-provider's token formats read it (audience, format, TTL, signing). */
function resourceServer(audience: string, scope: string) {
  return {
    audience,
    scope,
    accessTokenFormat: 'jwt',
    accessTokenTTL: settings.tokenTtl,
    jwt: { sign: { alg: 'ES256' } },
    identifier: () => audience,
    get scopes() {
      return new Set(scope.split(' '))
    },
  }
}

const provider = new Provider(settings.issuer, {
  clients: settings.agents.map((a) => ({
    client_id: a.id,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: a.jwks,
    grant_types: [TOKEN_EXCHANGE],
    response_types: [],
    redirect_uris: [],
  })),
  jwks: { keys: [settings.signing.privateJwk] },
  cookies: { keys: ['bench-peer-cookie-key-0123456789abcdef'] },
  // Its only key is ES256 (the same algorithm the others sign with).
  clientDefaults: { grant_types: [TOKEN_EXCHANGE], id_token_signed_response_alg: 'ES256', response_types: [] },
  ttl: { AccessToken: settings.tokenTtl },
  // RFC 8693 §4.1: the agent acting for the user, as Mandate's tokens carry it.
  extraTokenClaims: async (_ctx: unknown, token: { clientId: string }) => ({ act: { sub: token.clientId } }),
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx: unknown, resource: string) => {
        const api = settings.agents.flatMap((a) => a.grants).find((g) => g.audience === resource)
        if (api === undefined) throw new errors.InvalidTarget()
        return resourceServer(resource, api.scopes.join(' '))
      },
    },
  },
})

const single = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? undefined : v)

provider.registerGrantType(
  TOKEN_EXCHANGE,
  async function tokenExchange(ctx) {
    const { params, client } = ctx.oidc
    if (single(params['subject_token_type']) !== ACCESS_TOKEN_TYPE) throw new errors.InvalidRequest('unsupported subject_token_type')
    const subjectToken = single(params['subject_token'])
    if (subjectToken === undefined) throw new errors.InvalidRequest('missing subject_token')

    let sub: string
    try {
      const { payload } = await jwtVerify(subjectToken, idpKeys, {
        algorithms: ['RS256'],
        typ: 'at+jwt',
        issuer: settings.idp.issuer,
        audience: settings.issuer,
        requiredClaims: ['sub', 'exp', 'iat'],
        clockTolerance: 30,
      })
      sub = payload.sub!
    } catch {
      throw new errors.InvalidRequest('invalid subject_token')
    }

    const resources = [params['resource'], params['audience']].flat().filter((r): r is string => typeof r === 'string')
    const audience = resources[0]
    if (audience === undefined || resources.some((r) => r !== audience)) throw new errors.InvalidTarget('exactly one resource is required')
    const grant = grantsByAgent.get(client.clientId)?.get(audience)
    if (grant === undefined) throw new errors.InvalidTarget('resource not permitted')
    const requested = single(params['scope'])
    const scopes = requested === undefined ? [...grant.default_scopes] : requested.split(' ').filter((s) => s !== '')
    if (scopes.some((s) => !grant.scopes.includes(s))) throw new errors.InvalidScope('scope not permitted')
    const scope = scopes.join(' ')

    const token = new provider.AccessToken({
      accountId: sub,
      client,
      gty: 'token_exchange',
      scope,
    })
    token.resourceServer = resourceServer(audience, grant.scopes.join(' '))
    ctx.oidc.entity('AccessToken', token)
    const value = await token.save()
    ctx.body = { access_token: value, issued_token_type: ACCESS_TOKEN_TYPE, token_type: 'Bearer', expires_in: token.expiration, scope }
  },
  ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'scope', 'resource', 'audience'],
  ['resource', 'audience'],
)

const callback = provider.callback()
const server = createServer((req, res) => callback(req, res))
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: (server.address() as AddressInfo).port, token_endpoint: '/token' })}\n`)
})

function shutdown(): void {
  server.close(() => process.exit(0))
  server.closeAllConnections()
}
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)
