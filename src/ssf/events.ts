/**
 * Revocations as Security Event Tokens (RFC 8417), the event types and
 * claims docs/events.md describes. Pure: no I/O, no clock.
 */
import { createHash } from 'node:crypto'
import type { Revocation } from '../revocation/port.js'

/** The base of Mandate's own event type URIs (RFC 8417 §2.2 `events` keys). */
export const MANDATE_EVENT_BASE = 'https://mandate.dev/secevent/revocation/'

export const EVENT_TYPES = {
  token: `${MANDATE_EVENT_BASE}token`,
  chain: `${MANDATE_EVENT_BASE}chain`,
  agent: `${MANDATE_EVENT_BASE}agent`,
  user: `${MANDATE_EVENT_BASE}user`,
  agentUser: `${MANDATE_EVENT_BASE}agent-user`,
  agentInstance: `${MANDATE_EVENT_BASE}agent-instance`,
  /** OpenID CAEP 1.0 §3.1. */
  sessionRevoked: 'https://schemas.openid.net/secevent/caep/event-type/session-revoked',
} as const
export type EventType = (typeof EVENT_TYPES)[keyof typeof EVENT_TYPES]

/** RFC 8417 §2.3: the media type's subtype, as the JWS `typ`. */
export const SET_TYP = 'secevent+jwt'

/** RFC 9493 subject identifiers, as SSF 1.0 puts them in `sub_id`. */
export type SubjectId = { readonly format: 'iss_sub'; readonly iss: string; readonly sub: string } | { readonly format: 'opaque'; readonly id: string }

/** What a SET says before it is addressed and signed. */
export interface SecurityEvent {
  readonly type: EventType
  readonly subId: SubjectId
  readonly payload: Readonly<Record<string, unknown>>
}

/** The receiver a SET is addressed to. */
export interface Addressee {
  readonly name: string
  readonly audience: string
}

/**
 * The events one revocation publishes, in delivery order: one Mandate event,
 * and for a user kill also CAEP `session-revoked` (every session the broker
 * delegated for that user ends). An agent-for-one-user kill publishes no CAEP
 * event: its subject would be the user, and a receiver would end all of the
 * user's sessions rather than the one agent's. An instance kill publishes
 * the Mandate event only: CAEP has no event for one running copy of a
 * workload, and its subject is the instance as an opaque id (RFC 9493
 * §3.2.4), whatever form the instance takes (a SPIFFE ID, a pod name).
 */
export function eventsOf(r: Revocation): readonly SecurityEvent[] {
  // CAEP 1.0 §2: optional claims every event type may carry; the Mandate events reuse them.
  const common = { event_timestamp: r.createdAt, initiating_entity: 'admin', reason_admin: { en: r.reason } }
  const t = r.target
  switch (t.kind) {
    case 'jti':
      return [{ type: EVENT_TYPES.token, subId: { format: 'opaque', id: t.jti }, payload: { ...common, jti: t.jti } }]
    case 'chain':
      return [{ type: EVENT_TYPES.chain, subId: { format: 'opaque', id: t.jti }, payload: { ...common, jti: t.jti } }]
    case 'agent':
      return [{ type: EVENT_TYPES.agent, subId: { format: 'opaque', id: t.agent }, payload: { ...common, agent: t.agent } }]
    case 'sub': {
      const subId = userId(t.sub, t.iss)
      return [
        { type: EVENT_TYPES.user, subId, payload: { ...common, iss: t.iss, sub: t.sub } },
        { type: EVENT_TYPES.sessionRevoked, subId, payload: common },
      ]
    }
    case 'agent_sub':
      return [{ type: EVENT_TYPES.agentUser, subId: userId(t.sub, t.iss), payload: { ...common, agent: t.agent, iss: t.iss, sub: t.sub } }]
    case 'instance':
      return [{ type: EVENT_TYPES.agentInstance, subId: { format: 'opaque', id: t.instance }, payload: { ...common, agent: t.agent, instance: t.instance } }]
  }
}

/**
 * RFC 9493 §3.2.5 `iss_sub` when the kill names the issuer; a kill of a `sub`
 * at any issuer (recorded before kills named one) has no issuer to name, so
 * it is `opaque` (§3.2.4) and the payload's `iss` is null.
 */
function userId(sub: string, iss: string | null): SubjectId {
  return iss === null ? { format: 'opaque', id: sub } : { format: 'iss_sub', iss, sub }
}

/**
 * The SET's `jti`: the same for one (revocation, receiver, event type)
 * whichever instance makes it and however often, so that a receiver drops a
 * redelivery by its `jti` (RFC 8417 §2.2, RFC 8935 §2). 128 bits of SHA-256, base64url.
 */
export function setJti(revocationId: string, receiver: string, type: EventType): string {
  return createHash('sha256').update(`mandate-set\0${revocationId}\0${receiver}\0${type}`).digest().subarray(0, 16).toString('base64url')
}

/**
 * The SET's claims (RFC 8417 §2.2): exactly one event, `txn` the revocation
 * id (every SET of one revocation shares it), `iat` the revocation's time so
 * that the claims of a redelivery are identical too.
 */
export function setClaims(issuer: string, to: Addressee, r: Revocation, event: SecurityEvent): Record<string, unknown> {
  return {
    iss: issuer,
    aud: to.audience,
    iat: r.createdAt,
    jti: setJti(r.id, to.name, event.type),
    txn: r.id,
    sub_id: event.subId,
    events: { [event.type]: event.payload },
  }
}
