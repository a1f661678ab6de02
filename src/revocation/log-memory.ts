import type { AgentId, Jti, Subject } from '../core/claims.js'
import { KILL_KINDS, type Revocation, type RevocationLog, type RevocationTarget, type UserIssuer } from './port.js'

/**
 * The revocation log in process memory: tests, and the reference for the SQL
 * adapter (`createSqlRevocationLog`), which behaves identically. Nothing
 * survives the process.
 */
export function createMemoryRevocationLog(): RevocationLog {
  const byId = new Map<string, Revocation>()

  return {
    async insert(record) {
      const stored = storableRevocation(record)
      if (byId.has(stored.id)) throw duplicateRevocation(stored.id)
      byId.set(stored.id, stored)
    },

    async lift(id, by, at) {
      checkLift(by, at)
      const key = normalizeId(id)
      const existing = key === undefined ? undefined : byId.get(key)
      if (existing === undefined) return undefined
      if (!KILL_KINDS.has(existing.target.kind)) throw notLiftable(existing)
      // Lifted once: a second lift changes nothing, the first lifter is kept.
      if (existing.liftedAt !== undefined) return { record: existing, changed: false }
      const lifted: Revocation = Object.freeze({ ...existing, liftedAt: at, liftedBy: by })
      byId.set(lifted.id, lifted)
      return { record: lifted, changed: true }
    },

    async get(id) {
      const key = normalizeId(id)
      return key === undefined ? undefined : byId.get(key)
    },

    async listRelevant(now) {
      checkNow(now)
      return [...byId.values()].filter((r) => isRelevant(r, now)).sort(oldestFirst)
    },

    async list({ limit, before }) {
      checkLimit(limit)
      const newest = [...byId.values()].sort((a, b) => oldestFirst(b, a))
      if (before === undefined) return newest.slice(0, limit)
      const key = normalizeId(before)
      const cursor = key === undefined ? undefined : byId.get(key)
      // An unknown cursor has nothing older than it.
      if (cursor === undefined) return []
      return newest.filter((r) => oldestFirst(r, cursor) < 0).slice(0, limit)
    },
  } satisfies RevocationLog
}

// What both adapters share: the rules a stored record obeys (the SQL table's
// types and CHECKs, enforced before the database sees the record), and the
// orders they answer in.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** Latest instant stored: 9999-12-31T23:59:59Z, the last second PostgreSQL and ISO 8601 both write plainly. */
const MAX_TIME = 253_402_300_799

/** A UUID in canonical form, lower-cased as PostgreSQL returns it; undefined for anything else. */
export function normalizeId(id: string): string | undefined {
  return typeof id === 'string' && UUID.test(id) ? id.toLowerCase() : undefined
}

/**
 * The record as the log stores and returns it: a fresh frozen object with
 * exactly the fields of `Revocation`, the id lower-cased. Throws `TypeError`
 * when the record cannot be stored: an id that is not a UUID; a target that
 * does not match its kind (a user kill's `iss` is a non-empty string or
 * `null`, never absent); a time that is not whole epoch seconds between
 * 1970 and 9999; a lift on a non-kill, or `liftedAt` without `liftedBy` (or
 * the reverse); a string holding NUL (PostgreSQL text cannot).
 */
export function storableRevocation(record: Revocation): Revocation {
  const id = normalizeId(record.id)
  if (id === undefined) throw new TypeError('revocation id must be a UUID')
  const target = storableTarget(record.target)
  checkTime('createdAt', record.createdAt)
  if (record.expiresAt !== undefined) checkTime('expiresAt', record.expiresAt)
  if ((record.liftedAt === undefined) !== (record.liftedBy === undefined)) {
    throw new TypeError('liftedAt and liftedBy are set together')
  }
  if (record.liftedAt !== undefined) {
    if (!KILL_KINDS.has(target.kind)) throw new TypeError(`a ${target.kind} revocation cannot be lifted`)
    checkTime('liftedAt', record.liftedAt)
    checkText('liftedBy', record.liftedBy)
  }
  checkText('reason', record.reason)
  checkText('createdBy', record.createdBy)
  return Object.freeze({
    id,
    target,
    reason: record.reason,
    createdBy: record.createdBy,
    createdAt: record.createdAt,
    expiresAt: record.expiresAt,
    liftedAt: record.liftedAt,
    liftedBy: record.liftedBy,
  })
}

