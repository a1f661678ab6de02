/**
 * The two halves of a token that needs a person's approval (OpenID CIBA Core
 * 1.0, poll mode): the agent's backchannel authentication request, checked
 * like an exchange and stored pending; and its polls of the token endpoint,
 * which issue the token, with exactly the approved RFC 9396 details, once the
 * approver said yes. The decision itself is the admin API's or the sign-in
 * page's (approvals/decide.ts).
 */
import type { AgentId, Subject } from './claims.js'
import { TOKEN_TYPE } from './claims.js'
import { actionKey, approversText, parseAuthorizationDetails, pollRefusal, type AuthorizationDetail } from './approval.js'
import { OAuthError } from './errors.js'
import { requestProofs, type CheckedProofs, type RequestProofs } from './dpop.js'
import {
  admit,
  mintedClaims,
  tokenTypeOf,
  mintRecorded,
  recordDenial,
  standingRefusal,
  type ExchangeDeps,
  type ExchangeFailureContext,
  type ExchangeResult,
} from './exchange.js'
import { evaluatePolicy, type Grant } from './policy-eval.js'
import type { ApprovalRow, ApprovalStore } from '../approvals/port.js'
import type { PolicyStore } from '../policy/port.js'
import type { AuthenticatedClient, ClientCredentials, UserSubject } from '../tokens/port.js'

/** CIBA Core §7.1, as the HTTP layer parsed it. */
export interface BackchannelRequest {
  readonly client: ClientCredentials
  /** The user's token (what an exchange takes as `subject_token`). */
  readonly loginHintToken: string
  readonly audiences: readonly string[]
  readonly scopes: readonly string[] | undefined
  /** RFC 9396 `authorization_details`, JSON text as sent. */
  readonly authorizationDetails: string | undefined
  /** Shown to the approver and to the user, so both know it is this request (CIBA Core §7.1). */
  readonly bindingMessage: string | undefined
  /** Seconds the agent is willing to wait (CIBA Core §7.1 `requested_expiry`). */
  readonly requestedExpiry: number | undefined
  readonly clientAddress: string | undefined
  readonly traceId?: string | undefined
  readonly requestId?: string | undefined
}

/** CIBA Core §7.3. */
export interface BackchannelResult {
  readonly authReqId: string
  readonly expiresIn: number
  readonly interval: number
}

export interface CibaDeps extends ExchangeDeps {
  readonly approvals: ApprovalStore
  /** Pending requests one agent may have at once. */
  readonly maxPending: number
  /** Seconds an agent waits between polls at first (CIBA Core §7.3 `interval`). */
  readonly pollInterval: number
  /** A fresh public approval id, and a fresh unguessable handle (`auth_req_id`, CIBA Core §7.3). */
  readonly newApprovalId: () => string
  readonly newHandle: () => string
}

/** The stored form of the verified user token: enough to evaluate the policy again at issuance. */
interface StoredSubject {
  readonly issuer: string
  readonly sub: string
  readonly iat: number
  readonly exp: number
  readonly scopes: readonly string[] | null
  readonly claims: Readonly<Record<string, unknown>>
}

function storedSubject(s: UserSubject): string {
  const stored: StoredSubject = {
    issuer: s.issuer,
    sub: s.sub,
    iat: s.iat,
    exp: s.exp,
    scopes: s.scopes === undefined ? null : [...s.scopes],
    claims: s.claims,
  }
  return JSON.stringify(stored)
}

function userSubject(text: string): UserSubject {
  const s = JSON.parse(text) as StoredSubject
  return {
    kind: 'user',
    issuer: s.issuer,
    sub: s.sub as Subject,
    iat: s.iat,
    exp: s.exp,
    scopes: s.scopes === null ? undefined : new Set(s.scopes),
    claims: s.claims,
  }
}

/**
 * POST /oauth2/bc-authorize after parsing: authenticates the agent, verifies
 * the user's token, evaluates the policy as an exchange would (the grant
 * must be one that needs approval), checks the details against the grant's
 * types, and stores the request pending (or approved, when an earlier
 * approval of the same action is reusable). The `approval.requested` record
 * is what notifies the approvers. Refusals are recorded as denials.
 */
