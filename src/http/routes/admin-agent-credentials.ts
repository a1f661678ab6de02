/**
 * The credentials part of the agent inventory (/admin/agents and
 * /admin/agents/{id}): each agent's credential kind, age and last use, read
 * from the credential ledger, and the suggested move away from shared secrets.
 */
import { z } from 'zod'
import type { CredentialSummary } from '../../core/credential-age.js'

const Instant = z.string().describe('RFC 3339, UTC.')
const AGE_STATES = ['fresh', 'rotate_soon', 'too_old'] as const

export const AgentCredentialsBody = z
  .strictObject({
    kind: z.enum(['secret', 'key', 'workload']).describe('`workload`: a short-lived platform token each time; nothing ages.'),
    state: z
      .enum([...AGE_STATES, 'unused'])
      .describe(
        'The worst of the credentials the policy accepts: `rotate_soon` within the warning of max_credential_age, `too_old` refused; `unused` when none was used yet.',
      ),
    max_age_days: z.number().describe('max_credential_age in force for this agent, days.'),
    oldest_age_days: z.int().nullable().describe('Age of the oldest credential the policy accepts, whole days since its first use.'),
    last_used_at: Instant.nullable(),
    suggested_fix: z.string().nullable().describe('For a shared secret: the move to private_key_jwt or workload identity.'),
    credentials: z
      .array(
        z.strictObject({
          kind: z.enum(['secret', 'key']),
          id: z.string().describe('A secret’s SHA-256 (hex, as the policy holds it); a key’s RFC 7638 thumbprint.'),
          first_used_at: Instant,
          last_used_at: Instant,
          age_days: z.int(),
          state: z.enum(AGE_STATES),
          in_policy: z.boolean().nullable().describe('Whether the policy still accepts it; null for keys published at a jwks_uri.'),
        }),
      )
      .describe('Every credential of the agent the ledger saw in use, the latest used first (written every few seconds, so the last use may lag).'),
  })
  .meta({ id: 'AgentCredentials' })

const iso = (t: number) => new Date(t * 1000).toISOString()

export function credentialsJson(s: CredentialSummary): z.infer<typeof AgentCredentialsBody> {
  return {
    kind: s.kind,
    state: s.state,
    max_age_days: s.maxAge / 86_400,
    oldest_age_days: s.oldestAgeDays ?? null,
    last_used_at: s.lastUsed === undefined ? null : iso(s.lastUsed),
    suggested_fix: s.suggestedFix ?? null,
    credentials: s.credentials.map((c) => ({
      kind: c.kind,
      id: c.id,
      first_used_at: iso(c.firstSeen),
      last_used_at: iso(c.lastSeen),
      age_days: c.ageDays,
      state: c.state,
      in_policy: c.inPolicy ?? null,
    })),
  }
}
