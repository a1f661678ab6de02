/**
 * Human approval of one action (OpenID CIBA Core 1.0, poll mode) and the
 * action's description (RFC 9396 Rich Authorization Requests): the rules a
 * grant declares, who may approve, the details a request may carry, and what
 * a poll of a stored request answers. Pure: no I/O, no clock.
 */
import { OAuthError } from './errors.js'

/** Who may decide: the user the agent acts for, the agent's owner, or members of an IdP group. */
export type Approvers = { readonly kind: 'user' } | { readonly kind: 'owner' } | { readonly kind: 'group'; readonly group: string }

/** A grant's `approval`, compiled. */
export interface ApprovalRule {
  readonly approvers: Approvers
  /** Seconds a request waits for a decision. */
  readonly timeout: number
  /** Seconds an approval also covers identical later requests of the agent for the user; 0: none. */
  readonly reuse: number
}

/** The `authorization_details` types a grant declares, each with its validator (a compiled JSON Schema). */
export type DetailTypes = ReadonlyMap<string, DetailValidator>
/** Whether an object (its `type` member left out) fits the type's schema; why not, when it does not. */
export type DetailValidator = (value: Record<string, unknown>) => string | undefined

/** RFC 9396 §2: one authorization detail, `type` first. */
export type AuthorizationDetail = Readonly<Record<string, unknown>> & { readonly type: string }

/** Most details one request may carry, and the most bytes of their JSON text: a request describes one action. */
export const MAX_DETAILS = 8
export const MAX_DETAILS_BYTES = 8 * 1024

/** `approvers` as a policy writes it. */
export function parseApprovers(text: string): Approvers {
  if (text === 'user' || text === 'owner') return { kind: text }
  return { kind: 'group', group: text.slice('group:'.length) }
}

export function approversText(a: Approvers): string {
  return a.kind === 'group' ? `group:${a.group}` : a.kind
}

const invalidDetails = (description: string, detail?: string) =>
  new OAuthError('invalid_authorization_details', description, detail === undefined ? {} : { detail })

/**
 * RFC 9396 §2 and §5: parses `authorization_details` (JSON text of an array
 * of objects with a string `type`) and checks each against the type the
 * grant declares. Throws `invalid_authorization_details`. Absent: none.
 */
export function parseAuthorizationDetails(text: string | undefined, types: DetailTypes | undefined): AuthorizationDetail[] {
  if (text === undefined) return []
  if (Buffer.byteLength(text) > MAX_DETAILS_BYTES) throw invalidDetails('authorization_details is too long')
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw invalidDetails('authorization_details is not JSON')
  }
  if (!Array.isArray(value) || value.length === 0) throw invalidDetails('authorization_details must be a non-empty array')
  if (value.length > MAX_DETAILS) throw invalidDetails(`authorization_details may hold at most ${MAX_DETAILS} objects`)
  return value.map((item: unknown, i) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw invalidDetails('each authorization detail must be an object')
    const { type, ...rest } = item as Record<string, unknown>
    if (typeof type !== 'string') throw invalidDetails('each authorization detail needs a string type')
    const validate = types?.get(type)
    // The type is the client's text: the detail names it only by index, and by length when undeclared.
    if (validate === undefined) throw invalidDetails('authorization detail type not permitted for this audience', `[${i}] undeclared type`)
    const why = validate(rest)
    if (why !== undefined) throw invalidDetails('authorization detail does not fit its type', `[${i}] ${type}: ${why}`)
    return { type, ...rest }
  })
}

/** The person deciding, as proven by an IdP sign-in or by the admin key they hold. */
export interface Approver {
  /** Issuer and `sub` of their IdP identity, when known. */
  readonly iss?: string | undefined
  readonly sub?: string | undefined
  /** Names the policy's `owner` may be written as: their email, the admin key's name. */
  readonly names: readonly string[]
  /** Groups the IdP says they belong to. */
  readonly groups: readonly string[]
  /** For the log: who they are, in one string. */
  readonly label: string
}

/** What entitlement needs of a request: its user and its agent's owner. */
export interface ApprovalSubject {
  readonly userIssuer: string
  readonly sub: string
  readonly owner: string
}

/** Whether `approver` is someone `approvers` names for this request (the user by issuer and `sub` both). */
export function isEntitled(approvers: Approvers, request: ApprovalSubject, approver: Approver): boolean {
  switch (approvers.kind) {
    case 'user':
      return approver.iss === request.userIssuer && approver.sub === request.sub
    case 'owner': {
      const owner = request.owner.trim().toLowerCase()
      // A policy gone (no owner to compare) has nobody to decide for it.
      return owner !== '' && approver.names.some((n) => n.trim().toLowerCase() === owner)
    }
    case 'group':
      return approver.groups.includes(approvers.group)
  }
}

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'cancelled' | 'issued'

/** A stored request as a poll sees it. */
export interface PollState {
  readonly status: ApprovalStatus
  /** Epoch seconds. */
  readonly expiresAt: number
}

/**
 * CIBA Core §11: the refusal a poll of this request gets, or undefined when
 * it is approved and a token may be issued. A decided request answers once:
 * after its token, or after a denial, it is unknown to the agent.
 */
export function pollRefusal(state: PollState, now: number): OAuthError | undefined {
  switch (state.status) {
    case 'approved':
      return now < state.expiresAt ? undefined : new OAuthError('expired_token', 'the approval request has expired')
    case 'pending':
      return now < state.expiresAt
        ? new OAuthError('authorization_pending', 'the approval is pending')
        : new OAuthError('expired_token', 'the approval request has expired')
    case 'expired':
      return new OAuthError('expired_token', 'the approval request has expired')
    case 'denied':
      return new OAuthError('access_denied', 'the approver denied the request')
    case 'cancelled':
      return new OAuthError('access_denied', 'the request was cancelled: the agent or the user was revoked')
    case 'issued':
      return new OAuthError('invalid_grant', 'auth_req_id is unknown or was used')
  }
}

/** Canonical text of what an approval covers, for reuse: equal texts describe the same action. */
export function actionKey(a: {
  readonly agent: string
  readonly userIssuer: string
  readonly sub: string
  readonly audience: string
  readonly scopes: readonly string[]
  readonly details: readonly AuthorizationDetail[]
}): string {
  return JSON.stringify([a.agent, a.userIssuer, a.sub, a.audience, [...a.scopes].sort(), a.details.map(canonical)])
}

/** JSON with object keys sorted, so that member order does not make two equal details differ. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical)
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, canonical((value as Record<string, unknown>)[k])]),
    )
  }
  return value
}
