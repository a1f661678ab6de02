/**
 * The credential ledger's table (`agent_credentials`) on PostgreSQL or
 * PGlite through the same drizzle code: batched upserts that keep the
 * earliest first sighting and the latest last one, and the inventory's reads.
 */
import { eq, sql } from 'drizzle-orm'
import { summarizeCredentials, type CredentialAgeRule, type CredentialReads, type CredentialSummary, type SeenCredential } from '../core/credential-age.js'
import type { AgentPolicy } from '../policy/port.js'
import type { Db } from '../storage/database.js'
import { agentCredentials } from '../storage/schema.js'
import { keyThumbprint, type CredentialKind, type CredentialLedgerStore, type CredentialSighting } from '../tokens/credential-ledger.js'

/** Rows of one upsert statement at most: a flush of more is several statements. */
const BATCH_ROWS = 500

const sighting = (r: { agent: string; kind: string; credential: string; firstSeen: number; lastSeen: number }): CredentialSighting => ({
  agent: r.agent,
  kind: r.kind as CredentialKind,
  id: r.credential,
  firstSeen: r.firstSeen,
  lastSeen: r.lastSeen,
})

/** The ledger's store on `db`. */
export function createSqlCredentialStore(db: Db): CredentialLedgerStore {
  return {
    async record(batch) {
      const stored: CredentialSighting[] = []
      for (let i = 0; i < batch.length; i += BATCH_ROWS) {
        const rows = batch.slice(i, i + BATCH_ROWS)
        const written = await db
          .insert(agentCredentials)
          .values(rows.map((s) => ({ agent: s.agent, kind: s.kind, credential: s.id, firstSeen: s.firstSeen, lastSeen: s.lastSeen })))
          .onConflictDoUpdate({
            target: [agentCredentials.agent, agentCredentials.kind, agentCredentials.credential],
            set: {
              firstSeen: sql`least(${agentCredentials.firstSeen}, excluded.first_seen)`,
              lastSeen: sql`greatest(${agentCredentials.lastSeen}, excluded.last_seen)`,
            },
          })
          .returning()
        stored.push(...written.map(sighting))
      }
      return stored
    },
    async read(agent) {
      const rows = await db
        .select()
        .from(agentCredentials)
        .where(agent === undefined ? undefined : eq(agentCredentials.agent, agent))
        .orderBy(agentCredentials.agent, agentCredentials.firstSeen)
      return rows.map(sighting)
    },
  }
}

/** Which kind of credential a policy's authentication is, and which sightings it still accepts. */
function acceptedBy(policy: AgentPolicy): { kind: CredentialSummary['kind']; accepted: ((c: SeenCredential) => boolean) | undefined } {
  const auth = policy.authentication
  switch (auth.method) {
    case 'client_secret_basic': {
      const hashes = new Set(auth.secretHashes.map((h) => h.toString('hex')))
      return { kind: 'secret', accepted: (c) => c.kind === 'secret' && hashes.has(c.id) }
    }
    case 'private_key_jwt': {
      // Keys published at a jwks_uri change without the policy: whether one is still there is not known here.
      if (auth.jwksUri !== undefined) return { kind: 'key', accepted: undefined }
      const thumbprints = new Set(auth.keys.map((k) => keyThumbprint(k.key)))
      return { kind: 'key', accepted: (c) => c.kind === 'key' && thumbprints.has(c.id) }
    }
    case 'workload_identity':
    case 'spiffe':
      return { kind: 'workload', accepted: () => false }
  }
}

/** The inventory's reads of the ledger on `db`, aged against the config's rule unless a policy sets its own maximum. */
export function createCredentialReads(db: Db, rule: CredentialAgeRule): CredentialReads {
  const store = createSqlCredentialStore(db)
  const summarize = (policy: AgentPolicy, seen: readonly SeenCredential[], now: number) => {
    const { kind, accepted } = acceptedBy(policy)
    return summarizeCredentials(kind, accepted, seen, now, { ...rule, maxAge: policy.maxCredentialAge ?? rule.maxAge })
  }
  return {
    async summaries(policies, now) {
      const byAgent = new Map<string, CredentialSighting[]>()
      for (const s of await store.read()) byAgent.set(s.agent, [...(byAgent.get(s.agent) ?? []), s])
      return new Map(policies.map((p) => [p.agent, summarize(p, byAgent.get(p.agent) ?? [], now)]))
    },
    async summary(policy, now) {
      if (policy === undefined) return undefined
      return summarize(policy, await store.read(policy.agent), now)
    },
  }
}
