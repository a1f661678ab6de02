import type { Hono, MiddlewareHandler } from 'hono'
import { z } from 'zod'
import { actorsOf, type MandateClaims } from '../../core/claims.js'
import { OAuthError } from '../../core/errors.js'
import { forwardAuthorization } from '../../core/forward-auth.js'
import { tokenStatus, type TokenStatusDeps } from '../../core/token-access.js'
import type { ForwardAuthOutcome, MandateMetrics } from '../../telemetry/metrics.js'
import type { AppContext, AppEnv } from '../env.js'
import { isStorableForm } from '../form.js'
import { BearerError, NO_STORE } from '../oauth-errors.js'
import { checkForwardProof, DPOP_ALGORITHMS, proofRefused, type ForwardProofDeps } from './forward-auth-dpop.js'
import type { DescribeRouteOptions } from 'hono-openapi'
import { described, jsonContent, oauthErrors, parametersOf } from '../openapi.js'
import { Scope } from './token.js'

/**
 * GET /forward-auth's query: set by the proxy's configuration, never by the
 * client (nginx `auth_request`, Traefik `forwardAuth` call a fixed URL).
 * Other parameters are ignored.
 */
export const ForwardAuthQuery = z.object({
  audience: z
    .string()
    .min(1)
    .max(2048)
    .regex(/^[\x21-\x7e]+$/)
    .describe("The protected resource's audience: the token's `aud` must be exactly this (RFC 9068 §4). Must not repeat."),
  scope: Scope.optional().describe(
    "Space-delimited scopes (RFC 6749 §3.3) the resource needs: each must be in the token's `scope` (403 `insufficient_scope` otherwise). Must not repeat.",
  ),
})

/** RFC 6750 §3: the body of a Bearer refusal (the challenge is in `WWW-Authenticate`). */
export const BearerErrorBody = z
  .strictObject({
    error: z.enum(['unauthorized', 'invalid_token', 'insufficient_scope', 'invalid_dpop_proof']),
    error_description: z.string(),
  })
  .meta({
    id: 'BearerError',
    description:
      'A refusal of the bearer token (RFC 6750 §3.1): `invalid_token`, `insufficient_scope`, or `unauthorized` when the request carried no Bearer token ' +
      '(whose challenge then names no error); `invalid_dpop_proof` (RFC 9449 §7.1) for a DPoP-bound token whose proof fails a check. Sent with `Cache-Control: no-store`.',
  })

const xMandate = (description: string) => ({ description, schema: { type: 'string' as const } })
const CLAIM_HEADERS = {
  'X-Mandate-Subject': xMandate(
    "The token's `sub` (the user). Visible ASCII without `%` as is; any other character's UTF-8 bytes percent-encoded (decodeURIComponent restores it).",
  ),
  'X-Mandate-Subject-Issuer': xMandate("The user's issuer (`sub_id.iss`, RFC 9493): a `sub` is unique only within it. Encoded as X-Mandate-Subject."),
  'X-Mandate-Agent': xMandate('The agent holding the token: its `client_id`.'),
  'X-Mandate-Scope': xMandate('The scopes granted, space-separated (RFC 6749 §3.3).'),
  'X-Mandate-Actor-Chain': xMandate(
    'Every agent of the delegation (`act`, RFC 8693 §4.1), newest first, comma-separated: the holder, then who delegated to it.',
  ),
  'X-Mandate-Token-Id': xMandate("The token's `jti`, as the delegation log names it."),
  'Cache-Control': xMandate('`no-store`'),
}
const challenge = (what: string) => ({ 'WWW-Authenticate': xMandate(`RFC 6750 §3: ${what}`) })

const DESCRIPTION =
  "A proxy's question before it forwards a request to a resource server (nginx `auth_request`, Traefik `forwardAuth`): is the request's own " +
  '`Authorization: Bearer` token (RFC 6750 §2.1) a live Mandate token for this audience, with these scopes? Decided in-process: the signature with ' +
  "the broker's keys and the revocation list's local mirror, no database or Redis round trip. No caller authentication: the answer tells only " +
  'what the holder of the token can already learn (docs/security-model.md). X-Forwarded-* headers play no part. Off with `forward_auth.enabled: false`. ' +
  'A DPoP-bound token (`cnf.jkt`) comes as `Authorization: DPoP` with its `DPoP` proof (RFC 9449 §7.1), checked against `X-Original-Method` and ' +
  '`X-Original-URL`, which the proxy sets from the original request; its `jti` is spent once per audience. A bound token sent as Bearer is `invalid_token` (§7.2).'

