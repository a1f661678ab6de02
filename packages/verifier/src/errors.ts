/**
 * Codes a verifier answers with: RFC 6750 §3.1, plus `temporarily_unavailable`
 * (RFC 6749 §4.1.2.1) when it cannot tell whether a token is good (revocation
 * state unknown, signing keys unreachable); RFC 9449 §7.1 and §12.2
 * `invalid_dpop_proof` and `use_dpop_nonce` for a DPoP-bound token's proof.
 */
export type VerifierErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'temporarily_unavailable' | 'invalid_dpop_proof' | 'use_dpop_nonce'

/** HTTP status for each code: one exhaustive switch, no default. */
export function verifierStatus(code: VerifierErrorCode): 400 | 401 | 403 | 503 {
  switch (code) {
    case 'invalid_request':
      return 400
    case 'invalid_token':
    case 'invalid_dpop_proof':
    case 'use_dpop_nonce':
      return 401
    case 'insufficient_scope':
      return 403
    case 'temporarily_unavailable':
      return 503
  }
}

/**
 * Why a request was refused, stable for programs (logs, metrics, tests): the
 * RFC 6750 `error` says what the client should do, `reason` which check
 * failed. New reasons may be added; existing ones keep their meaning.
 */
export type VerifierReason =
  /** No bearer token at all (RFC 6750 §3.1: a bare challenge, no error code). */
  | 'missing_token'
  /** An `Authorization: Bearer` header that is not one b64token (§2.1). */
  | 'malformed_header'
  /** Not a compact JWS, or its header or payload is not JSON. */
  | 'malformed_token'
  /** `alg` outside the broker's access-token algorithms (asymmetric only). */
  | 'algorithm_not_allowed'
  /** `typ` is not `at+jwt` (RFC 9068 §4). */
  | 'wrong_type'
  /** No `kid`, or no key of the broker's JWKS has it. */
  | 'unknown_key'
  | 'bad_signature'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  /** A required claim is missing or ill-typed (RFC 9068 §2.2, Mandate's `sub_id`, `act`, `chain`). */
  | 'bad_claims'
  /** A kill in the revocation list covers it: the token, the chain above it, its agent, its user, or its agent for its user. */
  | 'revoked'
  | 'insufficient_scope'
  /** The revocation list is not known to be current (feed silent past `staleAfterMs`, or the broker says its own is stale). */
  | 'revocation_state_unknown'
  /** The broker's metadata or signing keys cannot be fetched. */
  | 'keys_unavailable'
  /** RFC 9449 §7.2: a DPoP-bound token (`cnf.jkt`) presented as a Bearer token. */
  | 'bound_token_as_bearer'
  /** A token bound to no key presented with the DPoP scheme (RFC 9449 §7.1: nothing to bind the proof to). */
  | 'unbound_token_as_dpop'
  /** A Bearer token where this resource server accepts DPoP only (a bare DPoP challenge, as for no token). */
  | 'dpop_required'
  /** `Authorization: DPoP` without a `DPoP` header, or with several (RFC 9449 §4.3 item 1). */
  | 'dpop_proof_missing'
  /** The proof fails a check of RFC 9449 §4.3 (syntax, `typ`, `alg`, signature, `htm`, `htu`, `iat`, `ath`). */
  | 'dpop_proof_invalid'
  /** The proof's key is not the token's `cnf.jkt` (RFC 9449 §7.1). */
  | 'dpop_key_mismatch'
  /** The proof's `jti` was seen before at this resource server (RFC 9449 §11.1). */
  | 'dpop_replayed'
  /** The proof carries no nonce, or one no longer accepted (RFC 9449 §9). */
  | 'dpop_nonce_required'
  /** The replay store cannot record the proof's `jti` (full or unreachable): refused, never let through. */
  | 'dpop_replay_unavailable'

/** The description of every `invalid_token` but an expired or revoked token's: which check failed is in `reason` and `detail` only. */
export const INVALID_TOKEN = 'token is not valid'

