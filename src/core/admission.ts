import type { Admission } from '../admission/port.js'
import { CLIENT_AUTH_FAILED, DPOP_PROOF_INVALID, OAuthError } from './errors.js'

/** The refusal an admission decision means; undefined when the request was admitted. */
export function admissionRefusal(decision: Admission): OAuthError | undefined {
  switch (decision.outcome) {
    case 'admitted':
      return undefined
    case 'replayed':
      // RFC 7523 §3 item 7: a jti is used once.
      return new OAuthError('invalid_client', CLIENT_AUTH_FAILED, { detail: 'client assertion jti replayed' })
    case 'proof_replayed':
      // RFC 9449 §11.1: a proof is used once.
      return new OAuthError('invalid_dpop_proof', DPOP_PROOF_INVALID, { detail: 'DPoP proof jti replayed' })
    case 'predates_memory':
      // Fail closed: it may have been spent before the replay store lost its memory. A new assertion (or proof) passes.
      return new OAuthError('temporarily_unavailable', 'client assertion or DPoP proof predates the replay store; send a new one', {
        detail: 'client assertion or DPoP proof issued before the replay store began remembering',
        retryAfter: decision.retryAfter,
      })
    case 'limited':
      return new OAuthError('rate_limited', 'rate limit exceeded; try again later', {
        detail: `${decision.scope} rate limit`,
        retryAfter: decision.retryAfter,
      })
  }
}

/** The answer when the admission store cannot decide: nothing is issued on unknown replay or limit state. */
export function admissionUnavailable(cause: unknown): OAuthError {
  return new OAuthError('temporarily_unavailable', 'replay and rate-limit state unavailable; try again', {
    detail: 'admission store unavailable',
    retryAfter: 1,
    cause,
  })
}
