/**
 * `Verifier.authenticate`: the request's credentials by scheme (RFC 6750
 * §2.1 Bearer, RFC 9449 §7.1 DPoP with its proof), the token's checks, its
 * binding, the scopes, and the refusal ready to send with a challenge per
 * scheme accepted.
 */
import type { MandateClaims } from './claims.js'
import { checkProof, DpopRefusal, type DpopPolicy } from './dpop-auth.js'
import { challenge, INVALID_TOKEN as INVALID, VerifierError, type VerifierErrorCode, type VerifierReason } from './errors.js'
import type { AuthenticateResult, BearerRequest, RequiredScopes } from './verifier.js'

const NO_STORE = { 'Cache-Control': 'no-store', 'Content-Type': 'application/json' } as const
/** RFC 6750 §2.1, RFC 9449 §7.1: the scheme and a b64token. */
const CREDENTIALS = /^(?:Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*) *$/i
/** One description per code: which check of the proof failed is in `reason` and `detail` only. */
const PROOF_DESCRIPTION = {
  invalid_dpop_proof: 'DPoP proof is invalid',
  use_dpop_nonce: 'a DPoP nonce from the server is required',
  temporarily_unavailable: 'try again',
}

function schemeOf(authorization: string | null): 'Bearer' | 'DPoP' | undefined {
  if (authorization === null) return undefined
  if (/^Bearer(\s|$)/i.test(authorization)) return 'Bearer'
  if (/^DPoP(\s|$)/i.test(authorization)) return 'DPoP'
  return undefined
}

/** What `authenticate` needs of its verifier. */
export interface AuthenticateDeps {
  readonly realm: string
  readonly resourceMetadata: string | undefined
  readonly audience: string
  readonly dpop: DpopPolicy | undefined
  /** Epoch seconds. */
  nowSeconds(): number
  checkScopes(required: RequiredScopes): readonly string[]
  /** Every check of the token but its scopes and its binding; throws `VerifierError`. */
  verifyToken(token: string): Promise<MandateClaims>
  scoped(claims: MandateClaims, scopes: readonly string[]): MandateClaims
  fail(code: VerifierErrorCode, description: string, reason: VerifierReason, detail?: string, scope?: string): VerifierError
}

/** The verifier's `authenticate` (see `Verifier.authenticate`). */
export function createAuthenticate(d: AuthenticateDeps): (req: BearerRequest, required?: RequiredScopes) => Promise<AuthenticateResult> {
  const { realm, resourceMetadata, audience, dpop } = d
  const fail = d.fail.bind(d)
  const bareBearer = challenge('Bearer', realm, undefined, resourceMetadata)
  const bareDpop = dpop === undefined ? undefined : challenge('DPoP', realm, undefined, resourceMetadata, dpop.algorithms)
  /** RFC 9449 §7.2: a server accepting both schemes challenges with both. */
  const bare = bareDpop === undefined ? bareBearer : dpop?.required === true ? bareDpop : `${bareBearer}, ${bareDpop}`
  /** The token of `authorization`, its binding and proof as `scheme` requires, then the scopes. Throws `VerifierError`. */
  async function credentialed(req: BearerRequest, scheme: 'Bearer' | 'DPoP', authorization: string, scopes: readonly string[]): Promise<MandateClaims> {
    const match = CREDENTIALS.exec(authorization)
    if (match === null) throw fail('invalid_request', 'malformed Authorization header', 'malformed_header')
    const token = match[1]!
    const claims = await d.verifyToken(token)
    if (scheme === 'Bearer') {
      // RFC 9449 §7.2: a bound token sent as a Bearer token is refused, or DPoP could be downgraded away.
      if (claims.cnf !== undefined) throw fail('invalid_token', INVALID, 'bound_token_as_bearer')
      return d.scoped(claims, scopes)
    }
    // RFC 9449 §7.1: the proof's key must be the token's; a token bound to none has nothing to check it against.
    if (claims.cnf === undefined) throw fail('invalid_token', INVALID, 'unbound_token_as_dpop')
    try {
      await checkProof(dpop!, {
        header: req.headers.get('dpop'),
        method: req.method,
        url: req.url,
        token,
        jkt: claims.cnf.jkt,
        now: d.nowSeconds(),
        audience,
      })
    } catch (err) {
      if (!(err instanceof DpopRefusal)) throw err
      throw fail(err.code, PROOF_DESCRIPTION[err.code], err.reason, err.detail)
    }
    return d.scoped(claims, scopes)
  }

  /** `refusal` challenged in the request's scheme, then the other scheme's bare challenge when both are accepted. */
  function asAnswered(refusal: VerifierError, scheme: 'Bearer' | 'DPoP'): { error: VerifierError; challenge: string } {
    if (dpop === undefined) return { error: refusal, challenge: refusal.wwwAuthenticate }
    const error =
      scheme === 'Bearer'
        ? refusal
        : new VerifierError(refusal.error, refusal.description, {
            realm,
            reason: refusal.reason,
            scheme: 'DPoP',
            algs: dpop.algorithms,
            ...(resourceMetadata === undefined ? {} : { resourceMetadata }),
            ...(refusal.detail === undefined ? {} : { detail: refusal.detail }),
            ...(refusal.scope === undefined ? {} : { scope: refusal.scope }),
          })
    if (dpop.required) return { error, challenge: error.wwwAuthenticate }
    return { error, challenge: `${error.wwwAuthenticate}, ${scheme === 'Bearer' ? bareDpop! : bareBearer}` }
  }

  async function authenticate(req: BearerRequest, required: RequiredScopes = {}): Promise<AuthenticateResult> {
    const scopes = d.checkScopes(required)
    // RFC 9449 §9: with nonces, every answer carries the current one.
    const nonce: Record<string, string> = dpop?.nonces === undefined ? {} : { 'DPoP-Nonce': await dpop.nonces.current() }
    const authorization = req.headers.get('authorization')
    const scheme = schemeOf(authorization)
    // Credentials of another scheme are no credentials at all (§3.1: no error code); nor is Bearer where only DPoP is accepted.
    if (scheme === undefined || (scheme === 'DPoP' && dpop === undefined) || (scheme === 'Bearer' && dpop?.required === true)) {
      return {
        ok: false,
        status: 401,
        headers: { ...NO_STORE, ...nonce, 'WWW-Authenticate': bare },
        body: JSON.stringify({ error_description: dpop?.required === true ? 'a DPoP-bound access token is required' : 'a bearer token is required' }),
        reason: scheme === 'Bearer' ? 'dpop_required' : 'missing_token',
        error: undefined,
      }
    }
    let refusal: VerifierError
    try {
      return { ok: true, token: await credentialed(req, scheme, authorization!, scopes), headers: nonce }
    } catch (err) {
      if (!(err instanceof VerifierError)) throw err
      refusal = err
    }
    const answered = asAnswered(refusal, scheme)
    const headers: Record<string, string> = { ...NO_STORE, ...nonce, 'WWW-Authenticate': answered.challenge }
    if (refusal.retryAfter !== undefined) headers['Retry-After'] = String(refusal.retryAfter)
    return {
      ok: false,
      status: refusal.status,
      headers,
      body: JSON.stringify({ error: refusal.error, error_description: refusal.description }),
      reason: refusal.reason,
      error: answered.error,
    }
  }
  return authenticate
}
