/**
 * `mandate audit verify`: recomputes every chain of the delegation log and
 * names the first record that was changed, removed, inserted or moved, then
 * holds the log against signed checkpoints (records cut off at the end, or a
 * chain rewritten consistently from the start), and lists the records of
 * each chain that no checkpoint covers yet.
 */
import { and, asc, eq, gt, or } from 'drizzle-orm'
import type { Db } from '../storage/database.js'
import { auditLog, type AuditRow } from '../storage/schema.js'
import type { Checkpoint } from './checkpoint.js'

/** A checkpoint, and the database it names when it names one (`ReadCheckpoint`). */
export type StoreCheckpoint = Checkpoint & { readonly store?: string | undefined }
import { chainHash, columnsFromRecord, GENESIS_HASH, type RecordColumns } from './record.js'

export type FindingKind = 'changed' | 'removed' | 'inserted' | 'truncated' | 'rewritten' | 'missing_chain'

export interface Finding {
  readonly kind: FindingKind
  readonly chain: string
  /** The record concerned (for `removed`: the first missing seq). */
  readonly seq: number
  /** The row's `id` when there is a row. */
  readonly id?: number
  readonly message: string
}

/**
 * The newest records of a chain that no checkpoint covers: were they
 * appended by someone with database rights, or records after them removed,
 * nothing would show it. A running broker always has a few (until its next
 * checkpoint); an old tail is a broker that died without its last
 * checkpoint, or records added behind its back.
 */
export interface UncoveredTail {
  readonly chain: string
  /** The `instance` of the tail's first record. */
  readonly instance: string
  readonly firstSeq: number
  readonly lastSeq: number
  /** Records in the tail (fewer than lastSeq - firstSeq + 1 when some were removed). */
  readonly records: number
  /** Epoch seconds: the earliest `at` in the tail. */
  readonly oldestAt: number
  /** Seconds from `oldestAt` to the time verification began (0 for a record written after that). */
  readonly age: number
  /** Older than `maxUncoveredAge`: no running broker leaves a tail this old. */
  readonly stale: boolean
}

export interface VerifyReport {
  /** No finding: nothing shows the log altered (uncovered records are listed apart: unproven, not shown altered). */
  readonly ok: boolean
  readonly records: number
  readonly chains: number
  readonly checkpoints: number
  /** The first finding of each chain, then later ones, at most `maxFindings`. */
  readonly findings: readonly Finding[]
  /** Present when checkpoints were given: each chain's records that none of them covers, chain by chain. */
  readonly uncovered?: readonly UncoveredTail[]
  /**
   * Checkpoints of other databases (another `store`) none of whose chains
   * is in this one: not held against it. Present when checkpoints were given.
   */
  readonly otherStores?: readonly OtherStore[]
}

/** The checkpoints of another database, left aside. */
export interface OtherStore {
  readonly store: string
  readonly checkpoints: number
  readonly chains: number
}

export interface VerifyOptions {
  readonly checkpoints?: readonly StoreCheckpoint[]
  /**
   * This database's identity (`checkpointStore`). Checkpoints naming another
   * database are held against this one only when one of that database's
   * chains is here (the same log under a new identity, e.g. after a major
   * upgrade); otherwise they are listed in `otherStores`. Checkpoints naming
   * no database are always held. Without it, every checkpoint is held.
   */
  readonly store?: string
  /** Epoch seconds when verification began (the checkpoints were read); default: the system clock. */
  readonly now?: number
  /** Seconds an uncovered tail may be old before it is `stale` (default 0). */
  readonly maxUncoveredAge?: number
  /** Called every `progressEvery` records with the count so far. */
  readonly onProgress?: (records: number) => void
  readonly progressEvery?: number
  readonly pageSize?: number
  readonly maxFindings?: number
}

const COLUMN_NAMES: Record<keyof RecordColumns, string> = {
  chainId: 'chain_id',
  seq: 'seq',
  at: 'at',
  event: 'event',
  instance: 'instance',
  agent: 'agent',
  actors: 'actors',
  sub: 'sub',
  subIss: 'sub_iss',
  jti: 'jti',
  parentJti: 'parent_jti',
  rootJti: 'root_jti',
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a ?? null) === JSON.stringify(b ?? null)

