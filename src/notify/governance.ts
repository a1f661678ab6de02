/**
 * Governance notifications (docs/notifications.md): the `agent.*` webhook
 * events made from the delegation log's governance records, `agent.lifecycle`
 * (one event type per transition) and `agent.anomaly` (a quarantine, an
 * alert), their Standard Webhooks and Slack bodies, and their message ids.
 * Pure: no I/O, no clock.
 */
import { createHash } from 'node:crypto'
import { z } from 'zod'
import { LIFECYCLE_TRANSITIONS, type LifecycleTransition } from '../audit/port.js'
import type { LogRecord, RecordSelector } from '../ssf/record-outbox.js'
import { mrkdwn, type WebhookEventType, type WebhookFormat } from './events.js'

/**
 * The webhook event each lifecycle transition is told as. `expired` and
 * `reinstated` get types of their own: an agent's tokens stopping at its
 * policy's `expires` and an agent back in good standing (attested again, its
 * owner back, used again) are what an owner acts on, or stops acting on.
 */
export const LIFECYCLE_EVENTS = {
  attestation_due: 'agent.attestation_due',
  attestation_overdue: 'agent.attestation_overdue',
  expiry_near: 'agent.expiry_near',
  expired: 'agent.expired',
  orphaned: 'agent.orphaned',
  dormant: 'agent.dormant',
  reinstated: 'agent.reinstated',
} as const satisfies Record<LifecycleTransition, WebhookEventType>

/** The webhook event each anomaly action is told as: a quarantine (the agent was killed), or an alert only. */
export const ANOMALY_EVENTS = { quarantine: 'agent.quarantined', alert: 'agent.anomaly_alert' } as const satisfies Record<
  'alert' | 'quarantine',
  WebhookEventType
>

/** The human-approval records told as webhook events, each under its own name. */
export const APPROVAL_EVENTS = ['approval.requested', 'approval.decided'] as const satisfies readonly WebhookEventType[]

export type GovernanceEventType =
  (typeof LIFECYCLE_EVENTS)[LifecycleTransition] | (typeof ANOMALY_EVENTS)[keyof typeof ANOMALY_EVENTS] | (typeof APPROVAL_EVENTS)[number]

/** Where the record sits in the delegation log: `GET /admin/audit` shows it under these. */
interface RecordPlace {
  readonly id: number
  readonly chain: string
  readonly seq: number
}

/** One governance event: the record it was made from, read and checked. */
export type GovernanceEvent = {
  readonly type: GovernanceEventType
  readonly record: RecordPlace
  /** Epoch seconds: the record's `at`. */
  readonly at: number
  readonly agent: string
  readonly detail: string
} & (
  | { readonly kind: 'lifecycle'; readonly transition: LifecycleTransition; readonly suspended: boolean }
  | { readonly kind: 'anomaly'; readonly rule: string; readonly action: 'alert' | 'quarantine'; readonly revocationId: string | undefined }
  | { readonly kind: 'approval'; readonly approval: ApprovalFields }
)

/** What an approval event tells: the request (who, for whom, what exactly), or the decision. */
export interface ApprovalFields {
  readonly id: string
  readonly user: { readonly iss: string; readonly sub: string }
  readonly audience?: string | undefined
  readonly scopes?: readonly string[] | undefined
  /** RFC 9396 details as the request carried them (parsed JSON). */
  readonly authorizationDetails?: unknown
  readonly bindingMessage?: string | undefined
  readonly approvers?: string | undefined
  readonly purpose?: string | undefined
  readonly expiresAt?: number | undefined
  readonly decision?: 'approved' | 'denied' | undefined
  readonly by?: string | undefined
  readonly via?: string | undefined
}

/** The selectors of the records told as any of `events`, for the record scan; empty when the webhook takes none. */
export function governanceSelectors(events: readonly string[]): RecordSelector[] {
  const told = <K extends string>(map: Record<K, string>) => (Object.keys(map) as K[]).filter((k) => events.includes(map[k]))
  const transitions = told(LIFECYCLE_EVENTS)
  const actions = told(ANOMALY_EVENTS)
  return [
    ...(transitions.length === 0 ? [] : [{ event: 'agent.lifecycle' as const, field: 'transition', values: transitions }]),
    ...(actions.length === 0 ? [] : [{ event: 'agent.anomaly' as const, field: 'action', values: actions }]),
    // An approval record is told under its own event name: the record's `event` field is the selector.
    ...APPROVAL_EVENTS.filter((e) => events.includes(e)).map((e) => ({ event: e, field: 'event', values: [e] })),
  ]
}

