import { DpopError, dpopHeaderValue } from '@mandate/verifier/dpop'
import type { Context } from 'hono'
import { z } from 'zod'
import { GRANT_TYPE_CIBA, GRANT_TYPE_JWT_BEARER, GRANT_TYPE_TOKEN_EXCHANGE, type AgentId } from '../../core/claims.js'
import { redeemApproval, type CibaDeps } from '../../core/ciba.js'
import { redeemIdJag, type IdJagDeps, type IdJagRequest } from '../../core/id-jag.js'
import { DPOP_PROOF_INVALID, loggable, OAuthError } from '../../core/errors.js'
import { exchangeToken, type ExchangeDeps, type ExchangeFailureContext, type ExchangeRequest, type ExchangeResult } from '../../core/exchange.js'
import type { PolicyStore } from '../../policy/port.js'
import { OTHER_AUDIENCE, UNAUTHENTICATED, type MandateMetrics } from '../../telemetry/metrics.js'
import { clientCredentials } from '../client-credentials.js'
import { FormParams, PayloadTooLarge, readForm } from '../form.js'
import { NO_STORE } from '../oauth-errors.js'
import type { RefusalLog } from '../../telemetry/refusal-log.js'
import type { AppEnv } from '../env.js'

/** RFC 8707 §2: a resource is an absolute URI without a fragment. */
function isResourceUri(value: string): boolean {
  try {
    return new URL(value).hash === '' && !value.includes('#')
  } catch {
    return false
  }
}

// The values of the form's parameters that the HTTP layer checks; the same schemas describe them in /openapi.json.
/** A `resource` (RFC 8707 §2). */
export const ResourceUri = z.string().refine(isResourceUri).meta({ format: 'uri' })
/** RFC 6749 §3.3: scope-tokens separated by single spaces; parsed to the distinct tokens. */
export const Scope = z
  .string()
  .regex(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/)
  .transform((s) => [...new Set(s.split(' '))])
/** Mandate extension: `expires_in` asks for a lifetime in seconds, still capped by the policy maximum. */
export const ExpiresIn = z
  .string()
  .regex(/^[1-9][0-9]{0,5}$/)
  .transform(Number)

function requestedTtl(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const ttl = ExpiresIn.safeParse(value)
  if (!ttl.success) throw new OAuthError('invalid_request', 'expires_in must be a positive integer')
  return ttl.data
}

/** `resource` (RFC 8707 §2) and `audience` values of a form, in that order; a malformed resource is `invalid_target`. */
function targetsOf(form: FormParams): string[] {
  const resources = form.all('resource')
  for (const r of resources)
    if (!ResourceUri.safeParse(r).success) throw new OAuthError('invalid_target', 'resource must be an absolute URI without a fragment')
  return [...resources, ...form.all('audience')]
}

/** `scope` parsed (RFC 6749 §3.3); undefined when absent, `invalid_scope` when malformed. */
function scopesOf(form: FormParams): string[] | undefined {
  const scope = form.optional('scope')
  if (scope === undefined) return undefined
  const parsed = Scope.safeParse(scope)
  if (!parsed.success) throw new OAuthError('invalid_scope', 'scope is malformed')
  return parsed.data
}

/**
 * RFC 9449 §4.1: the request's one `DPoP` header, undefined without one; several, or one that is not a
 * compact JWS, are `invalid_dpop_proof` (the proof's checks are core's).
 */
export function dpopOf(c: Context<AppEnv>): string | undefined {
  try {
    return dpopHeaderValue(c.req.header('dpop'))
  } catch (err) {
    if (err instanceof DpopError) throw new OAuthError('invalid_dpop_proof', DPOP_PROOF_INVALID, { detail: `dpop: ${err.detail}` })
    throw err
  }
}

