/**
 * The lifecycle of every agent, kept in memory for the token endpoint and
 * recorded in the delegation log: a sweep at start and every
 * `governance.lifecycle_sweep_seconds` re-reads the `agent_lifecycle` table
 * (attestations made on any instance) and the usage summaries (the last
 * token), evaluates each agent (core/lifecycle.ts), and writes each
 * transition once across instances; attestations are recorded here; the
 * owners directory is a file re-read when it changes.
 *
 * The token endpoint only reads the map this keeps: no I/O on the hot path.
 */
import { readFile, stat } from 'node:fs/promises'
import type { AgentId } from '../core/claims.js'
import { describeCause } from '../core/errors.js'
import type { UsageReads } from '../core/inventory.js'
import {
  evaluateLifecycle,
  LIFECYCLE_CONDITIONS,
  standingRefusal,
  transitionsOf,
  type AgentLifecycleView,
  type AgentStanding,
  type LifecycleReads,
  type LifecycleSettings,
  type LifecycleStanding,
} from '../core/lifecycle.js'
import type { AgentPolicy, PolicyStore } from '../policy/port.js'
import type { Logger } from '../telemetry/log.js'
import type { LifecycleRow, LifecycleStore } from './lifecycle-sql.js'
import type { AuditLog } from './port.js'

export interface LifecycleServiceOptions {
  readonly store: LifecycleStore
  readonly audit: AuditLog
  readonly policies: PolicyStore
  /** The usage summaries (the last token of each agent); undefined without a database: then no agent is found dormant. */
  readonly usage: UsageReads | undefined
  readonly settings: LifecycleSettings
  /** The owners directory; undefined: no agent is orphaned. */
  readonly ownersFile: string | undefined
  /** Epoch seconds. */
  readonly now: () => number
  readonly sweepMs: number
  /** How often the owners file is stat-polled for a change. */
  readonly pollMs: number
  readonly logger: Logger
}

export interface Attestation {
  readonly agent: AgentId
  /** The admin key's name. */
  readonly by: string
  readonly note: string | undefined
  readonly clientAddress?: string | undefined
  readonly traceId?: string | undefined
}

export interface LifecycleService extends LifecycleStanding, LifecycleReads {
  /** Evaluates every agent now and records its transitions; sweeps run one at a time. Rejects when the database does. */
  sweep(): Promise<void>
  /**
   * Records that the agent's owner vouched for it (an `agent.attested` record, durable before this resolves),
   * then reinstates it here at once and on the other instances at their next sweep. Resolves with when the next is due.
   */
  attest(a: Attestation): Promise<{ readonly at: number; readonly nextDue: number }>
  close(): Promise<void>
}

/** Agents evaluated and recorded at once in a sweep (their appends share group commits). */
const SWEEP_BATCH = 50