// The fields a governance record holds (src/audit/record.ts writes them), checked before any is used.
const Common = { at: z.number().int(), agent: z.string().min(1), detail: z.string() }
const ApprovalCommon = { at: z.number().int(), agent: z.string().min(1), sub: z.string(), sub_iss: z.string(), approval: z.string().min(1) }
const StoredRecord = z.discriminatedUnion('event', [
  z.object({
    event: z.literal('approval.requested'),
    ...ApprovalCommon,
    aud: z.string(),
    scopes: z.array(z.string()),
    authorization_details: z.string(),
    binding_message: z.string().optional(),
    approvers: z.string(),
    purpose: z.string().optional(),
    expires_at: z.number().int(),
  }),
  z.object({
    event: z.literal('approval.decided'),
    ...ApprovalCommon,
    decision: z.enum(['approved', 'denied']),
    by: z.string(),
    via: z.string(),
  }),
  z.object({ event: z.literal('agent.lifecycle'), ...Common, transition: z.enum(LIFECYCLE_TRANSITIONS), suspended: z.boolean() }),
  z.object({
    event: z.literal('agent.anomaly'),
    ...Common,
    rule: z.string().min(1),
    action: z.enum(['alert', 'quarantine']),
    revocation_id: z.string().optional(),
  }),
])

/** The event a governance record is told as, or undefined when it is not one this version reads. */
export function governanceEventOf(r: LogRecord): GovernanceEvent | undefined {
  let json: unknown
  try {
    json = JSON.parse(r.record)
  } catch {
    return undefined
  }
  const parsed = StoredRecord.safeParse(json)
  if (!parsed.success) return undefined
  const d = parsed.data
  const record = { id: r.id, chain: r.chain, seq: r.seq }
  if (d.event === 'approval.requested' || d.event === 'approval.decided') return approvalEventOf(d, record)
  const common = { record, at: d.at, agent: d.agent, detail: d.detail }
  if (d.event === 'agent.lifecycle')
    return { ...common, kind: 'lifecycle', type: LIFECYCLE_EVENTS[d.transition], transition: d.transition, suspended: d.suspended }
  return { ...common, kind: 'anomaly', type: ANOMALY_EVENTS[d.action], rule: d.rule, action: d.action, revocationId: d.revocation_id }
}

function approvalEventOf(d: Extract<z.infer<typeof StoredRecord>, { event: 'approval.requested' | 'approval.decided' }>, record: RecordPlace): GovernanceEvent {
  const user = { iss: d.sub_iss, sub: d.sub }
  if (d.event === 'approval.decided') {
    const approval = { id: d.approval, user, decision: d.decision, by: d.by, via: d.via }
    return { type: d.event, kind: 'approval', record, at: d.at, agent: d.agent, detail: `${d.decision} by ${d.by}`, approval }
  }
  let details: unknown = d.authorization_details
  try {
    details = JSON.parse(d.authorization_details)
  } catch {
    // Written by this broker as JSON; kept as text should it ever not be.
  }
  const approval = {
    id: d.approval,
    user,
    audience: d.aud,
    scopes: d.scopes,
    authorizationDetails: details,
    bindingMessage: d.binding_message,
    approvers: d.approvers,
    purpose: d.purpose,
    expiresAt: d.expires_at,
  }
  return { type: d.event, kind: 'approval', record, at: d.at, agent: d.agent, detail: d.binding_message ?? `${d.aud} ${d.scopes.join(' ')}`, approval }
}

/**
 * The message id (`webhook-id`) of a governance event for one webhook: the
 * same whichever instance makes it, so that a receiver drops a redelivery by
 * it (Standard Webhooks, "Idempotency"). The record is named by its chain and
 * position, which its hash covers; `msg_` and 128 bits of SHA-256, base64url.
 */
export function governanceMessageId(webhook: string, e: Pick<GovernanceEvent, 'type' | 'record'>): string {
  const digest = createHash('sha256').update(`mandate-webhook\0audit:${e.record.chain}:${e.record.seq}\0${webhook}\0${e.type}`).digest()
  return `msg_${digest.subarray(0, 16).toString('base64url')}`
}

/**
 * Standard Webhooks payload: `type`, `timestamp` (the record's time, RFC 3339, so a redelivery sends the same bytes), `data`.
 * `link`: an approval request's signed one-time link to the approver's sign-in page, when there is one.
 */
