import type { AgentId, Jti, MandateClaims, Subject } from './claims.js'
import { actClaim, actorsOf, TOKEN_TYPE } from './claims.js'
import { revocationQuery, revocationRefusal, standingRefusal } from './kill-check.js'
import { admissionRefusal, admissionUnavailable } from './admission.js'
import { approversText } from './approval.js'
import { dpopRequirementRefusal, NO_PROOFS, requestProofs, subjectProofRefusal, type DpopDeps, type RequestProofs } from './dpop.js'
import { loggable, OAuthError, recordable } from './errors.js'
import type { LifecycleStanding } from './lifecycle.js'
import { evaluatePolicy, type Grant } from './policy-eval.js'
import type { AdmissionStore, AssertionUse, BucketCharge } from '../admission/port.js'
import type { AuditLog } from '../audit/port.js'
import type { AgentPolicy, PolicyStore } from '../policy/port.js'
import type { RevocationStore } from '../revocation/port.js'
import type { AuthenticatedClient, ClientAuthenticator, ClientCredentials, SubjectVerifier, TokenMinter } from '../tokens/port.js'

/** A token-exchange request after the HTTP layer parsed it (RFC 8693 §2.1), before any check. */
export interface ExchangeRequest extends RequestProofs {
  readonly client: ClientCredentials
  readonly subjectToken: string
  readonly subjectTokenType: string
  readonly audiences: readonly string[]
  /** Undefined when the request left `scope` out. */
  readonly scopes: readonly string[] | undefined
  readonly requestedTokenType: string | undefined
  readonly requestedTtl: number | undefined
  readonly clientAddress: string | undefined
  /** W3C trace id of the request, recorded with the audit record. */
  readonly traceId?: string | undefined
  /** The id the answer carries (`X-Request-Id`), recorded with the audit record for `mandate audit show`. */
  readonly requestId?: string | undefined
}

export interface ExchangeDeps extends DpopDeps {
  readonly issuer: string
  readonly policies: PolicyStore
  readonly clients: ClientAuthenticator
  readonly subjects: SubjectVerifier
  readonly revocations: RevocationStore
  readonly minter: TokenMinter
  readonly audit: AuditLog
  /** Spends client assertions and draws from the policy's rate limits, in one call per request. */
  readonly admission: AdmissionStore
  /** Epoch seconds. */
  readonly now: () => number
  /** A fresh, unguessable token identifier. */
  readonly newJti: () => Jti
  /** Attestation, dormancy and orphaning, answered from memory; absent: no lifecycle refusals. */
  readonly lifecycle?: LifecycleStanding
  /** Called at each named step; telemetry hangs spans on it. */
  readonly step?: <T>(name: ExchangeStep, fn: () => T) => T
}

export type ExchangeStep =
  | 'mandate.client.authenticate'
  | 'mandate.dpop.verify'
  | 'mandate.subject.verify'
  | 'mandate.policy.evaluate'
  | 'mandate.revocation.check'
  | 'mandate.token.mint'
  | 'mandate.audit.append'

/** RFC 8693 §2.2.1 response, camelCase; `http/` spells it out. */
export interface ExchangeResult {
  readonly accessToken: string
  readonly issuedTokenType: typeof TOKEN_TYPE.accessToken
  /** `DPoP` when the token is bound to the client's key (RFC 9449 §5). */
  readonly tokenType: 'Bearer' | 'DPoP'
  readonly expiresIn: number
  readonly scope: string
  readonly claims: MandateClaims
}

/** Identifies the caller for logs when the exchange fails after authentication. */
export interface ExchangeFailureContext {
  agent: AgentId | undefined
  /** Set when a rate limit refused the request: which one. */
  limited?: BucketCharge['scope'] | undefined
  /** Set once the refusal is in the audit log under the request's id: the answer may then point to it. */
  denialRecorded?: boolean
}

const SUBJECT_TOKEN_TYPES: ReadonlySet<string> = new Set([TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt])
const ISSUABLE_TOKEN_TYPES: ReadonlySet<string> = new Set([TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt])

const direct = <T>(_name: ExchangeStep, fn: () => T): T => fn()
const NO_BUCKETS: readonly BucketCharge[] = []

/**
 * The token exchange, steps 2–8 after the HTTP layer parsed the request.
 * Throws `OAuthError` for every refusal; an authenticated refusal is appended
 * to the audit log before it is thrown. Resolves only once the `token.issued`
 * record is durable.
 */
