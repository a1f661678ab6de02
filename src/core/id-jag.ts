/**
 * The JWT bearer grant (RFC 7523 §2.1) with an Identity Assertion JWT
 * Authorization Grant (draft-ietf-oauth-identity-assertion-authz-grant): an
 * enterprise IdP asserts a user for an agent, and the agent redeems it here
 * for a Mandate token with no consent screen. The ID-JAG's user becomes the
 * token's user exactly as a user token's would, so the agent's policy
 * (users, grants, scopes, hours, approval, lifetime), revocation and the
 * agent's standing decide as for an exchange; the token and its
 * `token.issued` record are an exchange's.
 */
import type { Subject } from './claims.js'
import { TOKEN_TYPE } from './claims.js'
import { admissionUnavailable } from './admission.js'
import { ASSERTION_UNACCEPTABLE, OAuthError, recordable, SUBJECT_TOKEN_UNACCEPTABLE } from './errors.js'
import {
  admit,
  approvalRefusal,
  mintedClaims,
  mintRecorded,
  recordDenial,
  standingRefusal,
  tokenTypeOf,
  type ExchangeDeps,
  type ExchangeFailureContext,
  type ExchangeResult,
  type ExchangeStep,
} from './exchange.js'
import { NO_PROOFS, requestProofs, type RequestProofs } from './dpop.js'
import { evaluatePolicy } from './policy-eval.js'
import type { AdmissionStore, BucketCharge } from '../admission/port.js'
import type { ClientCredentials, IdJagVerifier, VerifiedIdJag } from '../tokens/port.js'

/** RFC 7523 §2.1 as the HTTP layer parsed it, with RFC 8707 `resource`/`audience` and `scope`. */
export interface IdJagRequest extends Pick<RequestProofs, 'dpop'> {
  readonly client: ClientCredentials
  /** The ID-JAG (`assertion`). */
  readonly assertion: string
  readonly audiences: readonly string[]
  /** Undefined when the request left `scope` out. */
  readonly scopes: readonly string[] | undefined
  readonly requestedTtl: number | undefined
  readonly clientAddress: string | undefined
  readonly traceId?: string | undefined
  readonly requestId?: string | undefined
}

const direct = <T>(_name: ExchangeStep, fn: () => T): T => fn()

export interface IdJagDeps extends ExchangeDeps {
  readonly idJag: IdJagVerifier
}

/**
 * A refusal about the user the ID-JAG asserts (the policy's `users:`, a
 * kill of the user) says what any bad assertion says: RFC 7523 §3.1
 * `invalid_grant`, one description, the reason in `detail` only.
 */
function asGrantRefusal(err: unknown): unknown {
  if (err instanceof OAuthError && err.code === 'invalid_request' && err.description === SUBJECT_TOKEN_UNACCEPTABLE) {
    return new OAuthError('invalid_grant', ASSERTION_UNACCEPTABLE, err.detail === undefined ? {} : { detail: err.detail })
  }
  return err
}

/**
 * The audiences to ask the policy for: the request's, each within the
 * ID-JAG's `resource` when it names any; none asked: the ID-JAG's own.
 * The draft: the grant is for those resources and no other.
 */
function audiencesWithin(req: IdJagRequest, grant: VerifiedIdJag): readonly string[] {
  if (grant.resources === undefined) return req.audiences
  if (req.audiences.length === 0) return grant.resources
  const beyond = req.audiences.filter((a) => !grant.resources!.includes(a))
  if (beyond.length > 0) {
    throw new OAuthError('invalid_target', 'resource not granted by the assertion', { detail: `beyond=${beyond.map(recordable).join(' ')}` })
  }
  return req.audiences
}

/** Spends the ID-JAG's `jti` (RFC 7523 §3 item 7: used once), separately from the client's assertion. */
async function spend(admission: AdmissionStore, grant: VerifiedIdJag): Promise<void> {
  const decision = await admission.admit({ assertion: grant.use, buckets: [] }).catch((cause: unknown) => {
    throw admissionUnavailable(cause)
  })
  switch (decision.outcome) {
    case 'admitted':
    case 'limited':
      return
    case 'replayed':
    case 'proof_replayed': // never: no proof is spent here
      throw new OAuthError('invalid_grant', ASSERTION_UNACCEPTABLE, { detail: 'id-jag jti replayed' })
    case 'predates_memory':
      throw new OAuthError('temporarily_unavailable', 'assertion predates the replay store; get a new one', {
        detail: 'id-jag issued before the replay store began remembering',
        retryAfter: decision.retryAfter,
      })
  }
}