export function governanceStandardPayload(e: GovernanceEvent, link?: string): Record<string, unknown> {
  const audit = { id: e.record.id, chain: e.record.chain, seq: e.record.seq }
  const data =
    e.kind === 'lifecycle'
      ? { agent: e.agent, transition: e.transition, suspended: e.suspended, detail: e.detail, at: e.at, audit }
      : e.kind === 'anomaly'
        ? { agent: e.agent, rule: e.rule, action: e.action, detail: e.detail, revocation_id: e.revocationId ?? null, at: e.at, audit }
        : { ...approvalData(e.agent, e.approval, e.at, audit), ...(link === undefined ? {} : { link }) }
  return { type: e.type, timestamp: new Date(e.at * 1000).toISOString(), data }
}

/** An approval event's `data`: what the approvers need to decide, or the decision; null members left in for a stable shape. */
function approvalData(agent: string, a: ApprovalFields, at: number, audit: object): Record<string, unknown> {
  const common = { approval_id: a.id, agent, user: a.user, at, audit }
  if (a.decision !== undefined) return { ...common, decision: a.decision, by: a.by ?? null, via: a.via ?? null }
  return {
    ...common,
    purpose: a.purpose ?? null,
    audience: a.audience ?? null,
    scopes: a.scopes ?? [],
    authorization_details: a.authorizationDetails ?? [],
    binding_message: a.bindingMessage ?? null,
    approvers: a.approvers ?? null,
    expires_at: a.expiresAt === undefined ? null : new Date(a.expiresAt * 1000).toISOString(),
  }
}

/** What happened, in words, for the Slack text. */
const LIFECYCLE_WORDS: Record<LifecycleTransition, string> = {
  attestation_due: 'is due for attestation',
  attestation_overdue: 'is overdue for attestation',
  expiry_near: 'expires soon',
  expired: 'has expired',
  orphaned: 'has lost its owner',
  dormant: 'is dormant',
  reinstated: 'is back in good standing',
}

/** Slack incoming-webhook payload: `text` (the notification's fallback) and a section and a context block; every name escaped. */
export function governanceSlackPayload(e: GovernanceEvent, link?: string): Record<string, unknown> {
  const agent = mrkdwn(e.agent)
  const detail = mrkdwn(e.detail)
  const text =
    e.kind === 'lifecycle'
      ? `Mandate: agent ${agent} ${LIFECYCLE_WORDS[e.transition]}${e.suspended ? ' (tokens suspended)' : ''}: ${detail}`
      : e.kind === 'approval'
        ? approvalText(agent, e.approval, link)
        : e.action === 'quarantine'
          ? `Mandate: agent ${agent} quarantined by anomaly rule ${mrkdwn(e.rule)}: ${detail}`
          : `Mandate: anomaly on agent ${agent} (rule ${mrkdwn(e.rule)}): ${detail}`
  const context = `${e.type} · audit record ${e.record.chain}:${e.record.seq} · ${new Date(e.at * 1000).toISOString()}`
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text } },
      { type: 'context', elements: [{ type: 'mrkdwn', text: context }] },
    ],
  }
}

/** An approval in words: the request with the binding message and how to decide it, or the decision. */
function approvalText(agent: string, a: ApprovalFields, link: string | undefined): string {
  const user = mrkdwn(a.user.sub)
  if (a.decision !== undefined) return `Mandate: approval ${mrkdwn(a.id)} for agent ${agent} (user ${user}) ${a.decision} by ${mrkdwn(a.by ?? '?')}`
  const what = `${mrkdwn(a.audience ?? '')} ${mrkdwn((a.scopes ?? []).join(' '))}`
  const message = a.bindingMessage === undefined ? '' : ` “${mrkdwn(a.bindingMessage)}”`
  // Slack's link form: the URL is ours (base64url token), and `|`/`>` cannot occur in it.
  const page = link === undefined ? '' : ` or <${link}|sign in and decide>`
  return `Mandate: agent ${agent} asks approval for user ${user}:${message} (${what}; approvers: ${mrkdwn(a.approvers ?? '?')}). Decide with \`mandate approvals approve ${mrkdwn(a.id)}\` or \`deny\`${page}.`
}

/** The body POSTed for `e` in `format`, as the bytes signed and sent. */
export function governanceBody(format: WebhookFormat, e: GovernanceEvent, link?: string): string {
  return JSON.stringify(format === 'slack' ? governanceSlackPayload(e, link) : governanceStandardPayload(e, link))
}