export async function exchangeToken(req: ExchangeRequest, deps: ExchangeDeps, context: ExchangeFailureContext = { agent: undefined }): Promise<ExchangeResult> {
  // Long, not split: steps 2–8 in their order, each a few lines, sharing what the refusal path needs (client, proofs, admission, user).
  const step = deps.step ?? direct
  checkTokenTypes(req)

  // One policy set for the whole request, even if a reload lands while it is in flight.
  const policies = deps.policies.snapshot()

  // 2. Authenticate the agent. Failures here are metrics, never audit records.
  const client = await step('mandate.client.authenticate', () => deps.clients.authenticate(req.client, policies))
  context.agent = client.agent
  const policy = policies.get(client.agent)
  const agentLimit = policy?.rateLimit.agent
  const userLimit = policy?.rateLimit.user
  const agentBucket: readonly BucketCharge[] = agentLimit === undefined ? NO_BUCKETS : [{ scope: 'agent', agent: client.agent, limit: agentLimit }]

  // One admission call per request: the assertion's and the DPoP proofs' jtis and every rate limit at once,
  // awaited before minting. Without a per-user limit it starts once the proofs are checked and its round
  // trip overlaps steps 3–5; a per-user limit needs the verified user, so then it starts after step 3 (or
  // once a step failed).
  let admitted: Promise<OAuthError | undefined> | undefined
  let proofs = NO_PROOFS

  let sub: Subject | undefined
  let subIssuer: string | undefined
  try {
    if (policy === undefined) {
      // The policy went away between authentication and now (hot reload).
      throw new OAuthError('unauthorized_client', 'agent has no policy', { detail: `agent=${client.agent}` })
    }
    // 2b. DPoP (RFC 9449 §5): the client's key and a bound subject token's holder.
    if (req.dpop !== undefined || req.subjectTokenProof !== undefined) {
      proofs = await step('mandate.dpop.verify', () => requestProofs(deps, policy, req, req.subjectToken))
    } else {
      const mustProve = dpopRequirementRefusal(policy, deps.dpopRequired ?? false, NO_PROOFS)
      if (mustProve !== undefined) throw mustProve
    }
    if (userLimit === undefined) admitted = admit(deps, client, agentBucket, context, proofs.uses)

    // 3. Verify the subject token.
    const subject = await step('mandate.subject.verify', () => deps.subjects.verify(req.subjectToken))
    const subjectId = subject.kind === 'user' ? subject.sub : subject.claims.sub
    sub = subjectId
    const unproven = subjectProofRefusal(subject, proofs)
    if (unproven !== undefined) throw unproven
    // RFC 9493: a user is the issuer and `sub` together.
    subIssuer = subject.kind === 'user' ? subject.issuer : subject.claims.sub_id.iss
    if (userLimit !== undefined) {
      admitted = admit(
        deps,
        client,
        [...agentBucket, { scope: 'user', agent: client.agent, issuer: subIssuer, sub: subjectId, limit: userLimit }],
        context,
        proofs.uses,
      )
    }
    const chainPolicies = subject.kind === 'mandate' ? actorsOf(subject.claims.act).map((a) => policies.get(a)) : []

    // 4. Evaluate the policy.
    const now = deps.now()
    const grant = step('mandate.policy.evaluate', () =>
      evaluatePolicy({
        issuer: deps.issuer,
        policy,
        subject,
        chainPolicies,
        audiences: req.audiences,
        scopes: req.scopes,
        requestedTtl: req.requestedTtl,
        now,
      }),
    )
    const needsApproval = approvalRefusal(policy, grant)
    if (needsApproval !== undefined) throw needsApproval

    // 5. Revocation: the agent and its instance, the user, and every hop and ancestor in the chain.
    const verdict = step('mandate.revocation.check', () =>
      deps.revocations.check(revocationQuery(client, subjectId, grant, subject.kind === 'mandate' ? subject.claims.iat : subject.iat)),
    )
    const revoked = revocationRefusal(verdict)
    if (revoked !== undefined) throw revoked
    // The agent's standing: an overdue attestation, or dormant or orphaned under `suspend`. From memory.
    const standing = deps.lifecycle?.refusal(policy, now)
    if (standing !== undefined) throw standing

    const refused = await admitted
    if (refused !== undefined) throw refused

    // 6–7. Mint and record.
    const claims = mintedClaims(deps, client.agent, subjectId, grant, now, { jkt: proofs.client?.jkt, instance: client.instance })
    const accessToken = await mintRecorded(deps, step, req, claims, grant, policy)

    // 8. RFC 8693 §2.2.1.
    return {
      accessToken,
      issuedTokenType: TOKEN_TYPE.accessToken,
      tokenType: tokenTypeOf(claims),
      expiresIn: grant.expiresAt - now,
      scope: claims.scope,
      claims,
    }
  } catch (err) {
    // A replayed assertion never authenticated anyone, and a request over a limit is one of a flood: neither is recorded.
    const refused = await (admitted ?? admit(deps, client, agentBucket, context, proofs.uses))
    if (refused !== undefined) throw refused
    if (err instanceof OAuthError && err.code !== 'temporarily_unavailable' && err.code !== 'server_error') {
      await recordDenial(deps, client.agent, sub, subIssuer, err, req, client.instance)
      context.denialRecorded = true
    }
    throw err
  }
}

