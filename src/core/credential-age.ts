/**
 * How old an agent's credential (a client secret, or a signing key) may be.
 * A credential's age is counted from the first time Mandate saw it in use
 * (the credential ledger), not from when it was written into a policy: a
 * policy file says nothing trustworthy about when a secret was made, and a
 * credential never presented has leaked nowhere through Mandate. Pure: the
 * times come in.
 */

import type { AgentPolicy } from '../policy/port.js'

/** Seconds in a day. */
const DAY = 86_400

/** A duration as policies and the config write it: whole days or hours, e.g. `90d`, `36h`. */
export const AGE_DURATION = /^([1-9]\d{0,4})(d|h)$/
export const AGE_DURATION_RULE = 'must be a duration in whole days or hours, e.g. 90d or 36h'

/** `90d` → seconds; undefined when malformed (the schemas refuse it first). */
export function parseAgeDuration(text: string): number | undefined {
  const m = AGE_DURATION.exec(text)
  if (m === null) return undefined
  return Number(m[1]) * (m[2] === 'd' ? DAY : 3600)
}

/** The default `max_credential_age`: 90 days. */
export const DEFAULT_MAX_CREDENTIAL_AGE = 90 * DAY
/** How long before `max_credential_age` the rotation is announced (a log line, the inventory's `rotate_soon`). */
export const DEFAULT_CREDENTIAL_WARN_BEFORE = 14 * DAY

/**
 * - `fresh`: younger than the warning threshold;
 * - `rotate_soon`: within `warnBefore` of the maximum: still accepted;
 * - `too_old`: at or past the maximum: refused.
 */
export type CredentialAgeState = 'fresh' | 'rotate_soon' | 'too_old'

export interface CredentialAgeRule {
  /** Seconds. */
  readonly maxAge: number
  /** Seconds. */
  readonly warnBefore: number
}

/** The state of a credential first seen at `firstSeen` (epoch seconds), at `now`. */
export function credentialAgeState(firstSeen: number, now: number, rule: CredentialAgeRule): CredentialAgeState {
  const age = now - firstSeen
  if (age >= rule.maxAge) return 'too_old'
  if (age >= rule.maxAge - rule.warnBefore) return 'rotate_soon'
  return 'fresh'
}

/** What a refused caller is told (RFC 6749 §5.2 `invalid_client`): the credential is genuine but must be rotated. */
export const CREDENTIAL_TOO_OLD = 'credential older than max_credential_age; rotate it'

/** The inventory filter (`--state shared-secret`) for agents still on `client_secret_basic`. */
export const SHARED_SECRET = 'shared-secret'

/** The move away from a shared secret the inventory suggests for every `client_secret_basic` agent. */
export const SHARED_SECRET_FIX =
  'move to private_key_jwt (a key pair whose private half never leaves the agent) or workload_identity (a short-lived token from the platform)'

/** One credential as the ledger saw it: epoch seconds. */
export interface SeenCredential {
  readonly kind: 'secret' | 'key'
  readonly id: string
  readonly firstSeen: number
  readonly lastSeen: number
}

export interface CredentialView extends SeenCredential {
  /** Whole days since first use. */
  readonly ageDays: number
  readonly state: CredentialAgeState
  /** Whether the agent's policy still accepts it; undefined when the policy's keys are published elsewhere (`jwks_uri`). */
  readonly inPolicy: boolean | undefined
}

export interface CredentialSummary {
  /** How the agent authenticates: `secret`, `key`, `workload` (nothing to age: a short-lived token each time). */
  readonly kind: 'secret' | 'key' | 'workload'
  /** The oldest accepted credential's state; `unused` when the ledger has seen none of them. */
  readonly state: CredentialAgeState | 'unused'
  readonly maxAge: number
  /** Days of the oldest credential the policy still accepts. */
  readonly oldestAgeDays: number | undefined
  readonly lastUsed: number | undefined
  readonly credentials: readonly CredentialView[]
  readonly suggestedFix: string | undefined
}

const RANK: Record<CredentialAgeState, number> = { fresh: 0, rotate_soon: 1, too_old: 2 }

/**
 * One agent's credentials as the inventory shows them: each one the ledger
 * saw (newest use first), whether the policy still accepts it, and the
 * worst state among those it accepts.
 */
export function summarizeCredentials(
  kind: CredentialSummary['kind'],
  accepted: ((c: SeenCredential) => boolean) | undefined,
  seen: readonly SeenCredential[],
  now: number,
  rule: CredentialAgeRule,
): CredentialSummary {
  const credentials = seen
    .map((c) => ({
      ...c,
      ageDays: Math.floor((now - c.firstSeen) / DAY),
      state: credentialAgeState(c.firstSeen, now, rule),
      inPolicy: accepted === undefined ? undefined : accepted(c),
    }))
    .sort((a, b) => b.lastSeen - a.lastSeen)
  const live = credentials.filter((c) => c.inPolicy !== false)
  const oldest = live.reduce<CredentialView | undefined>((o, c) => (o === undefined || c.firstSeen < o.firstSeen ? c : o), undefined)
  const state = live.reduce<CredentialAgeState | 'unused'>((s, c) => (s === 'unused' || RANK[c.state] > RANK[s] ? c.state : s), 'unused')
  return {
    kind,
    state: kind === 'workload' ? 'fresh' : state,
    maxAge: rule.maxAge,
    oldestAgeDays: oldest?.ageDays,
    lastUsed: credentials[0]?.lastSeen,
    credentials,
    suggestedFix: kind === 'secret' ? SHARED_SECRET_FIX : undefined,
  }
}

/** The ledger's reads the inventory needs (src/audit/credentials.ts). */
export interface CredentialReads {
  /** Every agent's summary, for `policies` (an agent of the ledger without a policy is left out). */
  summaries(policies: readonly AgentPolicy[], now: number): Promise<ReadonlyMap<string, CredentialSummary>>
  /** One agent's; undefined without a policy. */
  summary(policy: AgentPolicy | undefined, now: number): Promise<CredentialSummary | undefined>
}