export async function requestApproval(req: BackchannelRequest, deps: CibaDeps, context: ExchangeFailureContext): Promise<BackchannelResult> {
  const policies = deps.policies.snapshot()
  const client = await deps.clients.authenticate(req.client, policies)
  context.agent = client.agent
  const policy = policies.get(client.agent)
  const agentLimit = policy?.rateLimit.agent
  const admitted = admit(deps, client, agentLimit === undefined ? [] : [{ scope: 'agent', agent: client.agent, limit: agentLimit }], context)
  let user: UserSubject | undefined
  try {
    if (policy === undefined) throw new OAuthError('unauthorized_client', 'agent has no policy', { detail: `agent=${client.agent}` })
    const subject = await deps.subjects.verify(req.loginHintToken)
    if (subject.kind !== 'user') {
      throw new OAuthError('invalid_request', "login_hint_token must be a user's token", { detail: 'a Mandate token was sent' })
    }
    user = subject
    const now = deps.now()
    const grant = evaluatePolicy({
      issuer: deps.issuer,
      policy,
      subject,
      chainPolicies: [],
      audiences: req.audiences,
      scopes: req.scopes,
      requestedTtl: undefined,
      now,
    })
    const rule = policy.grants.get(grant.audience)
    if (rule?.approval === undefined) {
      throw new OAuthError('invalid_request', 'this audience needs no approval: exchange the token', { detail: `aud=${grant.audience}` })
    }
    const details = parseAuthorizationDetails(req.authorizationDetails, rule.detailTypes)
    const standing = standingRefusal(deps, policy, grant, subject.sub, subject.iat, now, client.instance)
    if (standing !== undefined) throw standing
    const refused = await admitted
    if (refused !== undefined) throw refused

    const expiresAt = Math.min(now + Math.min(rule.approval.timeout, req.requestedExpiry ?? Infinity), subject.exp)
    const action = actionKey({ agent: client.agent, userIssuer: subject.issuer, sub: subject.sub, audience: grant.audience, scopes: grant.scopes, details })
    const reused = rule.approval.reuse > 0 ? await deps.approvals.reusable(action, now - rule.approval.reuse) : undefined
    const id = deps.newApprovalId()
    const handle = deps.newHandle()
    const stored = await deps.approvals.create(
      {
        id,
        handle,
        actionKey: action,
        agent: client.agent,
        sub: subject.sub,
        subIss: subject.issuer,
        audience: grant.audience,
        scopes: [...grant.scopes],
        details: JSON.stringify(details),
        requestedTtl: null,
        subject: storedSubject(subject),
        bindingMessage: req.bindingMessage ?? null,
        approvers: approversText(rule.approval.approvers),
        status: reused === undefined ? 'pending' : 'approved',
        createdAt: now,
        expiresAt,
        pollInterval: deps.pollInterval,
        ...(reused === undefined ? {} : { decidedAt: now, decidedBy: reused.decidedBy, decidedVia: 'reuse' as const, note: `reuses ${reused.id}` }),
      },
      deps.maxPending,
      now,
    )
    if (!stored) {
      throw new OAuthError('rate_limited', 'too many approval requests are pending for this agent', {
        detail: `max_pending=${deps.maxPending}`,
        retryAfter: deps.pollInterval,
      })
    }
    await recordRequest(deps, {
      id,
      agent: client.agent,
      subject,
      grant,
      details,
      approvers: approversText(rule.approval.approvers),
      purpose: policy.purpose,
      expiresAt,
      reuses: reused?.id,
      req,
      now,
    })
    return { authReqId: handle, expiresIn: expiresAt - now, interval: deps.pollInterval }
  } catch (err) {
    const refused = await admitted
    if (refused !== undefined) throw refused
    if (err instanceof OAuthError && err.code !== 'temporarily_unavailable' && err.code !== 'server_error' && err.code !== 'rate_limited') {
      await recordDenial(deps, client.agent, user?.sub, user?.issuer, err, { ...req, audiences: req.audiences }, client.instance)
      context.denialRecorded = true
    }
    throw err
  }
}

/**
 * The `approval.requested` record, which notifies the approvers. Unrecorded, the request could be
 * decided and redeemed with no trace: it is cancelled, and the agent told to try again.
 */
async function recordRequest(
  deps: CibaDeps,
  r: {
    id: string
    agent: AgentId
    subject: UserSubject
    grant: Grant
    details: readonly AuthorizationDetail[]
    approvers: string
    purpose: string
    expiresAt: number
    reuses: string | undefined
    req: BackchannelRequest
    now: number
  },
): Promise<void> {
  try {
    await deps.audit.append({
      type: 'approval.requested',
      at: r.now,
      agent: r.agent,
      sub: r.subject.sub,
      subIssuer: r.subject.issuer,
      approval: r.id,
      audience: r.grant.audience,
      scopes: r.grant.scopes,
      details: JSON.stringify(r.details),
      bindingMessage: r.req.bindingMessage,
      approvers: r.approvers,
      purpose: r.purpose,
      expiresAt: r.expiresAt,
      reuses: r.reuses,
      clientAddress: r.req.clientAddress,
      traceId: r.req.traceId,
      requestId: r.req.requestId,
    })
  } catch (cause) {
    await deps.approvals.cancel({ kind: 'id', id: r.id }, 'request not recorded', r.now).catch(() => {})
    throw new OAuthError('temporarily_unavailable', 'audit log unavailable; try again', { detail: 'approval.requested not recorded', retryAfter: 1, cause })
  }
}