export { revocationRefusal, standingRefusal }

/** A grant that needs a person's approval is issued only through CIBA (core/ciba.ts), never by exchange: the refusal, or undefined. */
export function approvalRefusal(policy: AgentPolicy, grant: Pick<Grant, 'audience'>): OAuthError | undefined {
  const approval = policy.grants.get(grant.audience)?.approval
  if (approval === undefined) return undefined
  return new OAuthError('interaction_required', 'this audience needs a person’s approval: use the backchannel authentication endpoint', {
    detail: `aud=${grant.audience} needs approval by ${approversText(approval.approvers)}`,
  })
}

/** RFC 8693 §2.1: the token types this broker takes and issues. */
function checkTokenTypes(req: ExchangeRequest): void {
  if (!SUBJECT_TOKEN_TYPES.has(req.subjectTokenType)) {
    throw new OAuthError('invalid_request', 'unsupported subject_token_type', { detail: loggable(req.subjectTokenType) })
  }
  if (req.requestedTokenType !== undefined && !ISSUABLE_TOKEN_TYPES.has(req.requestedTokenType)) {
    throw new OAuthError('invalid_request', 'unsupported requested_token_type', { detail: loggable(req.requestedTokenType) })
  }
}

/**
 * Spends the client's assertion and DPoP proofs and draws from `buckets` in one admission
 * call. Resolves with the refusal to send (a replay, a limit, the store
 * unavailable) or undefined; never rejects. Names the limit in `context`.
 */
export function admit(
  deps: ExchangeDeps,
  client: AuthenticatedClient,
  buckets: readonly BucketCharge[],
  context: ExchangeFailureContext,
  proofs: readonly AssertionUse[] = [],
): Promise<OAuthError | undefined> {
  if (client.assertion === undefined && buckets.length === 0 && proofs.length === 0) return Promise.resolve(undefined)
  return deps.admission.admit({ assertion: client.assertion, proofs, buckets }).then((decision) => {
    const refusal = admissionRefusal(decision)
    if (decision.outcome === 'limited') context.limited = decision.scope
    return refusal
  }, admissionUnavailable)
}

/** What a token carries beyond the exchange's decision. */
export interface MintExtras {
  /** After a person's approval: what they approved (RFC 9396 §9.1) and the approval's id. */
  readonly approved?: { readonly id: string; readonly details: readonly Readonly<Record<string, unknown>>[] } | undefined
  /** The client's DPoP key (RFC 9449 §6.1): the token is bound to it (`cnf.jkt`), and this hop's `act` names it. */
  readonly jkt?: string | undefined
  /** The running copy of the agent that asked, from its attested credential: this hop's `act.instance`. */
  readonly instance?: string | undefined
}

/**
 * The claims of the token to issue (step 6): exactly what the exchange decided, nothing copied from the
 * subject token; after a person's approval, also what they approved and the approval's id; bound to the
 * client's DPoP key when it proved one.
 */
