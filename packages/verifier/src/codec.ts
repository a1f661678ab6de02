/**
 * The one text form of a {@link Revocation}: what the broker's Redis holds,
 * what its `/revocations/feed` sends, and what a verifier reads. Free of any
 * transport and of any schema library: every field is checked by hand, here,
 * and a record that fails any check is not read at all.
 */
import { INSTANCE_ID, type AgentId, type Jti, type Subject } from './claims.js'
import type { Revocation, RevocationTarget, UserIssuer } from './revocation.js'

/**
 * Canonical JSON (fixed key order), so equal records are equal strings in
 * Redis. A user kill without an issuer leaves `iss` out, as records written
 * before kills named one did.
 */
export function encodeRevocation(r: Revocation): string {
  const t = r.target
  const target =
    t.kind === 'agent_sub'
      ? { kind: t.kind, agent: t.agent, sub: t.sub, ...(t.iss === null ? {} : { iss: t.iss }) }
      : t.kind === 'agent'
        ? { kind: t.kind, agent: t.agent }
        : t.kind === 'instance'
          ? { kind: t.kind, agent: t.agent, instance: t.instance }
          : t.kind === 'sub'
            ? { kind: t.kind, sub: t.sub, ...(t.iss === null ? {} : { iss: t.iss }) }
            : { kind: t.kind, jti: t.jti }
  return JSON.stringify({
    id: r.id,
    target,
    reason: r.reason,
    createdBy: r.createdBy,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    liftedAt: r.liftedAt,
    liftedBy: r.liftedBy,
  })
}

/** Undefined when `text` is not a revocation this version understands. */
export function decodeRevocation(text: string): Revocation | undefined {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return undefined
  }
  return readRevocation(json)
}

/** A plain JSON object (not an array, not null). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const isId = (v: unknown): v is string => typeof v === 'string' && v.length > 0
/** JSON numbers only: `JSON.parse('1e400')` is Infinity, never a time. */
const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v)
const optional = <T>(v: unknown, is: (v: unknown) => v is T): v is T | undefined => v === undefined || is(v)

/**
 * A user kill's issuer. Absent (or null) in records written before user kills
 * named one: those hold the `sub` at any issuer. Never NUL: the mirror's keys
 * rely on it (and PostgreSQL text holds none).
 */
function readIssuer(v: unknown): UserIssuer | false {
  if (v === undefined || v === null) return null
  return isId(v) && !v.includes('\u0000') ? v : false
}

/**
 * An instance as the broker accepts one ({@link INSTANCE_ID}): the mirror's
 * keys rely on it holding no NUL.
 */
const isInstance = (v: unknown): v is string => typeof v === 'string' && INSTANCE_ID.test(v)

function readTarget(t: unknown): RevocationTarget | undefined {
  if (!isRecord(t)) return undefined
  const { kind } = t
  switch (kind) {
    case 'jti':
    case 'chain':
      return isId(t['jti']) ? { kind, jti: t['jti'] as Jti } : undefined
    case 'agent':
      return isId(t['agent']) ? { kind, agent: t['agent'] as AgentId } : undefined
    case 'sub': {
      const iss = readIssuer(t['iss'])
      return isId(t['sub']) && iss !== false ? { kind, sub: t['sub'] as Subject, iss } : undefined
    }
    case 'instance':
      return isId(t['agent']) && isInstance(t['instance']) ? { kind, agent: t['agent'] as AgentId, instance: t['instance'] } : undefined
    case 'agent_sub': {
      const iss = readIssuer(t['iss'])
      return isId(t['agent']) && isId(t['sub']) && iss !== false ? { kind, agent: t['agent'] as AgentId, sub: t['sub'] as Subject, iss } : undefined
    }
    default:
      return undefined
  }
}

/**
 * Reads one record from parsed JSON; undefined unless every field is well
 * typed. Members this version does not know are ignored, so that a newer
 * broker can add one without cutting older verifiers off.
 */
export function readRevocation(json: unknown): Revocation | undefined {
  if (!isRecord(json)) return undefined
  const { id, reason, createdBy, createdAt, expiresAt, liftedAt, liftedBy } = json
  const target = readTarget(json['target'])
  if (target === undefined || !isId(id) || typeof reason !== 'string' || typeof createdBy !== 'string' || !isNumber(createdAt)) return undefined
  if (!optional(expiresAt, isNumber) || !optional(liftedAt, isNumber) || !optional(liftedBy, (v): v is string => typeof v === 'string')) return undefined
  return { id, target, reason, createdBy, createdAt, expiresAt, liftedAt, liftedBy }
}
