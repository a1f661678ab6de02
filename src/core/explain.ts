import type { AgentId, Jti, MandateClaims, Subject } from './claims.js'
import { actClaim } from './claims.js'
import { admissionRefusal } from './admission.js'
import { answerOf, OAuthError, SUBJECT_TOKEN_UNACCEPTABLE } from './errors.js'
import type { LifecycleStanding } from './lifecycle.js'
import { lifetimeProblem, numericDateProblem } from './lifetime.js'
import { evaluatePolicy, type Grant, type PolicyCheck, type PolicyTrace } from './policy-eval.js'
import { approvalRefusal, revocationRefusal } from './exchange.js'
import type { AdmissionStore, BucketCharge } from '../admission/port.js'
import type { PolicyStore } from '../policy/port.js'
import type { RevocationStore } from '../revocation/port.js'
import type { VerifiedSubject } from '../tokens/port.js'

/**
 * A token request to explain: who asks for whom, for what. The user's token is
 * described, not presented: its issuer, `sub` and other claims.
 */
export interface ExplainRequest {
  readonly agent: AgentId
  readonly userIssuer: string
  readonly sub: Subject
  /** The user token's other claims (`scope`, `groups`, `may_act`, `iat`, `exp`…). */
  readonly claims: Readonly<Record<string, unknown>>
  readonly audiences: readonly string[]
  readonly scopes: readonly string[] | undefined
  readonly requestedTtl: number | undefined
  /**
   * For a re-delegation: the agents already in the chain, newest first (`[0]` presented its token). The request
   * is then at depth `chain.length + 1`, and its subject is a Mandate token with the audience asked for.
   */
  readonly chain: readonly AgentId[]
}

export interface ExplainDeps {
  readonly issuer: string
  readonly policies: PolicyStore
  /** Issuers trusted for user subjects. */
  readonly userIssuers: readonly string[]
  readonly revocations: RevocationStore
  readonly admission: AdmissionStore
  /** The subject verifier's clock rules: seconds of skew, and the longest a user token may still live. */
  readonly subjectLifetime: { readonly skew: number; readonly maxAge: number }
  /** Epoch seconds. */
  readonly now: () => number
  /** The agent's standing (attestation, dormancy, orphaning), as the exchange reads it; absent: no lifecycle refusals. */
  readonly lifecycle?: LifecycleStanding | undefined
}

export type CheckName = 'agent.known' | 'subject.issuer' | 'subject.lifetime' | PolicyCheck | 'approval' | 'revocation' | 'attestation' | 'rate_limit'

/** `not_reached`: the exchange stops at the first failure and never makes it; `unknown`: it could not be told. */
export type CheckOutcome = 'pass' | 'fail' | 'not_reached' | 'unknown'

export interface ExplainedCheck {
  readonly check: CheckName
  readonly outcome: CheckOutcome
  /** The HTTP status, RFC 6749 §5.2 `error` and description the caller would get, and the reason only the log holds. */
  readonly status?: number
  readonly error?: string
  readonly description?: string
  readonly detail?: string | undefined
}

export interface Explanation {
  readonly decision: 'granted' | 'denied'
  /** When denied: the error the token endpoint answers with, and the check that decided it. */
  readonly error?: {
    readonly status: number
    readonly code: string
    readonly description: string
    readonly detail: string | undefined
    readonly check: CheckName
  }
  /** When granted: what the token would carry. */
  readonly grant?: { readonly audience: string; readonly scopes: readonly string[]; readonly expiresIn: number; readonly actors: readonly AgentId[] }
  /** Every check the exchange makes for such a request, in its order. */
  readonly checks: readonly ExplainedCheck[]
}

const failed = (check: CheckName, err: unknown): ExplainedCheck => {
  if (!(err instanceof OAuthError)) throw err
  // As the token endpoint answers it: a rate limit is a 429 with `temporarily_unavailable`.
  const { status, error } = answerOf(err.code)
  return { check, outcome: err.code === 'temporarily_unavailable' ? 'unknown' : 'fail', status, error, description: err.description, detail: err.detail }
}

/**
 * What the token exchange (core/exchange.ts) would answer for `req` now, and why: the same policy evaluation
 * (`evaluatePolicy`, traced), the same revocation check and refusal, and the rate limits read without drawing
 * from them. Mints nothing, spends no assertion, writes no record.
 */