/**
 * What is wrong with one row on its own, or undefined: its record is not one
 * `encodeRecord` writes, its columns disagree with its record, or its content
 * does not match its hash. Its place in the chain is the caller's to check.
 */
export function rowChange(row: AuditRow): string | undefined {
  const parsed = columnsFromRecord(row.record)
  if (!parsed.ok) return parsed.reason
  const c = parsed.columns
  const stored: RecordColumns = { ...row, actors: row.actors }
  const differs = (Object.keys(COLUMN_NAMES) as (keyof RecordColumns)[]).filter((k) => !same(stored[k], c[k]))
  if (differs.length > 0) {
    return `column${differs.length > 1 ? 's' : ''} ${differs.map((k) => COLUMN_NAMES[k]).join(', ')} disagree${differs.length > 1 ? '' : 's'} with the hashed record`
  }
  if (chainHash(row.prevHash, row.record) !== row.hash) return 'its content does not match its hash'
  return undefined
}

export async function verifyAuditLog(db: Db, options: VerifyOptions = {}): Promise<VerifyReport> {
  // Long, not split: one pass over every chain, page by page, whose findings, counters and expected checkpoints the checks share.
  const pageSize = options.pageSize ?? 5_000
  const maxFindings = options.maxFindings ?? 100
  const progressEvery = options.progressEvery ?? 100_000
  const now = options.now ?? Math.floor(Date.now() / 1000)
  const maxUncoveredAge = options.maxUncoveredAge ?? 0
  const findings: Finding[] = []
  const uncovered: UncoveredTail[] = []
  const add = (f: Finding) => {
    if (findings.length < maxFindings) findings.push(f)
  }

  // Checkpoints by chain, each chain's sorted by seq.
  const expected = new Map<string, StoreCheckpoint[]>()
  for (const cp of options.checkpoints ?? []) {
    const list = expected.get(cp.chain) ?? []
    list.push(cp)
    expected.set(cp.chain, list)
  }
  for (const list of expected.values()) list.sort((a, b) => a.seq - b.seq)
  /** The other database a chain's checkpoints name, or undefined when they are this one's (or name none). */
  const otherStoreOf = (list: readonly StoreCheckpoint[]): string | undefined => {
    if (options.store === undefined) return undefined
    const stores = new Set(list.map((cp) => cp.store))
    if (stores.size !== 1) return undefined
    const [only] = stores
    return only === undefined || only === options.store ? undefined : only
  }
  /** Other databases with a chain in this one: their checkpoints are held like this database's own. */
  const present = new Set<string>()

  let records = 0
  let chains = 0
  let chain: string | undefined
  let nextSeq = 1
  let prevHash = GENESIS_HASH
  let cps: StoreCheckpoint[] = []
  let cpIndex = 0
  /** The highest seq a checkpoint of this chain names. */
  let coveredTo = 0
  /** The chain's records beyond `coveredTo`: the first of them, and how many. */
  let tail: { seq: number; at: number; instance: string; records: number } | undefined

  const endChain = () => {
    if (chain === undefined) return
    // Checkpoints beyond the last record: the end of the chain was cut off.
    const lastSeq = nextSeq - 1
    if (options.checkpoints !== undefined && tail !== undefined) {
      const age = Math.max(0, now - tail.at)
      uncovered.push({
        chain,
        instance: tail.instance,
        firstSeq: tail.seq,
        lastSeq,
        records: tail.records,
        oldestAt: tail.at,
        age,
        stale: age > maxUncoveredAge,
      })
    }
    const beyond = cps.slice(cpIndex).filter((cp) => cp.seq > lastSeq)
    if (beyond.length > 0) {
      const cp = beyond.at(-1)!
      add({
        kind: 'truncated',
        chain,
        seq: lastSeq + 1,
        message: `chain ${chain} ends at seq ${lastSeq}, but a checkpoint signed at ${new Date(cp.at * 1000).toISOString()} saw ${cp.seq} records: records ${lastSeq + 1}..${cp.seq} were removed`,
      })
    }
    expected.delete(chain)
  }

  let after: { chain: string; seq: number } | undefined
  for (;;) {
    const page = await db
      .select()
      .from(auditLog)
      .where(after === undefined ? undefined : or(gt(auditLog.chainId, after.chain), and(eq(auditLog.chainId, after.chain), gt(auditLog.seq, after.seq))))
      .orderBy(asc(auditLog.chainId), asc(auditLog.seq))
      .limit(pageSize)
    for (const row of page) {
      if (row.chainId !== chain) {
        endChain()
        chain = row.chainId
        chains++
        nextSeq = 1
        prevHash = GENESIS_HASH
        cps = expected.get(chain) ?? []
        const other = otherStoreOf(cps)
        if (other !== undefined) present.add(other)
        cpIndex = 0
        coveredTo = cps.at(-1)?.seq ?? 0
        tail = undefined
      }
      if (row.seq > coveredTo) {
        if (tail === undefined) tail = { seq: row.seq, at: row.at, instance: row.instance, records: 0 }
        tail.records++
        tail.at = Math.min(tail.at, row.at)
      }
      const at = { chain, seq: row.seq, id: row.id }
      const change = rowChange(row)
      if (change !== undefined) add({ kind: 'changed', ...at, message: `record ${chain}/${row.seq} (id ${row.id}) was changed: ${change}` })
      if (row.seq > nextSeq) {
        add({
          kind: 'removed',
          chain,
          seq: nextSeq,
          message: `chain ${chain}: record${row.seq - nextSeq > 1 ? `s ${nextSeq}..${row.seq - 1}` : ` ${nextSeq}`} removed (seq jumps from ${nextSeq - 1} to ${row.seq})`,
        })
      } else if (row.prevHash !== prevHash) {
        add({
          kind: 'inserted',
          ...at,
          message: `record ${chain}/${row.seq} (id ${row.id}) does not follow record ${row.seq - 1}: it was inserted or moved, or its predecessor was replaced`,
        })
      }
      // Checkpoints at this position must name this very record.
      while (cpIndex < cps.length && cps[cpIndex]!.seq <= row.seq) {
        const cp = cps[cpIndex++]!
        if (cp.seq === row.seq && cp.head !== row.hash) {
          add({
            kind: 'rewritten',
            ...at,
            message: `record ${chain}/${row.seq} (id ${row.id}) is not the one a checkpoint signed at ${new Date(cp.at * 1000).toISOString()} saw: the chain was rewritten up to here`,
          })
        } else if (cp.seq < row.seq) {
          // The checkpointed record itself is gone; `removed` above names the gap.
        }
      }
      // Carry on from this record, so that one finding is not repeated for every later record.
      prevHash = row.hash
      nextSeq = row.seq + 1
      records++
      if (options.onProgress !== undefined && records % progressEvery === 0) options.onProgress(records)
    }
    if (page.length < pageSize) break
    const last = page.at(-1)!
    after = { chain: last.chainId, seq: last.seq }
  }
  endChain()
  // Chains that checkpoints know and the database does not have at all.
  const others = new Map<string, { checkpoints: number; chains: number }>()
  let heldAside = 0
  for (const [missing, list] of expected) {
    const other = otherStoreOf(list)
    if (other !== undefined && !present.has(other)) {
      // Another database's chain: this one never had it.
      const o = others.get(other) ?? { checkpoints: 0, chains: 0 }
      o.checkpoints += list.length
      o.chains++
      others.set(other, o)
      heldAside += list.length
      continue
    }
    const cp = list.at(-1)!
    const unkeyed = list.every((c) => c.store === undefined) && options.store !== undefined
    add({
      kind: 'missing_chain',
      chain: missing,
      seq: 1,
      message:
        `chain ${missing} (instance ${cp.instance}) is missing: a checkpoint signed at ${new Date(cp.at * 1000).toISOString()} saw ${cp.seq} records` +
        (unkeyed
          ? ' (its checkpoints name no database, being older than per-database checkpoints: if they are of another database, e.g. PGlite before a move to PostgreSQL, move them into a directory of their own inside the checkpoint directory)'
          : ''),
    })
  }
  return {
    ok: findings.length === 0,
    records,
    chains,
    checkpoints: (options.checkpoints?.length ?? 0) - heldAside,
    findings,
    ...(options.checkpoints === undefined
      ? {}
      : { uncovered, otherStores: [...others].map(([store, o]) => ({ store, ...o })).sort((a, b) => (a.store < b.store ? -1 : 1)) }),
  }
}
