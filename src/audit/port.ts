import type { AgentId, Jti, Subject } from '../core/claims.js'
import type { Revocation } from '../revocation/port.js'
import { AUDIT_EVENTS as STORED_EVENTS } from '../storage/schema.js'

/** Context every event may carry: where the request came from and its trace. */
interface RequestContext {
  /** The client's IP address as the socket saw it. */
  readonly clientAddress?: string | undefined
  /** W3C trace id (32 hex digits) of the request, when there was one. */
  readonly traceId?: string | undefined
  /** The id the answer carried (`X-Request-Id`, and a denial's `error_uri`): what `mandate audit show` looks up. */
  readonly requestId?: string | undefined
}

export type AuditEvent =
  | (RequestContext & {
      readonly type: 'token.issued'
      /** Epoch seconds; the token's `iat`. */
      readonly at: number
      readonly agent: AgentId
      readonly sub: Subject
      /** Issuer of the user's upstream token: `sub` is unique only within it. */
      readonly subIssuer: string
      /** Actors newest first, the requesting agent included. */
      readonly actors: readonly AgentId[]
      readonly jti: Jti
      readonly parentJti: Jti | undefined
      readonly rootJti: Jti
      readonly audience: string
      readonly scopes: readonly string[]
      /** Epoch seconds; the token's `exp`. */
      readonly expiresAt: number
      /** SHA-256 of the policy file that allowed it (a `policy.loaded` record names the file). */
      readonly policyHash: string
      /** The approval that allowed it, when its grant needs one (an `approval.requested` record names it). */
      readonly approval?: string | undefined
      /** The running copy of the agent that asked (the token's `act.instance`), when its authentication named one. */
      readonly instance?: string | undefined
      /** RFC 7638 thumbprint of the DPoP key the token is bound to (`cnf.jkt`, RFC 9449 §6.1); absent: a bearer token. */
      readonly jkt?: string | undefined
    })
  | (RequestContext & {
      readonly type: 'token.denied'
      readonly at: number
      readonly agent: AgentId
      readonly sub: Subject | undefined
      /** Issuer of the user's token, once it was verified. */
      readonly subIssuer?: string | undefined
      /** The running copy of the agent that asked, when its authentication named one. */
      readonly instance?: string | undefined
      /** The RFC 6749 error code answered. */
      readonly error: string
      /** Why, for the log: never a token or a secret. */
      readonly reason: string
      /** The audiences (and resources) the request asked for; at most `MAX_RECORDED_AUDIENCES` are recorded. */
      readonly audiences?: readonly string[] | undefined
      /** The scopes it asked for, undefined when it left `scope` out; at most `MAX_RECORDED_SCOPES` are recorded. */
      readonly scopes?: readonly string[] | undefined
    })
  | {
      /**
       * A `token.issued` record turned out committed although its request was
       * answered 503 (the database's answer was lost): the token never left
       * the broker.
       */
      readonly type: 'token.withheld'
      readonly at: number
      readonly agent: AgentId
      readonly sub: Subject
      /** Issuer of the user's token (absent in records written before it was recorded). */
      readonly subIssuer?: string | undefined
      readonly jti: Jti
      readonly reason: string
    }
  | (RequestContext & {
      readonly type: 'revocation.created' | 'revocation.lifted'
      readonly at: number
      /** The admin key's name, or the agent for an RFC 7009 self-revocation. */
      readonly by: string
      readonly revocation: Revocation
    })
  | {
      /** A policy file in force from now on (at start, and on every reload that changed it). */
      readonly type: 'policy.loaded' | 'policy.unloaded'
      readonly at: number
      readonly agent: AgentId
      /** The file, as found in the policies directory. */
      readonly source: string
      /** SHA-256 of the file's bytes. */
      readonly sha256: string
    }
  | {
      /** The key new tokens are signed with changed (or was first seen). */
      readonly type: 'key.rotated'
      readonly at: number
      readonly kid: string
      readonly previousKid: string | undefined
    }
  | (RequestContext & {
      /** An admin read: who looked at what. */
      readonly type: 'admin.revocations.read' | 'admin.audit.read' | 'admin.feed.opened' | 'admin.policy.explained'
      readonly at: number
      /** The admin key's name. */
      readonly by: string
      /** The path and the query as asked (filters; never a key). */
      readonly request: string
    })
  | (RequestContext & {
      /** The agent's owner vouched that it is still needed and rightly granted (an admin acting for them). */
      readonly type: 'agent.attested'
      readonly at: number
      readonly agent: AgentId
      /** The admin key's name (or the admin's identity) that recorded the attestation. */
      readonly by: string
      /** Epoch seconds when the next attestation is due. */
      readonly nextDue: number
      /** What the attester said, when anything. */
      readonly note?: string | undefined
    })
  | {
      /**
       * The agent's lifecycle state changed (attestation due or overdue, expiry
       * near, expired, orphaned, dormant, or back to good standing), and
       * whether Mandate now refuses it tokens for it.
       */
      readonly type: 'agent.lifecycle'
      readonly at: number
      readonly agent: AgentId
      readonly transition: LifecycleTransition
      /** True when the agent gets no tokens from now on until the cause is resolved. */
      readonly suspended: boolean
      /** Why, for people: never a token or a secret. */
      readonly detail: string
    }
  | {
      /** An anomaly rule matched the agent's traffic; a `quarantine` action also killed the agent (`revocationId`). */
      readonly type: 'agent.anomaly'
      readonly at: number
      readonly agent: AgentId
      /** The rule's name, as configured. */
      readonly rule: string
      readonly action: 'alert' | 'quarantine'
      /** What was seen against what was expected. */
      readonly detail: string
      readonly revocationId?: string | undefined
    }
  | ApprovalEvent