const forwardAuthResponses: NonNullable<DescribeRouteOptions['responses']> = {
  200: { description: "Allowed. Empty body; the token's claims in headers, each always present.", headers: CLAIM_HEADERS },
  ...oauthErrors(400),
  401: {
    description:
      'No Bearer token (a bare challenge, `unauthorized`), or `invalid_token`: malformed, not Mandate’s, altered, expired, revoked, for another audience, ' +
      'a DPoP-bound token sent as Bearer or an unbound one as DPoP; or `invalid_dpop_proof`: the DPoP proof is missing, malformed, for another method or URL, ' +
      'for another token (`ath`), signed by a key other than the token’s `cnf.jkt`, too old, or replayed (one description for all).',
    headers: challenge(
      '`Bearer realm="mandate"`, with `error="invalid_token"` and `error_description` when a token was sent; to a DPoP request, ' +
        '`DPoP realm="mandate", error="…", error_description="…", algs="…"` (RFC 9449 §7.1).',
    ),
    content: jsonContent(BearerErrorBody),
  },
  403: {
    description: '`insufficient_scope`: the token lacks a scope of `scope`.',
    headers: challenge('`Bearer realm="mandate", error="insufficient_scope", error_description="…", scope="<the scopes asked for>"`.'),
    content: jsonContent(BearerErrorBody),
  },
  ...oauthErrors(500, 503),
}

const forwardAuthSpec: DescribeRouteOptions = {
  tags: ['Forward auth'],
  operationId: 'forwardAuth',
  summary: 'Forward authentication for a proxy in front of a resource server',
  description: DESCRIPTION,
  security: [{ mandateToken: [] }, {}],
  parameters: [
    ...parametersOf('query', ForwardAuthQuery),
    {
      name: 'DPoP',
      in: 'header',
      required: false,
      description: "The original request's DPoP proof (RFC 9449 §4), with `Authorization: DPoP <token>`: one header, never several.",
      schema: { type: 'string' },
    },
    {
      name: 'X-Original-Method',
      in: 'header',
      required: false,
      description:
        "With DPoP: the original request's method (the proof's `htm`), set by the proxy, replacing any the client sent. At /forward-auth/ext-authz the request's own method when absent.",
      schema: { type: 'string' },
    },
    {
      name: 'X-Original-URL',
      in: 'header',
      required: false,
      description:
        "With DPoP: the original request's absolute URL as the client called it (the proof's `htu`: scheme, host, path), set by the proxy, replacing any the client sent. Missing with DPoP: 400.",
      schema: { type: 'string', format: 'uri' },
    },
  ],
  responses: forwardAuthResponses,
}

const forwardAuthExtAuthzSpec: DescribeRouteOptions = {
  ...forwardAuthSpec,
  description:
    "GET /forward-auth for Envoy's `ext_authz` (HTTP service), which asks with the client's method and appends the client's path to `path_prefix`: " +
    "every method is answered alike, and the prefix ends in `&path=` so that the client's path and query land in a parameter that is ignored " +
    '(a client adding `audience` or `scope` repeats it: 400).',
}

/** Every method: Envoy's ext_authz asks with the client's own method (and its path, appended to `path_prefix`). */
export const EXT_AUTHZ_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export interface ForwardAuthDeps extends TokenStatusDeps, ForwardProofDeps {
  readonly metrics?: MandateMetrics
}

/** RFC 6750 §2.1: `Bearer` 1*SP b64token (the scheme is case-insensitive: RFC 9110 §11.1). */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i
/** RFC 9449 §7.1: `DPoP` 1*SP b64token. */
const DPOP = /^DPoP +([A-Za-z0-9\-._~+/]+=*) *$/i
const NO_TOKEN = 'a Bearer access token is required'
const INVALID = 'the access token is invalid, expired, revoked or not for this resource'
const INSUFFICIENT = 'the access token lacks a scope this resource needs'

