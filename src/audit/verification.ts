/**
 * The delegation log's verification state as a running broker keeps it
 * (`GET /admin/audit/verification`, the console's Audit page): "chain C is
 * verified up to record N at T". Each call carries every chain forward from
 * where the last call stopped, checking each new record as `mandate audit
 * verify` does (its columns against its hashed record, its hash, its link to
 * the record before it, no seq skipped), with a bounded number of records
 * and time per call so that a page load stays fast; a long log is caught up over
 * several calls. The state lives in this process's memory.
 *
 * What it does not do: records already verified are not read again, except
 * the last one (a rewrite of the chain's verified head shows); signed
 * checkpoints are not read. A full pass, with checkpoints, is
 * `mandate audit verify --checkpoints`.
 */
import { and, asc, desc, eq, gt } from 'drizzle-orm'
import type { Db } from '../storage/database.js'
import { auditLog } from '../storage/schema.js'
import { GENESIS_HASH } from './record.js'
import { rowChange } from './verify.js'

export interface ChainVerification {
  readonly chain: string
  /** The broker instance that wrote the chain (its first record's). */
  readonly instance: string
  /** Records 1..verifiedThroughSeq were checked and hold. */
  readonly verifiedThroughSeq: number
  /** The chain's last seq, when last looked at. */
  readonly lastSeq: number
  /** Epoch seconds: when the chain was last carried forward. */
  readonly at: number
  /** False once a record failed a check: the chain stays flagged in this process. */
  readonly ok: boolean
  /** The first record that failed, when one did. */
  readonly problem: { readonly seq: number; readonly id: number | undefined; readonly message: string } | undefined
}

export interface AuditVerifier {
  /** Every chain's state, after carrying each forward by up to the call's budget of records. */
  verify(): Promise<readonly ChainVerification[]>
}

export interface AuditVerifierOptions {
  /** Epoch seconds. */
  readonly now: () => number
  /** Most records checked per call, over all chains (default 20 000). */
  readonly budget?: number
  /** Milliseconds after which a call reads no further page (default 400): a page load stays fast on a busy machine. */
  readonly maxMillis?: number
  /** Records read per query (default 2 000). */
  readonly pageSize?: number
  /** Most chains listed (default 1 000): every broker start begins a chain. */
  readonly maxChains?: number
}

interface State {
  chain: string
  instance: string
  through: number
  /** The hash of record `through` (the genesis hash before record 1). */
  head: string
  lastSeq: number
  at: number
  problem: ChainVerification['problem']
}