export function mintedClaims(deps: ExchangeDeps, agent: AgentId, sub: Subject, grant: Grant, now: number, extras: MintExtras = {}): MandateClaims {
  const jti = deps.newJti()
  const { approved, jkt, instance } = extras
  // The newest hop names the copy that asked and its key; the older hops are the parent token's, as they were.
  const act = actClaim(grant.actors, { instance, jkt }, grant.parentAct)
  return {
    iss: deps.issuer,
    sub,
    sub_id: { format: 'iss_sub', iss: grant.userIssuer, sub },
    aud: grant.audience,
    client_id: agent,
    act,
    scope: grant.scopes.join(' '),
    iat: now,
    nbf: now,
    exp: grant.expiresAt,
    jti,
    ...(grant.ancestors.length > 0 ? { chain: grant.ancestors } : {}),
    ...(approved === undefined ? {} : { approval: approved.id, ...(approved.details.length > 0 ? { authorization_details: approved.details } : {}) }),
    ...(jkt === undefined ? {} : { cnf: { jkt } }),
  }
}

/** RFC 9449 §5: a token bound to a key is a `DPoP` token, any other `Bearer`. */
export function tokenTypeOf(claims: Pick<MandateClaims, 'cnf'>): ExchangeResult['tokenType'] {
  return claims.cnf === undefined ? 'Bearer' : 'DPoP'
}

/**
 * Steps 6–7: signs `claims` and makes the `token.issued` record durable, at
 * once: the record holds no part of the signature, so the commit's round
 * trip overlaps the signing on the thread pool. No token leaves without its
 * durable record: if the record cannot be written, 503 and the signed token
 * is dropped. Should signing fail after the record committed, a
 * `token.withheld` record says that this token never left.
 */
export async function mintRecorded(
  deps: ExchangeDeps,
  step: NonNullable<ExchangeDeps['step']>,
  req: Pick<ExchangeRequest, 'clientAddress' | 'traceId' | 'requestId'>,
  claims: MandateClaims,
  grant: Grant,
  policy: AgentPolicy,
): Promise<string> {
  const agent = claims.client_id
  const [minted, recorded] = await Promise.allSettled([
    step('mandate.token.mint', () => deps.minter.mint(claims)),
    step('mandate.audit.append', () =>
      deps.audit.append({
        type: 'token.issued',
        at: claims.iat,
        agent,
        sub: claims.sub,
        subIssuer: grant.userIssuer,
        actors: grant.actors,
        jti: claims.jti,
        parentJti: grant.ancestors.at(-1),
        rootJti: grant.ancestors[0] ?? claims.jti,
        audience: grant.audience,
        scopes: grant.scopes,
        expiresAt: grant.expiresAt,
        policyHash: policy.sourceHash,
        approval: claims.approval,
        jkt: claims.cnf?.jkt,
        instance: claims.act.instance,
        clientAddress: req.clientAddress,
        traceId: req.traceId,
        requestId: req.requestId,
      }),
    ),
  ])
  if (recorded.status === 'rejected') {
    throw new OAuthError('temporarily_unavailable', 'audit log unavailable; nothing was issued; try again', {
      detail: 'token.issued record not committed',
      retryAfter: 1,
      cause: recorded.reason,
    })
  }
  if (minted.status === 'rejected') {
    await deps.audit
      .append({
        type: 'token.withheld',
        at: deps.now(),
        agent,
        sub: claims.sub,
        subIssuer: grant.userIssuer,
        jti: claims.jti,
        reason: 'signing failed after the issuance was recorded: the token never left the broker',
      })
      .catch(() => {}) // the issuance record stands; the failure below is what the caller sees
    throw minted.reason
  }
  return minted.value
}

export async function recordDenial(
  deps: ExchangeDeps,
  agent: AgentId,
  sub: Subject | undefined,
  subIssuer: string | undefined,
  err: OAuthError,
  req: Pick<ExchangeRequest, 'audiences' | 'scopes' | 'clientAddress' | 'traceId' | 'requestId'>,
  instance?: string,
): Promise<void> {
  try {
    await deps.audit.append({
      type: 'token.denied',
      at: deps.now(),
      agent,
      instance,
      sub,
      subIssuer,
      error: err.code,
      reason: err.detail ?? err.description,
      // As asked, but never a token pasted into the wrong field.
      audiences: req.audiences.map(recordable),
      scopes: req.scopes?.map(recordable),
      clientAddress: req.clientAddress,
      traceId: req.traceId,
      requestId: req.requestId,
    })
  } catch (cause) {
    // Fail closed but keep the caller's answer honest: the denial stands, the log is down.
    throw new OAuthError('temporarily_unavailable', 'audit log unavailable; try again', {
      detail: 'denial could not be recorded',
      retryAfter: 1,
      cause,
    })
  }
}
