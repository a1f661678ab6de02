/**
 * Where approval requests live (src/approvals/store.ts, SQL): the port the
 * core's CIBA steps (core/ciba.ts) and the admin API use.
 */
import type { ApprovalStatus } from '../core/approval.js'
import type { approvalRequests } from '../storage/schema.js'

export type ApprovalRow = typeof approvalRequests.$inferSelect
/** A request to store: its handle and action in clear (the store keeps their SHA-256 only). */
export type NewApproval = Omit<typeof approvalRequests.$inferInsert, 'handleHash' | 'actionHash'> & { readonly handle: string; readonly actionKey: string }

/** How a request was decided. */
export type DecidedVia = NonNullable<ApprovalRow['decidedVia']>

/** What a poll found: the request after the poll, and whether it came sooner than its interval allows. */
export type Polled = { readonly row: ApprovalRow; readonly tooSoon: boolean } | undefined

export interface ApprovalFilter {
  readonly status?: ApprovalStatus | undefined
  readonly agent?: string | undefined
  readonly limit: number
  readonly offset: number
  /** Epoch seconds: a pending request past its expiry is listed as `expired`. */
  readonly now: number
}

export interface ApprovalStore {
  /**
   * Stores a new request unless the agent already has `maxPending` pending
   * ones (unexpired); false then. Instances racing may overshoot the bound by
   * one request each.
   */
  create(row: NewApproval, maxPending: number, now: number): Promise<boolean>
  /** The latest approval by a person (not itself a reuse) of this exact action (core/approval.ts actionKey) decided since `since`. */
  reusable(actionKey: string, since: number): Promise<ApprovalRow | undefined>
  /** Records a poll by the agent holding the handle; undefined when no such request is the agent's. */
  poll(handle: string, agent: string, now: number): Promise<Polled>
  get(id: string): Promise<ApprovalRow | undefined>
  list(filter: ApprovalFilter): Promise<{ rows: ApprovalRow[]; total: number }>
  /** Decides a pending, unexpired request; the updated row, or undefined when it was not pending any more. */
  decide(id: string, decision: 'approved' | 'denied', by: string, via: DecidedVia, note: string | undefined, now: number): Promise<ApprovalRow | undefined>
  /** Marks an approved request issued with `jti`: true for exactly one caller. */
  claimIssue(id: string, jti: string): Promise<boolean>
  /** Gives an issuance back when its token could not be recorded, so that the agent may poll again. */
  releaseIssue(id: string, jti: string): Promise<void>
  /** Cancels the pending and approved requests a kill covers; the rows cancelled. */
  cancel(target: CancelTarget, reason: string, now: number): Promise<ApprovalRow[]>
  /** Spends a signed approval link's `jti`: true for exactly one caller, ever. */
  spendLink(jti: string, now: number): Promise<boolean>
}

/** The requests a kill reaches (or one request, by id): an agent's, a user's (any issuer when `iss` is null), or an agent's for one user. */
export type CancelTarget =
  | { readonly kind: 'id'; readonly id: string }
  | { readonly kind: 'agent'; readonly agent: string }
  | { readonly kind: 'sub'; readonly iss: string | null; readonly sub: string }
  | { readonly kind: 'agent_sub'; readonly agent: string; readonly iss: string | null; readonly sub: string }