/**
 * POST /oauth2/token with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
 * after parsing: authenticates the agent (its assertion and rate limits in
 * one admission call, as an exchange), verifies the ID-JAG for it, checks
 * the request within the ID-JAG's `resource` and `scope`, evaluates the
 * policy, revocation and the agent's standing, spends the ID-JAG's `jti`,
 * then mints and records. Throws `OAuthError`; an authenticated refusal is
 * recorded as `token.denied` first.
 */
export async function redeemIdJag(req: IdJagRequest, deps: IdJagDeps, context: ExchangeFailureContext): Promise<ExchangeResult> {
  const step = deps.step ?? direct
  const policies = deps.policies.snapshot()
  const client = await step('mandate.client.authenticate', () => deps.clients.authenticate(req.client, policies))
  context.agent = client.agent
  const policy = policies.get(client.agent)
  const buckets: BucketCharge[] = policy?.rateLimit.agent === undefined ? [] : [{ scope: 'agent', agent: client.agent, limit: policy.rateLimit.agent }]
  let admitted: Promise<OAuthError | undefined> | undefined
  let proofs = NO_PROOFS
  let sub: Subject | undefined
  let subIssuer: string | undefined
  try {
    if (policy === undefined) throw new OAuthError('unauthorized_client', 'agent has no policy', { detail: `agent=${client.agent}` })
    proofs = await step('mandate.dpop.verify', () => requestProofs(deps, policy, { dpop: req.dpop }))
    if (policy.rateLimit.user === undefined) admitted = admit(deps, client, buckets, context, proofs.uses)
    const grant = await step('mandate.subject.verify', () => deps.idJag.verify(req.assertion, client.agent))
    const user = grant.user
    sub = user.sub
    subIssuer = user.issuer
    if (policy.rateLimit.user !== undefined) {
      admitted = admit(
        deps,
        client,
        [...buckets, { scope: 'user', agent: client.agent, issuer: user.issuer, sub: user.sub, limit: policy.rateLimit.user }],
        context,
        proofs.uses,
      )
    }
    const audiences = audiencesWithin(req, grant)
    const now = deps.now()
    // The ID-JAG's `scope` is the user's authority here, as a user token's own `scope` is: the policy intersects it.
    const decided = step('mandate.policy.evaluate', () =>
      evaluatePolicy({ issuer: deps.issuer, policy, subject: user, chainPolicies: [], audiences, scopes: req.scopes, requestedTtl: req.requestedTtl, now }),
    )
    const needsApproval = approvalRefusal(policy, decided)
    if (needsApproval !== undefined) throw needsApproval
    const standing = step('mandate.revocation.check', () => standingRefusal(deps, policy, decided, user.sub, user.iat, now, client.instance))
    if (standing !== undefined) throw standing
    const refused = await admitted
    if (refused !== undefined) throw refused
    // Last before minting: a refused request leaves the ID-JAG unspent, so its holder may retry within its policy.
    // Should minting or the record fail after this, the ID-JAG stays spent (fail closed): the agent gets a new one.
    await spend(deps.admission, grant)

    const claims = mintedClaims(deps, client.agent, user.sub, decided, now, { jkt: proofs.client?.jkt, instance: client.instance })
    const accessToken = await mintRecorded(deps, step, req, claims, decided, policy)
    return {
      accessToken,
      issuedTokenType: TOKEN_TYPE.accessToken,
      tokenType: tokenTypeOf(claims),
      expiresIn: decided.expiresAt - now,
      scope: claims.scope,
      claims,
    }
  } catch (caught) {
    const err = asGrantRefusal(caught)
    const refused = await (admitted ?? admit(deps, client, buckets, context, proofs.uses))
    if (refused !== undefined) throw refused
    if (err instanceof OAuthError && err.code !== 'temporarily_unavailable' && err.code !== 'server_error') {
      await recordDenial(deps, client.agent, sub, subIssuer, err, req, client.instance)
      context.denialRecorded = true
    }
    throw err
  }
}