/** The agent, user and approval an approval record is about. */
interface ApprovalRef {
  readonly at: number
  readonly agent: AgentId
  readonly sub: Subject
  readonly subIssuer: string
  /** The approval's public id. */
  readonly approval: string
}

/** Human approval (CIBA): a request, its decision, or its end without one. */
export type ApprovalEvent =
  | (RequestContext &
      ApprovalRef & {
        /** An agent asked a person to approve one action; the approvers were notified by this record. */
        readonly type: 'approval.requested'
        readonly audience: string
        readonly scopes: readonly string[]
        /** RFC 9396 authorization_details as validated, JSON text (numbers in them need not be integers). */
        readonly details: string
        readonly bindingMessage?: string | undefined
        /** Who may decide, as the policy says it: `user`, `owner`, `group:NAME`. */
        readonly approvers: string
        /** The agent's purpose, from its policy: what the approvers are told it is for. */
        readonly purpose: string
        readonly expiresAt: number
        /** When an earlier approval of the same action covers it (`reuse`): that approval's id. */
        readonly reuses?: string | undefined
      })
  | (RequestContext &
      ApprovalRef & {
        readonly type: 'approval.decided'
        readonly decision: 'approved' | 'denied'
        /** Who decided: the admin key's name and person, or the IdP identity that signed in. */
        readonly by: string
        readonly via: 'admin_api' | 'link'
        readonly note?: string | undefined
      })
  | (ApprovalRef & {
      /** A pending or approved request ended without a token: a kill of its agent or user. */
      readonly type: 'approval.cancelled'
      readonly reason: string
    })

/** Most audiences of a denied request its record keeps (one is all a request may be granted). */
export const MAX_RECORDED_AUDIENCES = 4
/** Most scopes of a denied request its record keeps: a refused request cannot grow the log or the summaries without bound. */
export const MAX_RECORDED_SCOPES = 32

/** Lifecycle transitions an `agent.lifecycle` record names (docs/policies.md "Lifecycle"). */
export const LIFECYCLE_TRANSITIONS = ['attestation_due', 'attestation_overdue', 'expiry_near', 'expired', 'orphaned', 'dormant', 'reinstated'] as const
export type LifecycleTransition = (typeof LIFECYCLE_TRANSITIONS)[number]

export type AuditEventType = AuditEvent['type']

/**
 * Every event type the log records. The table declares the list (storage/schema.ts, which
 * drizzle-kit loads on its own); `satisfies` holds it to `AuditEventType`.
 */
export const AUDIT_EVENTS = STORED_EVENTS satisfies readonly AuditEventType[]

/** An event type the log records, or a family of them such as `token.*` or `admin.*`. */
export function isEventFilter(e: string): boolean {
  return (AUDIT_EVENTS as readonly string[]).includes(e) || (e.endsWith('.*') && AUDIT_EVENTS.some((t) => t.startsWith(e.slice(0, -1))))
}

/** Most records one page of a query of the log holds (`GET /admin/audit`, `mandate audit query`). */
export const MAX_PAGE = 500

/** Latest instant a query of the log may name: PostgreSQL's ISO output round-trips up to 9999-12-31T23:59:59Z. */
export const MAX_INSTANT = 253_402_300_799

export interface AuditReceipt {
  /** Position of the record in its writer's chain. */
  readonly seq: number
}

/** Append-only delegation log. */
export interface AuditLog {
  /** Resolves only once the record is durable; rejects otherwise (the caller fails closed). */
  append(event: AuditEvent): Promise<AuditReceipt>
}

/** Thrown by `append` when the record is not durable; `outcome` says whether it may still be. */
export class AuditUnavailable extends Error {
  override readonly name = 'AuditUnavailable'
  constructor(
    message: string,
    /** `not_written`: certainly not committed; `unknown`: the database's answer was lost. */
    readonly outcome: 'not_written' | 'unknown',
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}