export async function explainExchange(req: ExplainRequest, deps: ExplainDeps): Promise<Explanation> {
  const checks: ExplainedCheck[] = []
  const policies = deps.policies.snapshot()
  const policy = policies.get(req.agent)
  if (policy === undefined) {
    // The exchange authenticates against the policy: without one the agent is no client at all.
    checks.push({
      check: 'agent.known',
      outcome: 'fail',
      status: 401,
      error: 'invalid_client',
      description: 'client authentication failed',
      detail: `agent=${req.agent}`,
    })
    return denied(checks)
  }
  checks.push({ check: 'agent.known', outcome: 'pass' })

  const now = deps.now()
  const user = userSubject(req, now)
  let grant: Grant | undefined
  let refusal: ExplainedCheck | undefined
  const late = req.chain.length === 0 ? subjectLifetimeProblem(req.claims, now, deps.subjectLifetime) : undefined
  if (req.chain.length === 0 && !deps.userIssuers.includes(req.userIssuer)) {
    // The subject verifier refuses a token of an issuer it does not trust.
    refusal = unacceptableSubject('subject.issuer', `iss=${req.userIssuer}`)
  } else if (late !== undefined) {
    checks.push({ check: 'subject.issuer', outcome: 'pass' })
    refusal = unacceptableSubject('subject.lifetime', late)
  } else {
    checks.push({ check: 'subject.issuer', outcome: 'pass' })
    if (req.chain.length === 0) checks.push({ check: 'subject.lifetime', outcome: 'pass', detail: describedTimes(req.claims) })
    const subject: VerifiedSubject = req.chain.length === 0 ? user : parentSubject(req, deps.issuer, user)
    const { entered, trace, passed } = traceChecks()
    try {
      grant = evaluatePolicy(
        {
          issuer: deps.issuer,
          policy,
          subject,
          chainPolicies: req.chain.map((a) => policies.get(a)),
          audiences: req.audiences,
          scopes: req.scopes,
          requestedTtl: req.requestedTtl,
          now,
        },
        trace,
      )
      for (const check of entered) checks.push(passed(check))
    } catch (err) {
      const last = entered.pop()
      if (last === undefined) throw err
      for (const check of entered) checks.push(passed(check))
      refusal = failed(last, err)
    }
  }
  if (refusal !== undefined) checks.push(refusal)
  // The exchange refuses a grant that needs a person's approval right after the policy (core/exchange.ts).
  const needsApproval = grant === undefined || refusal !== undefined ? undefined : approvalRefusal(policy, grant)
  if (needsApproval !== undefined) {
    checks.push((refusal = failed('approval', needsApproval)))
    grant = undefined
  }

  if (grant !== undefined) {
    const verdict = deps.revocations.check({
      agent: req.agent,
      sub: req.sub,
      subIssuer: grant.userIssuer,
      actors: grant.actors.slice(1),
      ancestors: grant.ancestors,
      subjectIssuedAt: user.iat,
    })
    const revoked = revocationRefusal(verdict)
    if (revoked === undefined) checks.push({ check: 'revocation', outcome: 'pass' })
    else refusal = failed('revocation', revoked)
    if (refusal !== undefined) checks.push(refusal)
  } else {
    checks.push({ check: 'revocation', outcome: 'not_reached' })
  }
  // The exchange asks the agent's standing right after the revocation check (attestation, dormancy, orphaning).
  if (refusal === undefined && grant !== undefined) {
    const standing = deps.lifecycle?.refusal(policy, now)
    if (standing === undefined) checks.push({ check: 'attestation', outcome: 'pass' })
    else checks.push((refusal = failed('attestation', standing)))
  } else {
    checks.push({ check: 'attestation', outcome: 'not_reached' })
  }

  // The exchange draws from the rate limits whatever else refuses, and a limit's refusal is the answer then.
  const limited = await peekLimits(deps.admission, policy.rateLimit, req, refusal === undefined || refusal.check !== 'subject.issuer')
  checks.push(limited)
  if (limited.outcome !== 'pass') refusal = limited
  if (refusal !== undefined || grant === undefined) return denied(checks, refusal)
  return {
    decision: 'granted',
    grant: { audience: grant.audience, scopes: grant.scopes, expiresIn: grant.expiresAt - now, actors: grant.actors },
    checks,
  }
}

/** The checks `evaluatePolicy` entered, in order (one entered again moves last), and what each found. */
function traceChecks(): { entered: PolicyCheck[]; trace: PolicyTrace; passed: (check: PolicyCheck) => ExplainedCheck } {
  const entered: PolicyCheck[] = []
  const found = new Map<PolicyCheck, string>()
  const trace: PolicyTrace = (check, detail) => {
    if (detail !== undefined) found.set(check, detail)
    if (!entered.includes(check)) entered.push(check)
    else entered.push(...entered.splice(entered.indexOf(check), 1))
  }
  const passed = (check: PolicyCheck): ExplainedCheck => (found.has(check) ? { check, outcome: 'pass', detail: found.get(check) } : { check, outcome: 'pass' })
  return { entered, trace, passed }
}