/**
 * The token of an `Authorization: Bearer` header; undefined when the request
 * carries no Bearer credentials (no header, another scheme: RFC 6750 §3.1
 * answers those with a bare challenge), null when the Bearer credentials are
 * malformed.
 */
export function bearerToken(authorization: string | undefined): string | undefined | null {
  if (authorization === undefined || !/^bearer(\s|$)/i.test(authorization)) return undefined
  return BEARER.exec(authorization)?.[1] ?? null
}

/** As `bearerToken`, for `Authorization: DPoP` (RFC 9449 §7.1). */
export function dpopToken(authorization: string | undefined): string | undefined | null {
  if (authorization === undefined || !/^dpop(\s|$)/i.test(authorization)) return undefined
  return DPOP.exec(authorization)?.[1] ?? null
}

/**
 * A claim as a header value: unchanged when it is visible ASCII without
 * `%`; otherwise every other character's UTF-8 bytes percent-encoded (RFC
 * 3986 §2.1), `%` included, so that no CR, LF or control character reaches
 * a header and `decodeURIComponent` gives the claim back exactly.
 */
export function headerValue(claim: string): string {
  if (/^[\x21-\x24\x26-\x7e]*$/.test(claim)) return claim
  return claim.replace(/[^\x21-\x24\x26-\x7e]/gu, (ch) => Buffer.from(ch, 'utf8').toString('hex').toUpperCase().replace(/../g, '%$&'))
}

/** The headers of an allowed request, each always present (a proxy copying them overwrites a client's own). */
function claimHeaders(claims: MandateClaims): Record<string, string> {
  return {
    ...NO_STORE,
    'X-Mandate-Subject': headerValue(claims.sub),
    'X-Mandate-Subject-Issuer': headerValue(claims.sub_id.iss),
    'X-Mandate-Agent': headerValue(claims.client_id),
    'X-Mandate-Scope': claims.scope.split(' ').map(headerValue).join(' '),
    // RFC 8693 §4.1: newest actor first, the agent holding the token at the head.
    'X-Mandate-Actor-Chain': actorsOf(claims.act).map(headerValue).join(','),
    'X-Mandate-Token-Id': headerValue(claims.jti),
  }
}

/** The query, validated (400 `invalid_request`: the proxy's configuration is at fault, not the client). */
function queryOf(c: AppContext): { readonly audience: string; readonly scopes: readonly string[] } {
  const url = c.req.url
  const at = url.indexOf('?')
  const raw = at < 0 ? '' : url.slice(at + 1)
  if (!isStorableForm(raw)) throw new OAuthError('invalid_request', 'malformed query string')
  const params = new URLSearchParams(raw)
  const input: Record<string, string> = {}
  for (const name of ['audience', 'scope'] as const) {
    const values = params.getAll(name)
    // A repeated parameter is refused, never resolved: under Envoy the client's own query follows the proxy's.
    if (values.length > 1) throw new OAuthError('invalid_request', `${name} must not repeat`)
    // RFC 6749 §3.1: an empty value counts as absent.
    if (values[0] !== undefined && values[0] !== '') input[name] = values[0]
  }
  if (input['audience'] === undefined) throw new OAuthError('invalid_request', 'audience is required')
  const parsed = ForwardAuthQuery.safeParse(input)
  if (!parsed.success) throw new OAuthError('invalid_request', `invalid ${String(parsed.error.issues[0]?.path[0] ?? 'query')}`)
  return { audience: parsed.data.audience, scopes: parsed.data.scope ?? [] }
}

/**
 * GET /forward-auth?audience=AUD[&scope=S]: the decision a proxy in front of
 * a resource server asks for before each request (nginx `auth_request`,
 * Traefik `forwardAuth`, Envoy `ext_authz`), on the request's own
 * `Authorization: Bearer` header (RFC 6750 §2.1). In-process: the token's
 * signature with the broker's keys, its revocation against the local
 * mirror (`tokenStatus`, as introspection); no database or Redis round trip.
 *
 * 200 with an empty body and the token's claims in `X-Mandate-*` headers;
 * 401 (RFC 6750 §3.1 `invalid_token`, or a bare challenge without a Bearer
 * token), 403 `insufficient_scope`, 400 for a bad query, 503 with
 * `Retry-After` when the revocation state is unknown. X-Forwarded-* headers
 * play no part in the decision.
 */
