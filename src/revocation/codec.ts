/**
 * The one text form of a {@link Revocation}: what Redis holds, what the
 * broker's `/revocations/feed` sends, and what a verifier reads. Free of any
 * transport, so that the verifier package can read records without loading a
 * Redis client.
 */
import { z } from 'zod'
import type { Revocation, RevocationTarget } from './port.js'

const Id = z.string().min(1)
/** Absent in records written before user kills named an issuer: those hold the `sub` at any issuer. No NUL: the mirror's keys rely on it. */
const Issuer = z
  .string()
  .min(1)
  // eslint-disable-next-line no-control-regex -- PostgreSQL text holds no NUL
  .regex(/^[^\u0000]*$/)
  .nullish()
  .transform((iss) => iss ?? null)
const StoredTarget = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('jti'), jti: Id }),
  z.object({ kind: z.literal('chain'), jti: Id }),
  z.object({ kind: z.literal('agent'), agent: Id }),
  z.object({ kind: z.literal('sub'), sub: Id, iss: Issuer }),
  z.object({ kind: z.literal('agent_sub'), agent: Id, sub: Id, iss: Issuer }),
])
const StoredRevocation = z.object({
  id: Id,
  target: StoredTarget,
  reason: z.string(),
  createdBy: z.string(),
  createdAt: z.number(),
  expiresAt: z.number().optional(),
  liftedAt: z.number().optional(),
  liftedBy: z.string().optional(),
})

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
  const parsed = StoredRevocation.safeParse(json)
  if (!parsed.success) return undefined
  const r = parsed.data
  return {
    id: r.id,
    target: r.target as RevocationTarget,
    reason: r.reason,
    createdBy: r.createdBy,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    liftedAt: r.liftedAt,
    liftedBy: r.liftedBy,
  }
}