/** RFC 7230 quoted-string: `"` and `\` escaped; anything else outside printable ASCII is a programmer mistake. */
function quoted(value: string): string {
  if (!/^[\x20-\x7e]*$/.test(value)) throw new TypeError(`not printable ASCII: ${JSON.stringify(value)}`)
  return `"${value.replace(/["\\]/g, (ch) => `\\${ch}`)}"`
}

/**
 * An RFC 6750 §3 `WWW-Authenticate` challenge. Without `error`, the one for a
 * request that carried no token (§3.1: no error code then).
 */
export function bearerChallenge(
  realm: string,
  error?: { code: VerifierErrorCode; description: string; scope?: string },
  /** RFC 9728 §5.1: where the client finds this resource's metadata. */
  resourceMetadata?: string,
): string {
  return challenge('Bearer', realm, error, resourceMetadata)
}

/**
 * A `WWW-Authenticate` challenge of `scheme`: RFC 6750 §3 for Bearer; for
 * DPoP, RFC 9449 §7.1, the same parameters plus `algs`, the proof
 * algorithms accepted.
 */
export function challenge(
  scheme: 'Bearer' | 'DPoP',
  realm: string,
  error?: { code: VerifierErrorCode; description: string; scope?: string },
  resourceMetadata?: string,
  algs?: readonly string[],
): string {
  const params = [`realm=${quoted(realm)}`]
  if (error !== undefined) {
    params.push(`error=${quoted(error.code)}`, `error_description=${quoted(error.description)}`)
    if (error.scope !== undefined) params.push(`scope=${quoted(error.scope)}`)
  }
  if (resourceMetadata !== undefined) params.push(`resource_metadata=${quoted(resourceMetadata)}`)
  if (scheme === 'DPoP' && algs !== undefined) params.push(`algs=${quoted(algs.join(' '))}`)
  return `${scheme} ${params.join(', ')}`
}

/**
 * Why a token was refused. `error` is the RFC 6750 code, `reason` the stable
 * name of the failed check; `description` is short, safe and sent (in
 * `WWW-Authenticate` and the body); `detail` says more, for logs only (it may
 * name a user or an agent). `wwwAuthenticate` is the header value to answer with.
 */
export class VerifierError extends Error {
  override readonly name = 'VerifierError'
  readonly status: 400 | 401 | 403 | 503
  readonly wwwAuthenticate: string
  readonly detail: string | undefined
  /** `insufficient_scope`: the scopes the resource requires. */
  readonly scope: string | undefined
  /** Seconds, for `temporarily_unavailable` (sent as `Retry-After`). */
  readonly retryAfter: number | undefined

  readonly reason: VerifierReason
  /** The scheme of the challenge (`wwwAuthenticate`). */
  readonly scheme: 'Bearer' | 'DPoP'

  constructor(
    readonly error: VerifierErrorCode,
    readonly description: string,
    options: {
      readonly realm: string
      readonly reason: VerifierReason
      /** RFC 9728 §5.1 `resource_metadata` of the challenge. */
      readonly resourceMetadata?: string
      readonly detail?: string
      /** `insufficient_scope`: the scopes the resource requires, space-delimited. */
      readonly scope?: string
      readonly cause?: unknown
      /** The scheme the challenge names: the one the request used. Default Bearer. */
      readonly scheme?: 'Bearer' | 'DPoP'
      /** DPoP: the proof algorithms accepted (RFC 9449 §7.1 `algs`). */
      readonly algs?: readonly string[]
    },
  ) {
    super(`${error}: ${description}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.status = verifierStatus(error)
    this.reason = options.reason
    this.detail = options.detail
    this.scope = options.scope
    this.retryAfter = error === 'temporarily_unavailable' ? 1 : undefined
    this.scheme = options.scheme ?? 'Bearer'
    this.wwwAuthenticate = challenge(
      this.scheme,
      options.realm,
      { code: error, description, ...(options.scope === undefined ? {} : { scope: options.scope }) },
      options.resourceMetadata,
      options.algs,
    )
  }
}
