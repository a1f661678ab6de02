/**
 * Where every instance finds each agent's lifecycle: the `agent_lifecycle`
 * table (src/storage/schema.ts) on PostgreSQL or PGlite, or process memory
 * for a broker without a database (tests bring their own logs).
 *
 * Persisted as a table rather than derived from the delegation log at start:
 * an attestation made on one instance must reach the others while they run,
 * and recording a transition once across instances needs a row to update
 * conditionally. The `agent.attested` and `agent.lifecycle` records remain the
 * audit trail; this table is the working state.
 */
import { and, eq, sql } from 'drizzle-orm'
import type { Db } from '../storage/database.js'
import { agentLifecycle } from '../storage/schema.js'

export interface LifecycleRow {
  readonly agent: string
  readonly trackedSince: number
  readonly attestedAt: number | undefined
  readonly attestedBy: string | undefined
  readonly nextDue: number | undefined
  /** The conditions recorded last (`agent.lifecycle` records were written on entering each). */
  readonly conditions: readonly string[]
  readonly suspended: boolean
  readonly version: number
}

export interface LifecycleStore {
  /** Every agent's row. */
  list(): Promise<LifecycleRow[]>
  /** Starts tracking `agents` from `now`; an agent already tracked keeps its first time (the first instance wins). */
  track(agents: readonly string[], now: number): Promise<void>
  /** The agent's latest attestation (tracking it from `at` if it was not). */
  attest(agent: string, at: number, by: string, nextDue: number): Promise<void>
  /**
   * Records `conditions` for `agent` if its row is still at `version`; resolves true when this call made the
   * change (and so must write the transitions), false when another instance changed the row first.
   */
  transition(agent: string, version: number, conditions: readonly string[], suspended: boolean): Promise<boolean>
}

const rowOf = (r: typeof agentLifecycle.$inferSelect): LifecycleRow => ({
  agent: r.agent,
  trackedSince: r.trackedSince,
  attestedAt: r.attestedAt ?? undefined,
  attestedBy: r.attestedBy ?? undefined,
  nextDue: r.nextDue ?? undefined,
  conditions: r.conditions,
  suspended: r.suspended,
  version: r.version,
})

/** Agents tracked per INSERT statement. */
const TRACK_BATCH = 500

export function createSqlLifecycleStore(db: Db): LifecycleStore {
  return {
    async list() {
      return (await db.select().from(agentLifecycle)).map(rowOf)
    },
    async track(agents, now) {
      for (let i = 0; i < agents.length; i += TRACK_BATCH) {
        const batch = agents.slice(i, i + TRACK_BATCH).map((agent) => ({ agent, trackedSince: now }))
        await db.insert(agentLifecycle).values(batch).onConflictDoNothing({ target: agentLifecycle.agent })
      }
    },
    async attest(agent, at, by, nextDue) {
      await db
        .insert(agentLifecycle)
        .values({ agent, trackedSince: at, attestedAt: at, attestedBy: by, nextDue })
        .onConflictDoUpdate({
          target: agentLifecycle.agent,
          // Two attestations at once: the later one stands, whichever commits last.
          set: { attestedAt: at, attestedBy: by, nextDue },
          setWhere: sql`${agentLifecycle.attestedAt} is null or ${agentLifecycle.attestedAt} <= ${at}`,
        })
    },
    async transition(agent, version, conditions, suspended) {
      const updated = await db
        .update(agentLifecycle)
        .set({ conditions: [...conditions], suspended, version: version + 1 })
        .where(and(eq(agentLifecycle.agent, agent), eq(agentLifecycle.version, version)))
        .returning({ agent: agentLifecycle.agent })
      return updated.length === 1
    },
  }
}

/** The same, in process memory: one broker process without a database (its state ends with it). */
export function createMemoryLifecycleStore(): LifecycleStore {
  const rows = new Map<string, LifecycleRow>()
  return {
    list: () => Promise.resolve([...rows.values()]),
    track(agents, now) {
      for (const agent of agents) {
        if (!rows.has(agent)) {
          rows.set(agent, {
            agent,
            trackedSince: now,
            attestedAt: undefined,
            attestedBy: undefined,
            nextDue: undefined,
            conditions: [],
            suspended: false,
            version: 0,
          })
        }
      }
      return Promise.resolve()
    },
    attest(agent, at, by, nextDue) {
      const r = rows.get(agent)
      if (r === undefined || r.attestedAt === undefined || r.attestedAt <= at) {
        rows.set(agent, {
          ...(r ?? { agent, trackedSince: at, conditions: [], suspended: false, version: 0 }),
          attestedAt: at,
          attestedBy: by,
          nextDue,
        })
      }
      return Promise.resolve()
    },
    transition(agent, version, conditions, suspended) {
      const r = rows.get(agent)
      if (r === undefined || r.version !== version) return Promise.resolve(false)
      rows.set(agent, { ...r, conditions, suspended, version: version + 1 })
      return Promise.resolve(true)
    },
  }
}
