/**
 * How old an agent's credential (a client secret, or a signing key) may be.
 * A credential's age is counted from the first time Mandate saw it in use
 * (the credential ledger), not from when it was written into a policy: a
 * policy file says nothing trustworthy about when a secret was made, and a
 * credential never presented has leaked nowhere through Mandate. Pure: the
 * times come in.
 */

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