export function forwardAuthRoute(deps: ForwardAuthDeps, ownMethodIsOriginal = false) {
  const count = (outcome: ForwardAuthOutcome) => deps.metrics?.forwardAuthDecision(outcome)
  return async function forwardAuth(c: AppContext): Promise<Response> {
    let query: ReturnType<typeof queryOf>
    try {
      query = queryOf(c)
    } catch (err) {
      count('bad_request')
      throw err
    }
    const authorization = c.req.header('authorization')
    const dpop = dpopToken(authorization)
    const token = dpop ?? bearerToken(authorization)
    if (token === undefined) {
      count('no_token')
      throw new BearerError('missing_token', NO_TOKEN)
    }
    if (token === null) {
      count('invalid_token')
      throw dpop === null
        ? proofRefused('malformed DPoP credentials', deps.dpopAlgorithms)
        : new BearerError('invalid_token', INVALID, 'malformed Bearer credentials')
    }
    const scheme = dpop === undefined ? 'Bearer' : 'DPoP'
    // RFC 9449 §7.1: a refusal of a DPoP request is challenged in its scheme, with the proof algorithms.
    const algs = scheme === 'DPoP' ? (deps.dpopAlgorithms ?? DPOP_ALGORITHMS) : undefined
    const decision = forwardAuthorization(await tokenStatus(token, deps), query.audience, query.scopes, scheme)
    if (decision.claims !== undefined) {
      c.set('jti', decision.claims.jti)
      c.set('agent', decision.claims.client_id)
    }
    // RFC 9449 §7.1: the proof before anything but a refused token is answered (a stolen token learns nothing of its scopes).
    if (scheme === 'DPoP' && decision.outcome !== 'invalid_token') {
      try {
        await checkForwardProof(c, deps, { audience: query.audience, token, jkt: decision.claims.cnf!.jkt, ownMethodIsOriginal })
      } catch (err) {
        count(err instanceof BearerError ? 'invalid_dpop_proof' : err instanceof OAuthError && err.code === 'invalid_request' ? 'bad_request' : 'unavailable')
        throw err
      }
    }
    switch (decision.outcome) {
      case 'allowed':
        count('allowed')
        return c.body(null, 200, claimHeaders(decision.claims))
      case 'invalid_token':
        count(decision.revoked ? 'revoked' : 'invalid_token')
        throw new BearerError('invalid_token', INVALID, decision.detail, undefined, algs)
      case 'insufficient_scope':
        count('insufficient_scope')
        throw new BearerError('insufficient_scope', INSUFFICIENT, `missing=${decision.missing.join(' ')}`, query.scopes.join(' '), algs)
      case 'unavailable':
        count('unavailable')
        throw new OAuthError('temporarily_unavailable', 'revocation state is unknown; try again', { detail: decision.detail, retryAfter: 1 })
    }
  }
}

/**
 * Mounts GET /forward-auth, and /forward-auth/ext-authz for Envoy, which
 * asks with the client's method and appends the client's path to its
 * `path_prefix` (docs/forward-auth.md): the same decision, every method.
 */
export function mountForwardAuth(app: Hono<AppEnv>, deps: ForwardAuthDeps, shed: MiddlewareHandler<AppEnv> | undefined): void {
  const route = forwardAuthRoute(deps)
  if (shed !== undefined) {
    app.use('/forward-auth', shed)
    app.use('/forward-auth/ext-authz', shed)
  }
  app.get('/forward-auth', described(forwardAuthSpec, route))
  for (const method of EXT_AUTHZ_METHODS) {
    app.on(
      method,
      '/forward-auth/ext-authz',
      described(
        { ...forwardAuthExtAuthzSpec, operationId: `forwardAuthExtAuthz${method.charAt(0)}${method.slice(1).toLowerCase()}` },
        forwardAuthRoute(deps, true),
      ),
    )
  }
}