function denied(checks: ExplainedCheck[], refusal: ExplainedCheck | undefined = checks.at(-1)): Explanation {
  const r = refusal!
  return { decision: 'denied', error: { status: r.status!, code: r.error!, description: r.description ?? '', detail: r.detail, check: r.check }, checks }
}

async function peekLimits(
  admission: AdmissionStore,
  limits: { agent?: BucketCharge['limit'] | undefined; user?: BucketCharge['limit'] | undefined },
  req: ExplainRequest,
  userKnown: boolean,
): Promise<ExplainedCheck> {
  const buckets: BucketCharge[] = []
  if (limits.agent !== undefined) buckets.push({ scope: 'agent', agent: req.agent, limit: limits.agent })
  // The exchange charges the user's bucket only once the subject verified.
  if (limits.user !== undefined && userKnown) {
    buckets.push({ scope: 'user', agent: req.agent, issuer: req.userIssuer, sub: req.sub, limit: limits.user })
  }
  if (buckets.length === 0) return { check: 'rate_limit', outcome: 'pass', detail: 'no rate limit' }
  if (admission.peek === undefined) return { check: 'rate_limit', outcome: 'unknown', detail: 'the admission store cannot be read without drawing' }
  try {
    const refusal = admissionRefusal(await admission.peek(buckets))
    return refusal === undefined ? { check: 'rate_limit', outcome: 'pass' } : failed('rate_limit', refusal)
  } catch {
    return {
      check: 'rate_limit',
      outcome: 'unknown',
      status: 503,
      error: 'temporarily_unavailable',
      description: 'rate limit state is unknown; try again',
      detail: 'admission store unavailable',
    }
  }
}

/** RFC 8693 §2.2.2: the subject verifier's one answer for any subject token it does not accept. */
function unacceptableSubject(check: CheckName, detail: string): ExplainedCheck {
  return { check, outcome: 'fail', status: 400, error: 'invalid_request', description: SUBJECT_TOKEN_UNACCEPTABLE, detail }
}

/**
 * The described user token's `exp`, `iat` and `nbf` under the verifier's rules (tokens/subject.ts): NumericDates,
 * not expired, `exp` at most `maxAge` ahead, nothing issued in the future. Claims not described are not judged:
 * the verifier requires `exp` and `iat`, so a real token has them.
 */
function subjectLifetimeProblem(claims: Readonly<Record<string, unknown>>, now: number, rules: ExplainDeps['subjectLifetime']): string | undefined {
  return numericDateProblem(claims) ?? lifetimeProblem(claims, { now, skew: rules.skew, maxExpiresIn: rules.maxAge })
}

function describedTimes(claims: Readonly<Record<string, unknown>>): string | undefined {
  const missing = (['exp', 'iat'] as const).filter((n) => claims[n] === undefined)
  return missing.length === 0 ? undefined : `${missing.join(' and ')} not described: judged as a token issued now that does not expire`
}

/** The user's token as the subject verifier would have verified it; a token with no `exp` outlives any policy. */
function userSubject(req: ExplainRequest, now: number): Extract<VerifiedSubject, { kind: 'user' }> {
  const { claims } = req
  const num = (v: unknown, d: number) => (typeof v === 'number' && Number.isFinite(v) ? v : d)
  const scope = claims['scope']
  const scp = claims['scp']
  const scopes =
    typeof scope === 'string'
      ? new Set(scope.split(' ').filter((s) => s !== ''))
      : Array.isArray(scp) && scp.every((s) => typeof s === 'string')
        ? new Set(scp)
        : undefined
  return {
    kind: 'user',
    issuer: req.userIssuer,
    sub: req.sub,
    iat: num(claims['iat'], now),
    exp: num(claims['exp'], Number.MAX_SAFE_INTEGER),
    scopes,
    claims: { ...claims, iss: req.userIssuer, sub: req.sub },
  }
}

/** A parent Mandate token as `chain[0]` would hold it: the user's, for the audience asked for, every scope asked for. */
function parentSubject(req: ExplainRequest, issuer: string, user: Extract<VerifiedSubject, { kind: 'user' }>): VerifiedSubject {
  const claims: MandateClaims = {
    iss: issuer,
    sub: req.sub,
    sub_id: { format: 'iss_sub', iss: req.userIssuer, sub: req.sub },
    aud: req.audiences[0] ?? '',
    client_id: req.chain[0]!,
    act: actClaim(req.chain),
    scope: (req.scopes ?? [...(user.scopes ?? [])]).join(' '),
    iat: user.iat,
    nbf: user.iat,
    exp: user.exp,
    jti: 'explain-parent' as Jti,
  }
  return { kind: 'mandate', claims }
}