function storableTarget(target: RevocationTarget): RevocationTarget {
  const kind: unknown = (target as { kind?: unknown } | undefined)?.kind
  switch (kind) {
    case 'jti':
    case 'chain':
      return Object.freeze({ kind, jti: checkText('target.jti', (target as { jti?: unknown }).jti) as Jti })
    case 'agent':
      return Object.freeze({ kind, agent: checkText('target.agent', (target as { agent?: unknown }).agent) as AgentId })
    case 'sub':
      return Object.freeze({
        kind,
        sub: checkText('target.sub', (target as { sub?: unknown }).sub) as Subject,
        iss: checkIssuer((target as { iss?: unknown }).iss),
      })
    case 'agent_sub':
      return Object.freeze({
        kind,
        agent: checkText('target.agent', (target as { agent?: unknown }).agent) as AgentId,
        sub: checkText('target.sub', (target as { sub?: unknown }).sub) as Subject,
        iss: checkIssuer((target as { iss?: unknown }).iss),
      })
    case 'instance': {
      const instance = checkText('target.instance', (target as { instance?: unknown }).instance)
      if (instance === '') throw new TypeError('target.instance must not be empty')
      return Object.freeze({ kind, agent: checkText('target.agent', (target as { agent?: unknown }).agent) as AgentId, instance })
    }
    default:
      throw new TypeError('unknown revocation kind')
  }
}

/** A user kill names its issuer, or `null` (any issuer) explicitly: a forgotten issuer must not widen a kill. */
function checkIssuer(value: unknown): UserIssuer {
  if (value === null) return null
  if (checkText('target.iss', value) === '') throw new TypeError('target.iss must not be empty')
  return value as string
}

function checkText(field: string, value: unknown): string {
  if (typeof value !== 'string') throw new TypeError(`${field} must be a string`)
  if (value.includes('\u0000')) throw new TypeError(`${field} must not contain NUL`)
  return value
}

function checkTime(field: string, value: unknown): void {
  if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) > MAX_TIME) {
    throw new TypeError(`${field} must be whole epoch seconds between 1970 and 9999`)
  }
}

/** Checks `lift`'s arguments. Throws `TypeError`. */
export function checkLift(by: string, at: number): void {
  checkText('by', by)
  checkTime('at', at)
}

/** `listRelevant`'s `now` may carry a fraction (`Date.now() / 1000`). Throws `TypeError`. */
export function checkNow(now: number): void {
  if (!Number.isFinite(now) || now < 0 || now > MAX_TIME) throw new TypeError('now must be epoch seconds between 1970 and 9999')
}

/** Throws `TypeError` unless `limit` is a whole number ≥ 0. */
export function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) throw new TypeError('limit must be a whole number ≥ 0')
}

/**
 * Relevant at `now`: every kill, lifted or not (a lift never revives tokens
 * issued before the kill), and jti/chain entries not yet expired. An entry
 * without `expiresAt` never lapses.
 */
export function isRelevant(r: Revocation, now: number): boolean {
  return KILL_KINDS.has(r.target.kind) || r.expiresAt === undefined || r.expiresAt > now
}

/** Order by (createdAt, id), ids compared as PostgreSQL compares UUIDs (bytes; same as lower-case hex). */
export function oldestFirst(a: Revocation, b: Revocation): number {
  return a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}

export function duplicateRevocation(id: string): Error {
  return new Error(`revocation ${id} already exists`)
}

export function notLiftable(r: Revocation): TypeError {
  return new TypeError(`a ${r.target.kind} revocation cannot be lifted`)
}