/** A poll of the token endpoint (CIBA Core §10.1), after parsing. */
export interface ApprovalPoll extends Pick<RequestProofs, 'dpop'> {
  readonly client: ClientCredentials
  readonly authReqId: string
  readonly clientAddress: string | undefined
  readonly traceId?: string | undefined
  readonly requestId?: string | undefined
}

export interface ApprovedResult extends ExchangeResult {
  readonly authorizationDetails: readonly AuthorizationDetail[]
}

/**
 * The token endpoint's `urn:openid:params:grant-type:ciba` grant: the
 * answer CIBA Core §11 gives for the request's state, and once approved,
 * the token, minted after the policy, the kill switch and the details are
 * checked again (any may have changed while the person decided). One token
 * per approval: the first poll to find it approved claims it.
 */
export async function redeemApproval(req: ApprovalPoll, deps: CibaDeps, context: ExchangeFailureContext): Promise<ApprovedResult> {
  const policies = deps.policies.snapshot()
  const client = await deps.clients.authenticate(req.client, policies)
  context.agent = client.agent
  let proofs: CheckedProofs
  try {
    proofs = await requestProofs(deps, policies.get(client.agent), { dpop: req.dpop })
  } catch (err) {
    throw (await admit(deps, client, [], context)) ?? err
  }
  const refused = await admit(deps, client, [], context, proofs.uses)
  if (refused !== undefined) throw refused
  const now = deps.now()
  const polled = await deps.approvals.poll(req.authReqId, client.agent, now)
  if (polled === undefined) throw new OAuthError('invalid_grant', 'auth_req_id is unknown or was used', { detail: 'no such request of this agent' })
  const row = polled.row
  const waiting = pollRefusal({ status: row.status, expiresAt: row.expiresAt }, now)
  // CIBA Core §11: slow_down is a pending request's answer; a decided one is told at once.
  if (polled.tooSoon && waiting?.code === 'authorization_pending')
    throw new OAuthError('slow_down', 'polling too fast: wait the interval, 5 s more from now on')
  if (waiting !== undefined) throw waiting
  return issueApproved(row, req, deps, policies, client, now, proofs.client?.jkt)
}

async function issueApproved(
  row: ApprovalRow,
  req: ApprovalPoll,
  deps: CibaDeps,
  policies: PolicyStore,
  client: AuthenticatedClient,
  now: number,
  jkt: string | undefined,
): Promise<ApprovedResult> {
  const agent = client.agent
  const subject = userSubject(row.subject)
  const scopes = row.scopes
  const asked = { audiences: [row.audience], scopes, clientAddress: req.clientAddress, traceId: req.traceId, requestId: req.requestId }
  const policy = policies.get(agent)
  const jti = deps.newJti()
  try {
    if (policy === undefined) throw new OAuthError('unauthorized_client', 'agent has no policy', { detail: `agent=${agent}` })
    const grant = evaluatePolicy({
      issuer: deps.issuer,
      policy,
      subject,
      chainPolicies: [],
      audiences: [row.audience],
      scopes,
      requestedTtl: row.requestedTtl ?? undefined,
      now,
    })
    // The policy may have changed since the request: its details must still fit the grant's types.
    const details = row.details === '[]' ? [] : parseAuthorizationDetails(row.details, policy.grants.get(grant.audience)?.detailTypes)
    // The copy that polls is the one the token goes to: its instance is checked and carried.
    const standing = standingRefusal(deps, policy, grant, subject.sub, subject.iat, now, client.instance)
    if (standing !== undefined) throw standing
    if (!(await deps.approvals.claimIssue(row.id, jti))) {
      throw new OAuthError('invalid_grant', 'auth_req_id is unknown or was used', { detail: `approval ${row.id} already redeemed` })
    }
    const claims = { ...mintedClaims(deps, agent, subject.sub, grant, now, { approved: { id: row.id, details }, jkt, instance: client.instance }), jti: jti }
    let accessToken: string
    try {
      accessToken = await mintRecorded(deps, deps.step ?? ((_n, fn) => fn()), asked, claims, grant, policy)
    } catch (err) {
      // Nothing left the broker: the approval stands, and the agent may poll again.
      await deps.approvals.releaseIssue(row.id, jti).catch(() => {})
      throw err
    }
    return {
      accessToken,
      issuedTokenType: TOKEN_TYPE.accessToken,
      tokenType: tokenTypeOf(claims),
      expiresIn: grant.expiresAt - now,
      scope: claims.scope,
      claims,
      authorizationDetails: details,
    }
  } catch (err) {
    if (err instanceof OAuthError && err.code !== 'temporarily_unavailable' && err.code !== 'server_error' && err.code !== 'invalid_grant') {
      await recordDenial(deps, agent, subject.sub, subject.issuer, err, asked, client.instance)
    }
    throw err
  }
}
