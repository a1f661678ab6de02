/**
 * The credential ledger's table (`agent_credentials`) on PostgreSQL or
 * PGlite through the same drizzle code: batched upserts that keep the
 * earliest first sighting and the latest last one, and the inventory's reads.
 */
import { eq, sql } from 'drizzle-orm'
import type { Db } from '../storage/database.js'
import { agentCredentials } from '../storage/schema.js'
import type { CredentialKind, CredentialLedgerStore, CredentialSighting } from '../tokens/credential-ledger.js'

/** Rows of one upsert statement at most: a flush of more is several statements. */
const BATCH_ROWS = 500

const sighting = (r: { agent: string; kind: string; credential: string; firstSeen: number; lastSeen: number }): CredentialSighting => ({
  agent: r.agent,
  kind: r.kind as CredentialKind,
  id: r.credential,
  firstSeen: Number(r.firstSeen),
  lastSeen: Number(r.lastSeen),
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