/** RFC 7523 §2.1: the JWT bearer grant's form; the ID-JAG is checked by core/id-jag.ts. */
export function parseIdJagRequest(form: FormParams, authorization: string | undefined, clientAddress: string | undefined, dpop?: string): IdJagRequest {
  const client = clientCredentials(authorization, form)
  return {
    dpop,
    client,
    assertion: form.required('assertion'),
    audiences: targetsOf(form),
    scopes: scopesOf(form),
    requestedTtl: requestedTtl(form.optional('expires_in')),
    clientAddress,
  }
}

/** Step 1 of the exchange (docs/ARCHITECTURE.md): the form, parameter by parameter (RFC 8693 §2.1). */
export function parseExchangeRequest(form: FormParams, authorization: string | undefined, clientAddress: string | undefined, dpop?: string): ExchangeRequest {
  const grantType = form.required('grant_type')
  if (grantType !== GRANT_TYPE_TOKEN_EXCHANGE) {
    throw new OAuthError('unsupported_grant_type', 'this grant type is not supported', { detail: loggable(grantType) })
  }
  const client = clientCredentials(authorization, form)
  const subjectToken = form.required('subject_token')
  const subjectTokenType = form.required('subject_token_type')
  const audiences = targetsOf(form)
  const scopes = scopesOf(form)
  return {
    dpop,
    subjectTokenProof: form.optional('subject_token_dpop'),
    client,
    subjectToken,
    subjectTokenType,
    audiences,
    scopes,
    requestedTokenType: form.optional('requested_token_type'),
    requestedTtl: requestedTtl(form.optional('expires_in')),
    clientAddress,
  }
}

/**
 * The `error_uri` of a recorded denial (RFC 6749 §5.2): a URN naming the
 * request, since the record is behind the admin API and the caller may not
 * read it. A request id is `[A-Za-z0-9._-]{1,64}` (app.ts), so it needs no
 * escaping and stays within the characters §5.2 allows.
 */
export function denialUri(requestId: string): string {
  return `${DENIAL_URN_PREFIX}${requestId}`
}

/** What precedes the request id in a denial's `error_uri`; `mandate audit show` accepts either. */
export const DENIAL_URN_PREFIX = 'urn:mandate:request:'

/**
 * The audience as a metric label: only one the agent's policy grants, so
 * that a client cannot mint label values; `other` for anything else.
 */
function audienceLabel(policies: PolicyStore, agent: AgentId, audiences: readonly string[] | undefined): string {
  const audience = audiences?.[0]
  if (audience === undefined || audiences!.some((a) => a !== audience)) return OTHER_AUDIENCE
  return policies.get(agent)?.grants.has(audience) === true ? audience : OTHER_AUDIENCE
}

/**
 * Counts a request answered without a token, whatever stopped it: the body
 * (413, not a form), the parameters, client authentication (these
 * are counted here and never reach the audit log), or a later step. The
 * agent is named only once authenticated.
 */
function countRefusal(
  metrics: MandateMetrics,
  policies: PolicyStore,
  err: unknown,
  agent: AgentId | undefined,
  audiences: readonly string[] | undefined,
  started: number,
): void {
  // The code the client is sent (a body over the limit is answered invalid_request, 413).
  const code = err instanceof OAuthError ? err.code : err instanceof PayloadTooLarge ? 'invalid_request' : 'server_error'
  const known = agent !== undefined && code !== 'invalid_client'
  metrics.tokenDenied(known ? agent : UNAUTHENTICATED, known ? audienceLabel(policies, agent, audiences) : OTHER_AUDIENCE, code)
  const failed = code === 'server_error' || code === 'temporarily_unavailable'
  metrics.exchangeDuration((performance.now() - started) / 1000, failed ? 'failed' : 'denied')
}

/**
 * CIBA Core §10.1: a poll for an approved token. Answered like an exchange
 * (RFC 8693 §2.2.1), plus the approved `authorization_details` (RFC 9396 §7).
 */
