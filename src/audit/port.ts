import type { AgentId, Jti, Subject } from '../core/claims.js'
import type { Revocation } from '../revocation/port.js'

export type AuditEvent =
  | {
      readonly type: 'token.issued'
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
      readonly expiresAt: number
      readonly policyHash: string
      readonly clientAddress: string | undefined
    }
  | {
      readonly type: 'token.denied'
      readonly at: number
      readonly agent: AgentId
      readonly sub: Subject | undefined
      readonly error: string
      readonly reason: string
      readonly clientAddress: string | undefined
    }

  | {
      readonly type: 'revocation.created' | 'revocation.lifted'
      readonly at: number
      /** The admin key's name, or the agent for an RFC 7009 self-revocation. */
      readonly by: string
      readonly revocation: Revocation
      readonly clientAddress: string | undefined
    }

export interface AuditReceipt {
  readonly seq: number
}

/** Append-only delegation log. */
export interface AuditLog {
  /** Resolves only once the record is durable; rejects otherwise. */
  append(event: AuditEvent): Promise<AuditReceipt>
}
