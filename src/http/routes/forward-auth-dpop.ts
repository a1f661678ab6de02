/**
 * DPoP at GET /forward-auth (RFC 9449 §7.1): the proof of a DPoP-bound
 * token, checked against the original request's method and URL as the
 * proxy passes them (`X-Original-Method`, `X-Original-URL`), and its `jti`
 * spent once per audience in the broker's shared replay store (§11.1).
 */
import { DPOP_ALGORITHMS, DpopError, dpopHeaderValue, verifyDpopProof, type DpopProof } from '@mandate/verifier/dpop'
import type { AdmissionStore } from '../../admission/port.js'
import { proofUse } from '../../core/dpop.js'
import { DPOP_PROOF_INVALID, OAuthError } from '../../core/errors.js'
import type { AppContext } from '../env.js'
import { BearerError } from '../oauth-errors.js'

export { DPOP_ALGORITHMS }

/** How far ahead of the broker's clock a proof's `iat` may be (`verifyDpopProof`'s default; one description for every failure is `DPOP_PROOF_INVALID`). */
const PROOF_SKEW_SECONDS = 5

export interface ForwardProofDeps {
  /** Spends the proofs' `jti`s, shared by every broker instance. */
  readonly admission: AdmissionStore
  /** Epoch seconds. */
  readonly now: () => number
  /** Proof algorithms accepted: the broker's `dpop.algorithms`. Default `DPOP_ALGORITHMS`. */
  readonly dpopAlgorithms?: readonly string[]
}

/** A refused proof: 401 `invalid_dpop_proof`, challenged with the DPoP scheme. */
export function proofRefused(detail: string, algorithms: readonly string[] = DPOP_ALGORITHMS): BearerError {
  return new BearerError('invalid_dpop_proof', DPOP_PROOF_INVALID, detail, undefined, algorithms)
}

/**
 * The original request's method and absolute URL, as the proxy passed
 * them. The proxy sets both itself, replacing any a client sent (nginx
 * `proxy_set_header`); their absence is the proxy's configuration at fault
 * (400, as a bad `audience`). At /forward-auth/ext-authz, Envoy asks with
 * the client's method, which stands in for a missing `X-Original-Method`.
 */
function originalRequest(c: AppContext, ownMethodIsOriginal: boolean): { method: string; url: string } {
  const method = c.req.header('x-original-method') ?? (ownMethodIsOriginal ? c.req.method : undefined)
  const url = c.req.header('x-original-url')
  if (
    method === undefined ||
    !/^[A-Z]{1,16}$/.test(method) ||
    url === undefined ||
    url.length > 8192 ||
    !/^https?:\/\/[^\s]+$/i.test(url) ||
    !URL.canParse(url)
  ) {
    throw new OAuthError('invalid_request', 'a DPoP request needs X-Original-Method and X-Original-URL from the proxy')
  }
  return { method, url }
}

/**
 * The admission store's key of a proof's `jti`. RFC 9449 §11.1: a `jti` is
 * unique per key, and each resource server (audience) keeps its own. `#`
 * starts no agent id (a client assertion's key is `<agent>:<jti>`);
 * `#id-jag:` is the ID-JAG's and `#dpop:` the token endpoint's proofs'. The
 * audience is percent-encoded, so the first two `#` after the prefix delimit
 * it and the thumbprint (base64url).
 */
export function replayKey(audience: string, proof: Pick<DpopProof, 'jkt' | 'jti'>): string {
  return `#dpop-rs:${encodeURIComponent(audience)}#${proof.jkt}#${proof.jti}`
}

/**
 * Checks the DPoP proof of a request carrying `token`, bound to `jkt`, for
 * `audience` (RFC 9449 §4.3, §7.1): one `DPoP` header, signed by the key
 * `jkt` names, for the original method and URL, `ath` the token's hash,
 * `iat` within 60 s; then spends its `jti` under
 * `replayKey`. Throws `BearerError`
 * (`invalid_dpop_proof`), `OAuthError` `invalid_request` (the proxy passed
 * no original method or URL) or `temporarily_unavailable` (the replay store
 * cannot answer, or began remembering after the proof could first be used).
 */
export async function checkForwardProof(
  c: AppContext,
  deps: ForwardProofDeps,
  check: { readonly audience: string; readonly token: string; readonly jkt: string; readonly ownMethodIsOriginal: boolean },
): Promise<void> {
  const original = originalRequest(c, check.ownMethodIsOriginal)
  const algorithms = deps.dpopAlgorithms ?? DPOP_ALGORITHMS
  let proof: DpopProof
  try {
    const value = dpopHeaderValue(c.req.header('dpop'))
    if (value === undefined) throw proofRefused('no DPoP header', algorithms)
    proof = await verifyDpopProof(value, {
      method: original.method,
      url: original.url,
      now: deps.now(),
      accessToken: check.token,
      boundJkt: check.jkt,
      algorithms,
    })
  } catch (err) {
    if (err instanceof DpopError) throw proofRefused(err.detail, algorithms)
    throw err
  }
  const decision = await deps.admission
    .admit({
      assertion: undefined,
      proofs: [proofUse(replayKey(check.audience, proof), proof, PROOF_SKEW_SECONDS)],
      buckets: [],
    })
    .catch((cause: unknown) => {
      throw new OAuthError('temporarily_unavailable', 'replay state unavailable; try again', { detail: 'dpop replay store unreachable', retryAfter: 1, cause })
    })
  switch (decision.outcome) {
    case 'admitted':
    case 'limited':
      return
    case 'replayed':
    case 'proof_replayed':
      throw proofRefused('jti seen before', algorithms)
    case 'predates_memory':
      throw new OAuthError('temporarily_unavailable', 'replay state began after this proof; try again', {
        detail: 'dpop proof issued before the replay store began remembering',
        retryAfter: decision.retryAfter,
      })
  }
}