export function createAuditVerifier(db: Db, options: AuditVerifierOptions): AuditVerifier {
  // Long, not split: a factory whose short steps share the chains' states and the call's budget.
  const budget = options.budget ?? 20_000
  const pageSize = options.pageSize ?? 2_000
  const maxMillis = options.maxMillis ?? 400
  let deadline = 0
  /** Pages read in this call: the first is read whatever the time, so that every call makes progress. */
  let pages = 0
  const maxChains = options.maxChains ?? 1_000
  const states = new Map<string, State>()
  // One call at a time: two would carry the same chain forward twice.
  let running: Promise<unknown> = Promise.resolve()

  /** The chains, in id order, each found by one indexed look-up (no scan of the log). */
  async function chains(): Promise<string[]> {
    const found: string[] = []
    let after: string | undefined
    while (found.length < maxChains) {
      const [next] = await db
        .select({ chain: auditLog.chainId })
        .from(auditLog)
        .where(after === undefined ? undefined : gt(auditLog.chainId, after))
        .orderBy(asc(auditLog.chainId))
        .limit(1)
      if (next === undefined) break
      found.push(next.chain)
      after = next.chain
    }
    return found
  }

  const report = (s: State): ChainVerification => ({
    chain: s.chain,
    instance: s.instance,
    verifiedThroughSeq: s.through,
    lastSeq: s.lastSeq,
    at: s.at,
    ok: s.problem === undefined,
    problem: s.problem,
  })

  const fail = (s: State, seq: number, id: number | undefined, message: string) => {
    s.problem = { seq, id, message }
  }

  /** Carries one chain forward by at most `allowance` records; returns how many it read. */
  async function carry(s: State, allowance: number): Promise<number> {
    if (s.through > 0) {
      // The verified head must still be the record that was verified.
      const [head] = await db
        .select({ id: auditLog.id, hash: auditLog.hash })
        .from(auditLog)
        .where(and(eq(auditLog.chainId, s.chain), eq(auditLog.seq, s.through)))
      if (head === undefined) {
        fail(s, s.through, undefined, `chain ${s.chain}: record ${s.through} was removed after it was verified`)
        return 1
      }
      if (head.hash !== s.head) {
        fail(s, s.through, head.id, `record ${s.chain}/${s.through} (id ${head.id}) was replaced after it was verified`)
        return 1
      }
    }
    let read = 0
    while (read < allowance && s.through < s.lastSeq && (pages === 0 || performance.now() < deadline)) {
      pages++
      const rows = await db
        .select()
        .from(auditLog)
        .where(and(eq(auditLog.chainId, s.chain), gt(auditLog.seq, s.through)))
        .orderBy(asc(auditLog.seq))
        .limit(Math.min(pageSize, allowance - read))
      if (rows.length === 0) break
      for (const row of rows) {
        read++
        const next = s.through + 1
        if (row.seq !== next) {
          fail(
            s,
            next,
            undefined,
            `chain ${s.chain}: record${row.seq - next > 1 ? `s ${next}..${row.seq - 1}` : ` ${next}`} removed (seq jumps from ${s.through} to ${row.seq})`,
          )
          return read
        }
        const change = rowChange(row)
        if (change !== undefined) {
          fail(s, row.seq, row.id, `record ${s.chain}/${row.seq} (id ${row.id}) was changed: ${change}`)
          return read
        }
        if (row.prevHash !== s.head) {
          fail(
            s,
            row.seq,
            row.id,
            `record ${s.chain}/${row.seq} (id ${row.id}) does not follow record ${s.through}: it was inserted or moved, or its predecessor was replaced`,
          )
          return read
        }
        s.through = row.seq
        s.head = row.hash
      }
    }
    return read
  }

  async function verifyNow(): Promise<readonly ChainVerification[]> {
    let left = budget
    deadline = performance.now() + maxMillis
    pages = 0
    const out: ChainVerification[] = []
    const listed = await chains()
    if (listed.length < maxChains) {
      // A chain verified before and now gone: every record of it was deleted.
      const present = new Set(listed)
      for (const s of states.values()) {
        if (present.has(s.chain) || s.lastSeq === 0) continue
        if (s.problem === undefined)
          fail(s, 1, undefined, `chain ${s.chain} (instance ${s.instance}) was removed after it was verified: it held ${s.lastSeq} records`)
        out.push(report(s))
      }
    }
    for (const chain of listed) {
      let s = states.get(chain)
      if (s === undefined) {
        const [first] = await db.select({ instance: auditLog.instance }).from(auditLog).where(eq(auditLog.chainId, chain)).orderBy(asc(auditLog.seq)).limit(1)
        s = { chain, instance: first?.instance ?? '', through: 0, head: GENESIS_HASH, lastSeq: 0, at: 0, problem: undefined }
        states.set(chain, s)
      }
      const [last] = await db.select({ seq: auditLog.seq }).from(auditLog).where(eq(auditLog.chainId, chain)).orderBy(desc(auditLog.seq)).limit(1)
      s.lastSeq = last?.seq ?? 0
      // A flagged chain stays flagged; one the budget did not reach keeps its last state.
      if (s.problem === undefined && left > 0) {
        left -= await carry(s, left)
        s.at = options.now()
      }
      out.push(report(s))
    }
    return out
  }

  return {
    verify() {
      const result = running.then(verifyNow)
      running = result.catch(() => undefined)
      return result
    },
  }
}