async function poll(c: Context<AppEnv>, form: FormParams, deps: CibaDeps, context: ExchangeFailureContext): Promise<Response> {
  const authReqId = form.required('auth_req_id')
  if (!/^[A-Za-z0-9_-]{16,128}$/.test(authReqId)) throw new OAuthError('invalid_grant', 'auth_req_id is unknown or was used')
  const result = await redeemApproval(
    {
      dpop: dpopOf(c),
      client: clientCredentials(c.req.header('authorization'), form),
      authReqId,
      clientAddress: c.get('clientAddress'),
      traceId: c.get('traceId'),
      requestId: c.get('requestId'),
    },
    deps,
    context,
  )
  return issued(c, result, result.authorizationDetails)
}

/** RFC 8693 §2.2.1 (and RFC 9396 §7's `authorization_details` after an approval), `no-store`; the request log names the token. */
function issued(c: Context<AppEnv>, result: ExchangeResult, authorizationDetails: readonly unknown[] = []): Response {
  c.set('agent', result.claims.client_id)
  c.set('jti', result.claims.jti)
  return c.json(
    {
      access_token: result.accessToken,
      issued_token_type: result.issuedTokenType,
      token_type: result.tokenType,
      expires_in: result.expiresIn,
      scope: result.scope,
      ...(authorizationDetails.length > 0 ? { authorization_details: authorizationDetails } : {}),
    },
    200,
    NO_STORE,
  )
}

/**
 * POST /oauth2/token: parse, call the use-case, render RFC 8693 §2.2.1. A
 * request a rate limit refused is counted in `rateLimited` (one log line per
 * agent per interval) and the metrics, never logged one by one.
 */
export function tokenRoute(deps: ExchangeDeps, maxBodyBytes: number, rateLimited: RefusalLog, metrics?: MandateMetrics, ciba?: CibaDeps, idJag?: IdJagDeps) {
  return async function token(c: Context<AppEnv>): Promise<Response> {
    const started = metrics === undefined ? 0 : performance.now()
    const context: ExchangeFailureContext = { agent: undefined }
    let audiences: readonly string[] | undefined
    // RFC 9449 §8: with nonces on, every answer carries the current one, refusals included.
    const nonce = deps.dpop?.nonce()
    if (nonce !== undefined) c.header('DPoP-Nonce', await nonce)
    try {
      const form = new FormParams(await readForm(c, maxBodyBytes))
      if (ciba !== undefined && form.optional('grant_type') === GRANT_TYPE_CIBA) return await poll(c, form, ciba, context)
      const ids = { traceId: c.get('traceId'), requestId: c.get('requestId') }
      let result: ExchangeResult
      if (idJag !== undefined && form.optional('grant_type') === GRANT_TYPE_JWT_BEARER) {
        const req = { ...parseIdJagRequest(form, c.req.header('authorization'), c.get('clientAddress'), dpopOf(c)), ...ids }
        audiences = req.audiences
        result = await redeemIdJag(req, idJag, context)
      } else {
        const req = { ...parseExchangeRequest(form, c.req.header('authorization'), c.get('clientAddress'), dpopOf(c)), ...ids }
        audiences = req.audiences
        result = await exchangeToken(req, deps, context)
      }
      if (metrics !== undefined) {
        metrics.tokenIssued(result.claims.client_id, audienceLabel(deps.policies, result.claims.client_id, [result.claims.aud]))
        metrics.exchangeDuration((performance.now() - started) / 1000, 'issued')
      }
      return issued(c, result)
    } catch (err) {
      if (context.limited !== undefined && context.agent !== undefined) {
        rateLimited.count(context.limited, context.agent)
        metrics?.rateLimited(context.agent, context.limited)
      }
      if (metrics !== undefined) countRefusal(metrics, deps.policies, err, context.agent, audiences, started)
      // RFC 6749 §5.2 error_uri: the denial's record, which the agent's owner looks up with `mandate audit show`.
      if (context.denialRecorded === true) c.set('errorUri', denialUri(c.get('requestId')))
      throw err
    } finally {
      if (context.agent !== undefined) c.set('agent', context.agent)
    }
  }
}
