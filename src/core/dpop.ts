/**
 * Sender-constrained tokens at the token endpoint (RFC 9449): which proofs
 * a request carries, whether its agent must send one, and whether a
 * DPoP-bound subject token comes with its holder's proof. The proofs'
 * signatures are checked by a `DpopProofVerifier` (tokens/); their `jti`s
 * are spent with the request's admission call, no extra round trip.
 */
import { DPOP_PROOF_INVALID, OAuthError } from './errors.js'
import type { AgentPolicy } from '../policy/port.js'
import type { AssertionUse } from '../admission/port.js'
import type { CheckedProof, DpopProofVerifier, VerifiedSubject } from '../tokens/port.js'

/** The proofs a token request carries, unchecked. */
export interface RequestProofs {
  /** The `DPoP` header (RFC 9449 §4.1): the client's key, which the new token is bound to. */
  readonly dpop?: string | undefined
  /**
   * `subject_token_dpop` (a Mandate parameter): the proof of a DPoP-bound
   * subject token's holder, made with that token's key for this token
   * endpoint, with `ath` of the subject token. The parent agent makes it and
   * hands it to its sub-agent with the token.
   */
  readonly subjectTokenProof?: string | undefined
}

/** The request's proofs, checked. */
export interface CheckedProofs {
  readonly client: CheckedProof | undefined
  readonly subject: CheckedProof | undefined
  /** Every `jti` to spend. */
  readonly uses: readonly AssertionUse[]
}

export const NO_PROOFS: CheckedProofs = { client: undefined, subject: undefined, uses: [] }

/**
 * A checked proof's `jti` to spend under `key` (RFC 9449 §11.1): the earliest
 * it could have been accepted is its `iat` less the skew allowed ahead; it
 * is remembered until it is too old to pass anyway.
 */
export function proofUse(key: string, proof: { readonly iat: number; readonly rememberUntil: number }, skewSeconds: number): AssertionUse {
  return { key, earliestUse: (proof.iat - skewSeconds) * 1000, expiresAt: proof.rememberUntil * 1000 }
}

/**
 * Checks the request's proofs (both at once). Without a verifier (DPoP not
 * configured) a proof is refused rather than ignored: a client that sent one
 * expects a bound token.
 */
export async function checkProofs(verifier: DpopProofVerifier | undefined, req: RequestProofs, subjectToken: string | undefined): Promise<CheckedProofs> {
  if (req.dpop === undefined && req.subjectTokenProof === undefined) return NO_PROOFS
  if (verifier === undefined) throw new OAuthError('invalid_dpop_proof', DPOP_PROOF_INVALID, { detail: 'dpop: not configured' })
  if (req.subjectTokenProof !== undefined && subjectToken === undefined) {
    throw new OAuthError('invalid_request', 'subject_token_dpop goes only with a subject_token')
  }
  const [client, subject] = await Promise.all([
    req.dpop === undefined ? undefined : verifier.check(req.dpop),
    req.subjectTokenProof === undefined ? undefined : verifier.check(req.subjectTokenProof, subjectToken),
  ])
  return { client, subject, uses: [...(client === undefined ? [] : [client.use]), ...(subject === undefined ? [] : [subject.use])] }
}

/** An agent that must use DPoP (its policy, else the config's default) never gets a bearer token (RFC 9449 §5, §10). */
export function dpopRequirementRefusal(policy: AgentPolicy, requiredByDefault: boolean, proofs: CheckedProofs): OAuthError | undefined {
  if (proofs.client !== undefined || !(policy.requireDpop ?? requiredByDefault)) return undefined
  return new OAuthError('invalid_dpop_proof', 'this agent must send a DPoP proof', { detail: 'dpop: required by policy, none sent' })
}

/** What every grant of the token endpoint needs to judge proofs: the verifier and the config's default. */
export interface DpopDeps {
  /** Absent: DPoP is not configured, and a request with a proof is refused. */
  readonly dpop?: DpopProofVerifier | undefined
  /** The config's `dpop.required`, for an agent whose policy says nothing. */
  readonly dpopRequired?: boolean | undefined
}

/**
 * Step 2b of every grant (exchange, CIBA poll, JWT bearer): the request's
 * proofs checked, refused when the agent must use DPoP and sent none.
 * `policy` undefined (gone in a reload): no requirement; the grant refuses it.
 */
export async function requestProofs(deps: DpopDeps, policy: AgentPolicy | undefined, req: RequestProofs, subjectToken?: string): Promise<CheckedProofs> {
  const proofs = await checkProofs(deps.dpop, req, subjectToken)
  const refusal = policy === undefined ? undefined : dpopRequirementRefusal(policy, deps.dpopRequired ?? false, proofs)
  if (refusal !== undefined) throw refusal
  return proofs
}

/** The key a subject token is bound to (`cnf.jkt`, RFC 9449 §6.1), whoever issued it. */
export function subjectBinding(subject: VerifiedSubject): string | undefined {
  const cnf: unknown = subject.kind === 'mandate' ? subject.claims.cnf : subject.claims['cnf']
  if (cnf === undefined) return undefined
  // A confirmation Mandate cannot check (x5t#S256, jwk) binds to something no proof here shows: never a match.
  const jkt = typeof cnf === 'object' && cnf !== null ? (cnf as { jkt?: unknown }).jkt : undefined
  return typeof jkt === 'string' ? jkt : ''
}

/**
 * A DPoP-bound subject token is taken only with its holder's proof (RFC 9449
 * §7: a bound token is worthless without its key); a holder's proof for an
 * unbound one is a client's mistake, refused.
 */
export function subjectProofRefusal(subject: VerifiedSubject, proofs: CheckedProofs): OAuthError | undefined {
  const bound = subjectBinding(subject)
  if (bound === undefined) {
    return proofs.subject === undefined ? undefined : new OAuthError('invalid_request', 'subject_token_dpop was sent for a subject token bound to no key')
  }
  if (proofs.subject === undefined) {
    return new OAuthError('invalid_dpop_proof', 'the subject token is DPoP-bound: send its holder’s proof in subject_token_dpop', {
      detail: 'dpop: bound subject token without its holder’s proof',
    })
  }
  if (proofs.subject.jkt !== bound) return new OAuthError('invalid_dpop_proof', DPOP_PROOF_INVALID, { detail: 'dpop: subject proof by another key' })
  return undefined
}