/** Reads the owners directory: one identity a line, `#` to the end of a line is a comment; compared without case. */
export function parseOwners(text: string): Set<string> {
  const owners = new Set<string>()
  for (const line of text.split('\n')) {
    const id = line.replace(/#.*$/, '').trim().toLowerCase()
    if (id !== '') owners.add(id)
  }
  return owners
}

/** The owners directory, re-read when the file changes; `listed` undefined without one. */
interface OwnersDirectory {
  listed(p: AgentPolicy): boolean | undefined
  close(): void
}

/** Reads the owners file now (throws `TypeError` when it cannot), then polls it; `onChange` after each change read. */
async function openOwnersDirectory(file: string | undefined, pollMs: number, log: Logger, onChange: () => void): Promise<OwnersDirectory> {
  if (file === undefined) return { listed: () => undefined, close: () => {} }
  let owners = new Set<string>()
  let stamp = ''
  const read = async (): Promise<boolean> => {
    const s = await stat(file)
    const now = `${s.ino}:${s.size}:${s.mtimeMs}`
    if (now === stamp) return false
    owners = parseOwners(await readFile(file, 'utf8'))
    stamp = now
    return true
  }
  try {
    await read()
  } catch (err) {
    throw new TypeError(`governance.owners_file cannot be read: ${describeCause(err) ?? 'unknown'}`)
  }
  const poller = setInterval(() => {
    read().then(
      (changed) => {
        if (changed) onChange()
      },
      // The last directory read stays in force: an unreadable file orphans nobody and reinstates nobody.
      (err: unknown) => log.warn({ cause: describeCause(err) }, 'owners file unreadable; the last one read stays in force'),
    )
  }, pollMs)
  poller.unref()
  return { listed: (p) => owners.has(p.owner.trim().toLowerCase()), close: () => clearInterval(poller) }
}

interface Recorder {
  readonly store: LifecycleStore
  readonly audit: AuditLog
  readonly settings: LifecycleSettings
  readonly owners: OwnersDirectory
  readonly log: Logger
}

/**
 * Evaluates one agent against its row and, when its conditions changed, records the change: of the
 * instances sweeping at once, only the one whose conditional update matched writes the transitions.
 */
async function recordAgent(r: Recorder, policy: AgentPolicy, row: LifecycleRow, lastTokenAt: number | undefined, now: number): Promise<AgentStanding> {
  const facts = { trackedSince: row.trackedSince, attestedAt: row.attestedAt, attestedBy: row.attestedBy, lastTokenAt, ownerListed: r.owners.listed(policy) }
  const e = evaluateLifecycle(policy, facts, r.settings, now)
  const result: AgentStanding = { ...facts, dormant: e.conditions.includes('dormant') }
  if (e.suspended === row.suspended && e.conditions.length === row.conditions.length && e.conditions.every((c) => row.conditions.includes(c))) {
    return result
  }
  if (!(await r.store.transition(policy.agent, row.version, e.conditions, e.suspended))) return result
  try {
    for (const t of transitionsOf(row, e, policy, facts, r.settings)) {
      await r.audit.append({ type: 'agent.lifecycle', at: now, agent: policy.agent, ...t })
    }
  } catch (err) {
    // Put the row back so that a later sweep (here or elsewhere) records the transitions.
    await r.store.transition(policy.agent, row.version + 1, row.conditions, row.suspended).catch(() => {})
    r.log.warn({ agent: policy.agent, cause: describeCause(err) }, 'lifecycle transition not recorded; retried at the next sweep')
  }
  return result
}

/**
 * Opens the lifecycle: reads the owners file and runs the first sweep before it resolves (so a broker never
 * serves with an agent's standing unknown). Throws `TypeError` when the owners file cannot be read at start.
 */
export async function openLifecycle(o: LifecycleServiceOptions): Promise<LifecycleService> {
  const log = o.logger
  let standing = new Map<string, AgentStanding>()
  // Without the summaries nothing can be found dormant: never-used and busy agents would look alike.
  const settings: LifecycleSettings = o.usage === undefined ? { ...o.settings, dormantAfter: Number.POSITIVE_INFINITY } : o.settings
  // A changed directory is swept at once (`background` is defined below, before any poll can fire).
  const owners = await openOwnersDirectory(o.ownersFile, o.pollMs, log, () => void background())
  const recorder: Recorder = { store: o.store, audit: o.audit, settings, owners, log }
  const standingOf = (p: AgentPolicy, now: number): AgentStanding =>
    standing.get(p.agent) ?? { trackedSince: now, attestedAt: undefined, attestedBy: undefined, dormant: false }

  async function sweepOnce(): Promise<void> {
    const now = o.now()
    const policies = o.policies.snapshot().agents()
    let rows = new Map((await o.store.list()).map((r) => [r.agent, r]))
    const untracked = policies.filter((p) => !rows.has(p.agent)).map((p) => p.agent)
    if (untracked.length > 0) {
      await o.store.track(untracked, now)
      // Re-read: another instance may have tracked some first, from its own time.
      rows = new Map((await o.store.list()).map((r) => [r.agent, r]))
    }
    const usage = o.usage === undefined ? undefined : await o.usage.usage(now)
    const next = new Map<string, AgentStanding>()
    for (let i = 0; i < policies.length; i += SWEEP_BATCH) {
      const batch = policies.slice(i, i + SWEEP_BATCH)
      const results = await Promise.all(
        batch.map((p) => {
          const row = rows.get(p.agent)
          return row === undefined ? Promise.resolve(standingOf(p, now)) : recordAgent(recorder, p, row, usage?.get(p.agent)?.lastTokenAt, now)
        }),
      )
      batch.forEach((p, j) => next.set(p.agent, results[j]!))
    }
    // An attestation taken here while this sweep ran is newer than the rows it read: keep it.
    for (const [agent, s] of standing) {
      const n = next.get(agent)
      if (n !== undefined && s.attestedAt !== undefined && (n.attestedAt === undefined || n.attestedAt < s.attestedAt)) {
        next.set(agent, { ...n, attestedAt: s.attestedAt, attestedBy: s.attestedBy, dormant: false })
      }
    }
    standing = next
  }

  let chain: Promise<void> = Promise.resolve()
  const sweep = (): Promise<void> => {
    const run = chain.then(sweepOnce)
    chain = run.catch(() => {})
    return run
  }
  const background = () => sweep().catch((err: unknown) => log.warn({ cause: describeCause(err) }, 'lifecycle sweep failed; retried at the next one'))

  await sweep()
  const sweeper = setInterval(() => void background(), o.sweepMs)
  sweeper.unref()

  return {
    refusal: (policy, now) => standingRefusal(policy, standingOf(policy, now), owners.listed(policy), settings, now),
    view(policy, now): AgentLifecycleView {
      const s = standingOf(policy, now)
      const e = evaluateLifecycle(policy, { ...s, lastTokenAt: now, ownerListed: owners.listed(policy) }, settings, now)
      const held = new Set(e.conditions)
      if (s.dormant) held.add('dormant')
      // Without `attest_every`, an attestation's next is due when the agent would turn dormant unused (as `attest` answered).
      const nextDue = e.nextDue ?? (s.attestedAt === undefined ? undefined : s.attestedAt + o.settings.dormantAfter)
      return { attestedAt: s.attestedAt, attestedBy: s.attestedBy, nextDue, conditions: LIFECYCLE_CONDITIONS.filter((c) => held.has(c)) }
    },
    sweep,
    async attest(a) {
      const policy = o.policies.get(a.agent)
      if (policy === undefined) throw new TypeError(`no policy names ${a.agent}`)
      const at = o.now()
      // Without `attest_every`, an attestation still vouches for a dormant agent: the next is due when it would turn dormant again.
      const nextDue = at + (policy.attestEvery ?? o.settings.dormantAfter)
      await o.audit.append({ type: 'agent.attested', at, agent: a.agent, by: a.by, nextDue, note: a.note, clientAddress: a.clientAddress, traceId: a.traceId })
      await o.store.attest(a.agent, at, a.by, nextDue)
      standing.set(a.agent, { ...standingOf(policy, at), attestedAt: at, attestedBy: a.by, dormant: false })
      // Records `reinstated` when the attestation lifted a suspension; the attestation stands if this fails.
      void background()
      return { at, nextDue }
    },
    async close() {
      clearInterval(sweeper)
      owners.close()
      await chain
    },
  }
}
