/**
 * One contract for the durable delegation log (src/audit/sql.ts, verify.ts,
 * query.ts, checkpoint.ts), run on PGlite (temp directory) and on PostgreSQL
 * (a database of its own): append-only, group commit, tamper detection by
 * `verifyAuditLog` (alone and against signed checkpoints), the queries, and
 * shutdown. PostgreSQL also runs the outage cases through a cuttable TCP proxy.
 *
 * Tampering happens behind the trigger's back, as someone owning the table
 * could: `ALTER TABLE audit_log DISABLE TRIGGER USER`, the change, `ENABLE`,
 * in one transaction.
 */
import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { and, asc, eq, gte, sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { CHECKPOINT_TYP, checkpointStore, createCheckpointWriter, readCheckpoints, type Checkpoint } from '../../src/audit/checkpoint.js'
import { AuditUnavailable, type AuditEvent, type AuditReceipt } from '../../src/audit/port.js'
import { delegationTree, queryAudit, type AuditFilter, type TreeNode } from '../../src/audit/query.js'
import { chainHash, encodeRecord, GENESIS_HASH, type EncodedRecord } from '../../src/audit/record.js'
import { createSqlAuditLog, type SqlAuditLog, type SqlAuditLogOptions } from '../../src/audit/sql.js'
import { verifyAuditLog, type VerifyReport } from '../../src/audit/verify.js'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import type { Revocation, RevocationTarget } from '../../src/revocation/port.js'
import { openDatabase, type Database, type Db } from '../../src/storage/database.js'
import { auditLog, type AuditRow } from '../../src/storage/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { generateSigningJwk, signingKeysFromJwks, type SigningKey } from '../../src/tokens/keys.js'
import { createJwtSigner } from '../../src/tokens/mint.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { startTcpProxy } from '../support/proxy.js'

const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z
const ISSUER = 'https://broker.test'
const POLICY_HASH = 'ab'.repeat(32)
const USER_ISS = 'https://idp.test'
const logger = createLogger('silent')

const A = (s: string) => s as AgentId
const S = (s: string) => s as Subject
const J = (s: string) => s as Jti
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

interface IssuedSpec {
  readonly jti: string
  /** Newest first; the first is the requesting agent. */
  readonly actors: readonly string[]
  readonly sub?: string
  readonly parent?: string
  readonly root?: string
  readonly at?: number
  readonly scopes?: readonly string[]
}

function issued(t: IssuedSpec): AuditEvent {
  const at = t.at ?? T0
  return {
    type: 'token.issued',
    at,
    agent: A(t.actors[0]!),
    sub: S(t.sub ?? 'alice'),
    subIssuer: USER_ISS,
    actors: t.actors.map(A),
    jti: J(t.jti),
    parentJti: t.parent === undefined ? undefined : J(t.parent),
    rootJti: J(t.root ?? t.jti),
    audience: 'https://api.test',
    scopes: [...(t.scopes ?? ['read'])],
    expiresAt: at + 300,
    policyHash: POLICY_HASH,
    clientAddress: '203.0.113.7',
    traceId: undefined,
  }
}

function revoked(target: RevocationTarget, at = T0, over: Partial<Revocation> = {}): AuditEvent {
  const token = target.kind === 'jti' || target.kind === 'chain'
  return {
    type: 'revocation.created',
    at,
    by: 'ops-key',
    revocation: {
      id: randomUUID(),
      target,
      reason: 'incident',
      createdBy: 'ops-key',
      createdAt: at,
      expiresAt: token ? at + 600 : undefined,
      liftedAt: undefined,
      liftedBy: undefined,
      ...over,
    },
    clientAddress: undefined,
    traceId: undefined,
  }
}

function lifted(created: AuditEvent, at: number): AuditEvent {
  if (created.type !== 'revocation.created') throw new TypeError('not a revocation')
  return { ...created, type: 'revocation.lifted', at, by: 'lead-key', revocation: { ...created.revocation, liftedAt: at, liftedBy: 'lead-key' } }
}

const denied = (agent: string, at = T0): AuditEvent => ({
  type: 'token.denied',
  at,
  agent: A(agent),
  sub: S('alice'),
  error: 'invalid_scope',
  reason: 'scope exceeds policy',
  clientAddress: undefined,
  traceId: undefined,
})
const policyLoaded = (agent: string, at = T0): AuditEvent => ({ type: 'policy.loaded', at, agent: A(agent), source: `${agent}.yaml`, sha256: POLICY_HASH })

/** A mix of every kind of event, `n` of them, distinct jtis. */
function mixed(n: number, prefix = 'm'): AuditEvent[] {
  return Array.from({ length: n }, (_, i): AuditEvent => {
    switch (i % 4) {
      case 0:
        return issued({ jti: `${prefix}-${i}`, actors: ['agent-a'], at: T0 + i })
      case 1:
        return denied('agent-b', T0 + i)
      case 2:
        return policyLoaded('agent-c', T0 + i)
      default:
        return { type: 'admin.audit.read', at: T0 + i, by: 'auditor', request: `/admin/audit?i=${i}`, clientAddress: undefined, traceId: undefined }
    }
  })
}

/** SQLSTATE of a failed query, looked up through drizzle's wrapper. */
function sqlState(error: unknown): string | undefined {
  for (let e = error; typeof e === 'object' && e !== null; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string') return code
  }
  return undefined
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected a rejection')
}

const insertRow = (r: EncodedRecord | Omit<AuditRow, 'id'>): typeof auditLog.$inferInsert => ({
  chainId: r.chainId,
  seq: r.seq,
  at: r.at,
  event: r.event,
  instance: r.instance,
  agent: r.agent,
  actors: [...r.actors],
  sub: r.sub,
  subIss: r.subIss,
  jti: r.jti,
  parentJti: r.parentJti,
  rootJti: r.rootJti,
  record: r.record,
  prevHash: r.prevHash,
  hash: r.hash,
})

/** The first finding, as the report's first line would name it. */
const first = (report: VerifyReport) => {
  const f = report.findings[0]
  return f === undefined ? undefined : { kind: f.kind, chain: f.chain, seq: f.seq }
}

interface Harness {
  readonly database: Database
  /** PostgreSQL only: the test database's URL, to put a proxy in front of it. */
  readonly url?: string
  close(): Promise<void>
}

function describeAuditLog(name: string, open: () => Promise<Harness>, options: { describe?: typeof describe; outages?: boolean } = {}): void {
  ;(options.describe ?? describe)(`delegation log contract: ${name}`, () => {
    let h: Harness
    let db: Db
    let key: SigningKey
    let otherKey: SigningKey
    let keys: Map<string, import('node:crypto').KeyObject>
    let dir: string
    const logs: SqlAuditLog[] = []

    beforeAll(async () => {
      h = await open()
      db = h.database.db
      key = (await signingKeysFromJwks({ keys: [await generateSigningJwk()] })).current
      otherKey = (await signingKeysFromJwks({ keys: [await generateSigningJwk()] })).current
      keys = new Map([[key.kid, key.publicKey]])
    })
    afterAll(async () => {
      await h?.close()
    })
    beforeEach(async () => {
      await behindTrigger((tx) => tx.delete(auditLog))
      dir = await mkdtemp(join(tmpdir(), 'mandate-checkpoints-'))
    })
    afterEach(async () => {
      await Promise.all(logs.splice(0).map((l) => l.close().catch(() => {})))
      await rm(dir, { recursive: true, force: true })
    })

    /** Runs `change` with the append-only trigger off, in one transaction (so it is back on whatever happens). */
    async function behindTrigger(change: (tx: Db) => Promise<unknown>): Promise<void> {
      await db.transaction(async (tx) => {
        await tx.execute(sql`alter table audit_log disable trigger user`)
        await change(tx)
        await tx.execute(sql`alter table audit_log enable trigger user`)
      })
    }

    const checkpointWriter = (signer: SigningKey = key, at = dir) =>
      createCheckpointWriter({ dir: at, issuer: ISSUER, sign: createJwtSigner(signer, CHECKPOINT_TYP) })

    function newLog(over: Partial<SqlAuditLogOptions> = {}): SqlAuditLog {
      const log = createSqlAuditLog({
        database: h.database,
        instance: 'test-instance',
        clock: () => Date.now(),
        groupMaxRecords: 100,
        groupMaxWaitMs: 0,
        writeTimeoutMs: 5_000,
        logger,
        ...over,
      })
      logs.push(log)
      return log
    }

    /** Appends one after the other; returns the receipts. */
    async function appendEach(log: SqlAuditLog, events: readonly AuditEvent[]): Promise<AuditReceipt[]> {
      const receipts: AuditReceipt[] = []
      for (const e of events) receipts.push(await log.append(e))
      return receipts
    }

    const rowsOf = (chain: string) => db.select().from(auditLog).where(eq(auditLog.chainId, chain)).orderBy(asc(auditLog.seq))
    const rowAt = async (chain: string, seq: number) =>
      (
        await db
          .select()
          .from(auditLog)
          .where(and(eq(auditLog.chainId, chain), eq(auditLog.seq, seq)))
      )[0]
    const at = (chain: string, seq: number) => and(eq(auditLog.chainId, chain), eq(auditLog.seq, seq))

    /** A chain of `n` records from one writer, closed; returns its id. */
    async function seedChain(n: number, prefix = 's'): Promise<string> {
      const log = newLog()
      await appendEach(log, mixed(n, prefix))
      await log.close()
      return log.chainId()
    }

    it('appends records 1..n on one chain, each hashed over its predecessor, with columns from the event', async () => {
      const log = newLog()
      const events = mixed(8)
      const receipts = await appendEach(log, events)
      expect(receipts.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
      const rows = await rowsOf(log.chainId())
      expect(rows).toHaveLength(8)
      let prev = GENESIS_HASH
      rows.forEach((row, i) => {
        const expected = encodeRecord(events[i]!, { chainId: log.chainId(), seq: i + 1, instance: 'test-instance', prevHash: prev })
        expect(insertRow(row)).toStrictEqual(insertRow(expected))
        expect(row.hash).toBe(chainHash(prev, row.record))
        prev = row.hash
      })
      expect(log.healthy()).toBe(true)
      expect(log.stats()).toMatchObject({ chainId: log.chainId(), records: 8, groups: 8, failedGroups: 0 })
      expect(await verifyAuditLog(db)).toStrictEqual({ ok: true, records: 8, chains: 1, checkpoints: 0, findings: [] })
    })

    // Regression: postgres.js once left an INSERT pending for good (the connection reset as it was sent);
    // the writer waited 30 s for it before reading the head, and refused every append meanwhile.
    it('an INSERT whose answer never comes holds the log about one more write timeout, then the chain goes on', async () => {
      let hang = true
      const database: Database = {
        ...h.database,
        statement: (text, params) => {
          if (!hang) return h.database.statement(text, params)
          hang = false
          return new Promise<void>(() => {}) // sent, never answered, never failed
        },
      }
      const log = newLog({ database, writeTimeoutMs: 200 })
      const chain = log.chainId()
      const lost = await rejection(log.append(issued({ jti: 'hung-1', actors: ['agent-a'] })))
      expect(lost).toBeInstanceOf(AuditUnavailable)
      expect((lost as AuditUnavailable).outcome).toBe('unknown')
      const t0 = performance.now()
      let receipt: AuditReceipt | undefined
      for (let i = 0; receipt === undefined; i++) {
        try {
          receipt = await log.append(issued({ jti: `after-hang-${i}`, actors: ['agent-a'] }))
        } catch (err) {
          expect(err).toBeInstanceOf(AuditUnavailable)
          // One more write timeout (200 ms) by design; 2 s leaves room for a loaded machine and is far
          // below the 30 s the writer used to wait.
          expect(performance.now() - t0, 'still refused 2 s after the write was lost').toBeLessThan(2_000)
          await sleep(50)
        }
      }
      // Nothing of the hung group reached the table: the chain goes on from where it was, not forked.
      expect(receipt.seq).toBe(1)
      expect(log.chainId()).toBe(chain)
      const rows = await rowsOf(chain)
      expect(rows).toHaveLength(1)
      expect(rows[0]!.jti).toMatch(/^after-hang-/)
      expect(await verifyAuditLog(db)).toMatchObject({ ok: true, chains: 1, findings: [] })
    })

    it('stores a concurrent group exactly, whatever the values hold (quotes, backslashes, commas, braces, NULL, unicode)', async () => {
      const log = newLog()
      const odd = ['a"b', 'back\\slash', 'comma,brace{}', 'NULL', 'sp ace', 'é✓𝄞', "quote'single"]
      const events = odd.map((v, i) => ({ ...issued({ actors: [`agent-${i}`, v], jti: `odd-${i}` }), sub: S(v) }))
      const receipts = await Promise.all(events.map((e) => log.append(e)))
      expect(receipts.map((r) => r.seq)).toEqual(events.map((_, i) => i + 1))
      expect(log.stats().groups).toBe(1)
      const rows = await rowsOf(log.chainId())
      let prev = GENESIS_HASH
      rows.forEach((row, i) => {
        const expected = encodeRecord(events[i]!, { chainId: log.chainId(), seq: i + 1, instance: 'test-instance', prevHash: prev })
        expect(insertRow(row)).toStrictEqual(insertRow(expected))
        prev = row.hash
      })
      expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: odd.length })
    })

    describe('append-only', () => {
      it('UPDATE, DELETE and TRUNCATE are refused by the trigger and the rows stay as they were', async () => {
        const chain = await seedChain(3)
        const before = await rowsOf(chain)
        const attempts: [string, () => Promise<unknown>][] = [
          ['update', () => db.update(auditLog).set({ sub: 'mallory' }).where(at(chain, 2))],
          ['update of every row', () => db.execute(sql`update audit_log set record = record || ' '`)],
          ['delete', () => db.delete(auditLog).where(at(chain, 3))],
          ['delete of every row', () => db.execute(sql`delete from audit_log`)],
          ['truncate', () => db.execute(sql`truncate audit_log`)],
        ]
        for (const [what, attempt] of attempts) {
          const error = await rejection(attempt())
          expect(sqlState(error), what).toBe('42501')
          expect(String((error as { cause?: { message?: string } }).cause?.message ?? error), what).toMatch(/append-only/)
          expect(await rowsOf(chain), what).toStrictEqual(before)
        }
        expect((await verifyAuditLog(db)).ok).toBe(true)
      })

      it('INSERT is allowed (the trigger refuses only changes)', async () => {
        const chain = await seedChain(2)
        const last = (await rowAt(chain, 2))!
        const next = encodeRecord(denied('agent-z'), { chainId: chain, seq: 3, instance: 'test-instance', prevHash: last.hash })
        await db.insert(auditLog).values(insertRow(next))
        expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: 3 })
      })
    })

    describe('group commit', () => {
      it('300 concurrent appends go out in fewer groups, numbered 1..300 in call order, and verify', async () => {
        const log = newLog({ groupMaxRecords: 64 })
        const events = Array.from({ length: 300 }, (_, i) => issued({ jti: `c-${i}`, actors: ['agent-a'], at: T0 + i }))
        const receipts = await Promise.all(events.map((e) => log.append(e)))
        expect(receipts.map((r) => r.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
        const stats = log.stats()
        expect(stats.records).toBe(300)
        expect(stats.groups).toBeLessThan(300)
        expect(stats.groups).toBeGreaterThanOrEqual(Math.ceil(300 / 64))
        expect(stats.groupSize.max).toBeGreaterThan(1)
        expect(stats.groupSize.max).toBeLessThanOrEqual(64)
        expect(stats.failedGroups).toBe(0)
        const rows = await rowsOf(log.chainId())
        expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1))
        // Row i is event i: a group keeps its callers' order.
        expect(rows.map((r) => r.jti)).toEqual(events.map((e) => (e as { jti: string }).jti))
        expect(await verifyAuditLog(db)).toStrictEqual({ ok: true, records: 300, chains: 1, checkpoints: 0, findings: [] })
      })

      it('pending() counts the records appended and not yet answered, over every chain; 0 once they are committed', async () => {
        const log = newLog({ groupMaxRecords: 16, chains: 2 })
        expect(log.pending()).toBe(0)
        const receipts = Array.from({ length: 100 }, (_, i) => log.append(issued({ jti: `p-${i}`, actors: ['agent-a'], at: T0 + i })))
        expect(log.pending()).toBe(100)
        await Promise.all(receipts)
        // The writer's loop clears the last group's count right after answering it.
        await new Promise((r) => setImmediate(r))
        expect(log.pending()).toBe(0)
      })

      it('with several chains, concurrent appends spread over them, each chain numbered from 1, and all verify', async () => {
        const log = newLog({ groupMaxRecords: 16, chains: 3 })
        const events = Array.from({ length: 300 }, (_, i) => issued({ jti: `m-${i}`, actors: ['agent-a'], at: T0 + i }))
        const receipts = await Promise.all(events.map((e) => log.append(e)))
        expect(receipts).toHaveLength(300)
        const ids = log.chainIds()
        expect(new Set(ids).size).toBe(3)
        const perChain = await Promise.all(ids.map((id) => rowsOf(id)))
        expect(perChain.reduce((n, rows) => n + rows.length, 0)).toBe(300)
        for (const rows of perChain) {
          expect(rows.length).toBeGreaterThan(0)
          expect(rows.map((r) => r.seq)).toEqual(rows.map((_, i) => i + 1))
        }
        const jtis = perChain.flatMap((rows) => rows.map((r) => r.jti)).sort()
        expect(jtis).toEqual(events.map((e) => (e as { jti: string }).jti).sort())
        expect(log.stats()).toMatchObject({ records: 300, failedGroups: 0 })
        expect(await verifyAuditLog(db)).toStrictEqual({ ok: true, records: 300, chains: 3, checkpoints: 0, findings: [] })
      })

      it('appends spread over event-loop turns share a group while one is in flight (groupMaxWaitMs)', async () => {
        const log = newLog({ groupMaxWaitMs: 20 })
        const pending: Promise<AuditReceipt>[] = []
        for (let i = 0; i < 30; i++) {
          pending.push(log.append(denied('agent-a', T0 + i)))
          await new Promise((resolve) => setImmediate(resolve))
        }
        const receipts = await Promise.all(pending)
        expect(receipts.map((r) => r.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
        expect(log.stats().groups).toBeLessThan(30)
        expect((await verifyAuditLog(db)).ok).toBe(true)
      })

      // The edge refuses such text; these append it directly, as a bug past the edge would, to exercise the writer.
      it('a record the server refuses (a NUL, which text columns cannot hold) fails alone: the rest of its group commits, in order, re-chained', async () => {
        const statements: { records: number; committed: boolean }[] = []
        const log = newLog({ onGroup: (records, _s, committed) => void statements.push({ records, committed }) })
        const bad = new Set([0, 17, 41])
        const events = Array.from({ length: 42 }, (_, i) =>
          bad.has(i)
            ? { ...issued({ jti: `bad-${i}`, actors: ['agent-a'] }), sub: S('ali\u0000ce') }
            : issued({ jti: `good-${i}`, actors: ['agent-a'], at: T0 + i }),
        )
        const outcomes = await Promise.allSettled(events.map((e) => log.append(e)))
        // All 42 went out as one group, which the server refused; then one statement per record.
        expect(statements[0]).toEqual({ records: 42, committed: false })
        expect(statements.slice(1)).toHaveLength(42)
        for (const i of bad) {
          const o = outcomes[i]!
          expect(o.status, `bad-${i}`).toBe('rejected')
          expect((o as PromiseRejectedResult).reason).toBeInstanceOf(AuditUnavailable)
          expect(((o as PromiseRejectedResult).reason as AuditUnavailable).outcome).toBe('not_written')
        }
        const good = outcomes.filter((_, i) => !bad.has(i))
        expect(good.every((o) => o.status === 'fulfilled')).toBe(true)
        // Receipts 1..39 in call order: the records after a refused one took its place in the chain.
        expect(good.map((o) => (o as PromiseFulfilledResult<AuditReceipt>).value.seq)).toEqual(Array.from({ length: 39 }, (_, i) => i + 1))
        const rows = await rowsOf(log.chainId())
        expect(rows.map((r) => r.jti)).toEqual(events.filter((_, i) => !bad.has(i)).map((e) => (e as { jti: string }).jti))
        expect(log.healthy()).toBe(true)
        expect(log.stats()).toMatchObject({ records: 39 })
        // The chain goes on from there, grouped again.
        expect(await log.append(denied('agent-a'))).toEqual({ seq: 40 })
        expect(await verifyAuditLog(db)).toStrictEqual({ ok: true, records: 40, chains: 1, checkpoints: 0, findings: [] })
      })

      it('a group the server refuses whatever it holds: one more statement, not one per record, and every caller is refused', async () => {
        const statements: boolean[] = []
        const observed = newLog({ onGroup: (_r, _s, committed) => void statements.push(committed) })
        await db.execute(
          sql.raw(
            `create function test_refuse_insert() returns trigger language plpgsql as $$ begin raise exception 'disk full (test)' using errcode = '53100'; end $$`,
          ),
        )
        await db.execute(sql.raw(`create trigger test_refuse_insert before insert on audit_log for each statement execute function test_refuse_insert()`))
        try {
          const outcomes = await Promise.all(mixed(20, 'full').map((e) => rejection(observed.append(e))))
          for (const e of outcomes) {
            expect(e).toBeInstanceOf(AuditUnavailable)
            expect((e as AuditUnavailable).outcome).toBe('not_written')
          }
          expect(statements).toEqual([false, false])
          expect(observed.healthy()).toBe(false)
        } finally {
          await db.execute(sql.raw(`drop trigger if exists test_refuse_insert on audit_log`))
          await db.execute(sql.raw(`drop function if exists test_refuse_insert()`))
        }
        expect(await observed.append(denied('agent-a'))).toEqual({ seq: 1 })
        expect(observed.healthy()).toBe(true)
        expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: 1, chains: 1 })
      })

      it('two writers keep two chains; verify reads both, whatever its page size', async () => {
        const one = newLog({ instance: 'one' })
        const two = newLog({ instance: 'two' })
        await Promise.all([...mixed(13, 'x').map((e) => one.append(e)), ...mixed(9, 'y').map((e) => two.append(e))])
        expect(one.chainId()).not.toBe(two.chainId())
        for (const pageSize of [1, 2, 7, 13, 5_000]) {
          expect(await verifyAuditLog(db, { pageSize }), `pageSize ${pageSize}`).toStrictEqual({
            ok: true,
            records: 22,
            chains: 2,
            checkpoints: 0,
            findings: [],
          })
        }
        expect((await rowsOf(one.chainId())).every((r) => r.instance === 'one')).toBe(true)
      })
    })

    describe('tamper detection (verifyAuditLog)', () => {
      /** Verifies with several page sizes (a finding must not depend on where a page ends) and returns the report. */
      async function verifyAll(options: { checkpoints?: readonly Checkpoint[] } = {}): Promise<VerifyReport> {
        const report = await verifyAuditLog(db, options)
        for (const pageSize of [1, 3, 4]) expect(await verifyAuditLog(db, { ...options, pageSize }), `pageSize ${pageSize}`).toStrictEqual(report)
        return report
      }

      it('a record whose text was edited (still canonical): changed, at that seq, nothing else', async () => {
        const chain = await seedChain(10)
        const row = (await rowAt(chain, 5))!
        expect(row.event).toBe('token.issued')
        const doc = JSON.parse(row.record) as Record<string, unknown>
        expect(doc['scopes']).toEqual(['read'])
        const edited = row.record.replace('"scopes":["read"]', '"scopes":["admin","read"]')
        await behindTrigger((tx) => tx.update(auditLog).set({ record: edited }).where(at(chain, 5)))
        const report = await verifyAll()
        expect(report.ok).toBe(false)
        expect(report.records).toBe(10)
        expect(report.findings).toHaveLength(1)
        expect(first(report)).toEqual({ kind: 'changed', chain, seq: 5 })
        expect(report.findings[0]!.id).toBe(row.id)
        expect(report.findings[0]!.message).toMatch(/does not match its hash/)
      })

      it('only a column edited (sub), record untouched: changed, at that seq, naming the column', async () => {
        const chain = await seedChain(10)
        await behindTrigger((tx) => tx.update(auditLog).set({ sub: 'mallory' }).where(at(chain, 2)))
        const report = await verifyAll()
        expect(report.findings).toHaveLength(1)
        expect(first(report)).toEqual({ kind: 'changed', chain, seq: 2 })
        expect(report.findings[0]!.message).toMatch(/column sub disagrees/)
      })

      it('other columns edited (actors, at, event): changed, at that seq', async () => {
        const chain = await seedChain(10)
        await behindTrigger(async (tx) => {
          await tx
            .update(auditLog)
            .set({ actors: ['agent-a', 'agent-z'] })
            .where(at(chain, 1))
          await tx
            .update(auditLog)
            .set({ at: T0 - 1 })
            .where(at(chain, 6))
          await tx.update(auditLog).set({ event: 'token.withheld' }).where(at(chain, 8))
        })
        const report = await verifyAll()
        expect(report.findings.map((f) => [f.kind, f.seq])).toEqual([
          ['changed', 1],
          ['changed', 6],
          ['changed', 8],
        ])
      })

      it('a record rewritten with its hash recomputed over the same predecessor: the next record names it', async () => {
        const chain = await seedChain(10)
        const row = (await rowAt(chain, 2))!
        expect(row.event).toBe('token.denied')
        const edited = row.record.replace(/"reason":"[^"]*"/, '"reason":"nothing to see"')
        expect(edited).not.toBe(row.record)
        await behindTrigger((tx) =>
          tx
            .update(auditLog)
            .set({ record: edited, hash: chainHash(row.prevHash, edited) })
            .where(at(chain, 2)),
        )
        const report = await verifyAll()
        expect(first(report)).toEqual({ kind: 'inserted', chain, seq: 3 })
        expect(report.findings).toHaveLength(1)
      })

      it('a record no longer canonical: changed, at that seq', async () => {
        const chain = await seedChain(6)
        const row = (await rowAt(chain, 3))!
        const spaced = JSON.stringify(JSON.parse(row.record), null, 1)
        await behindTrigger((tx) =>
          tx
            .update(auditLog)
            .set({ record: spaced, hash: chainHash(row.prevHash, spaced) })
            .where(at(chain, 3)),
        )
        const report = await verifyAll()
        expect(first(report)).toEqual({ kind: 'changed', chain, seq: 3 })
        expect(report.findings[0]!.message).toMatch(/canonical/)
      })

      it('a record removed from the middle: removed, naming the missing seq', async () => {
        const chain = await seedChain(10)
        await behindTrigger((tx) => tx.delete(auditLog).where(at(chain, 6)))
        const report = await verifyAll()
        expect(report.records).toBe(9)
        expect(report.findings).toHaveLength(1)
        expect(first(report)).toEqual({ kind: 'removed', chain, seq: 6 })
      })

      it('the first record removed: removed, seq 1; several: the first of them', async () => {
        const chain = await seedChain(10)
        await behindTrigger((tx) => tx.delete(auditLog).where(at(chain, 1)))
        expect(first(await verifyAll())).toEqual({ kind: 'removed', chain, seq: 1 })
        await behindTrigger((tx) => tx.delete(auditLog).where(and(eq(auditLog.chainId, chain), gte(auditLog.seq, 4), sql`${auditLog.seq} <= 7`)))
        const report = await verifyAll()
        expect(report.findings.map((f) => [f.kind, f.seq])).toEqual([
          ['removed', 1],
          ['removed', 4],
        ])
        expect(report.findings[1]!.message).toMatch(/records 4\.\.7 removed/)
      })

      /** Moves records seq >= from of `chain` up by one, leaving a hole at `from`. */
      const shiftUp = (tx: Db, chain: string, from: number) =>
        tx
          .update(auditLog)
          .set({ seq: sql`${auditLog.seq} + 1000000` })
          .where(and(eq(auditLog.chainId, chain), gte(auditLog.seq, from)))
          .then(() =>
            tx
              .update(auditLog)
              .set({ seq: sql`${auditLog.seq} - 999999` })
              .where(and(eq(auditLog.chainId, chain), gte(auditLog.seq, 1000000))),
          )

      it('a forged record inserted in the middle, hashed correctly over a wrong predecessor: inserted, at its seq', async () => {
        const chain = await seedChain(10)
        const forged = encodeRecord(issued({ jti: 'forged', actors: ['agent-a'] }), {
          chainId: chain,
          seq: 5,
          instance: 'test-instance',
          prevHash: 'ee'.repeat(32),
        })
        expect(forged.hash).toBe(chainHash('ee'.repeat(32), forged.record))
        await behindTrigger(async (tx) => {
          await shiftUp(tx, chain, 5)
          await tx.insert(auditLog).values(insertRow(forged))
        })
        const report = await verifyAll()
        expect(report.records).toBe(11)
        expect(first(report)).toEqual({ kind: 'inserted', chain, seq: 5 })
        // The records moved up say so too.
        expect(report.findings.filter((f) => f.seq > 5).every((f) => f.kind === 'changed' || f.kind === 'inserted')).toBe(true)
      })

      it('a forged record chained correctly to its predecessor: the displaced record after it is the first finding', async () => {
        const chain = await seedChain(10)
        const prev = (await rowAt(chain, 4))!
        const forged = encodeRecord(issued({ jti: 'forged', actors: ['agent-a'] }), { chainId: chain, seq: 5, instance: 'test-instance', prevHash: prev.hash })
        await behindTrigger(async (tx) => {
          await shiftUp(tx, chain, 5)
          await tx.insert(auditLog).values(insertRow(forged))
        })
        const report = await verifyAll()
        // Record 6 is the old record 5: its stored seq disagrees with its text, and it does not follow 5.
        expect(first(report)).toEqual({ kind: 'changed', chain, seq: 6 })
        expect(report.findings.some((f) => f.kind === 'inserted' && f.seq === 6)).toBe(true)
        expect(report.findings.some((f) => f.seq < 6)).toBe(false)
      })

      it('a copy of an earlier record inserted in the middle: the first finding names the copy', async () => {
        const chain = await seedChain(10)
        const copy = (await rowAt(chain, 2))!
        await behindTrigger(async (tx) => {
          await shiftUp(tx, chain, 7)
          await tx.insert(auditLog).values({ ...insertRow(copy), seq: 7 })
        })
        const report = await verifyAll()
        expect(first(report)).toEqual({ kind: 'changed', chain, seq: 7 })
        expect(report.findings.some((f) => f.kind === 'inserted' && f.seq === 7)).toBe(true)
        expect(report.findings.some((f) => f.seq < 7)).toBe(false)
      })

      it('two records reordered (their seqs swapped): a finding at the first swapped seq', async () => {
        const chain = await seedChain(10)
        await behindTrigger(async (tx) => {
          await tx.update(auditLog).set({ seq: 1000000 }).where(at(chain, 4))
          await tx.update(auditLog).set({ seq: 4 }).where(at(chain, 5))
          await tx.update(auditLog).set({ seq: 5 }).where(at(chain, 1000000))
        })
        const report = await verifyAll()
        expect(first(report)).toEqual({ kind: 'changed', chain, seq: 4 })
        expect(report.findings.some((f) => f.kind === 'inserted' && f.seq === 4)).toBe(true)
        expect(report.findings.some((f) => f.seq < 4)).toBe(false)
      })

      it('a finding in one chain leaves another chain clean; each chain gets its own first finding', async () => {
        const a = await seedChain(6, 'a')
        const b = await seedChain(6, 'b')
        await behindTrigger((tx) => tx.delete(auditLog).where(at(b, 3)))
        const report = await verifyAll()
        expect(report).toMatchObject({ ok: false, records: 11, chains: 2 })
        expect(report.findings.map((f) => [f.kind, f.chain, f.seq])).toEqual([['removed', b, 3]])
        expect(report.findings.some((f) => f.chain === a)).toBe(false)
      })

      it('progress is reported every progressEvery records; maxFindings caps the findings', async () => {
        const chain = await seedChain(10)
        const seen: number[] = []
        await verifyAuditLog(db, { progressEvery: 3, pageSize: 4, onProgress: (n) => seen.push(n) })
        expect(seen).toEqual([3, 6, 9])
        await behindTrigger((tx) => tx.update(auditLog).set({ sub: 'x' }).where(eq(auditLog.chainId, chain)))
        expect((await verifyAuditLog(db)).findings).toHaveLength(10)
        expect((await verifyAuditLog(db, { maxFindings: 2 })).findings.map((f) => f.seq)).toEqual([1, 2])
      })
    })

    describe('signed checkpoints', () => {
      it('the log writes them every N records and at close; readCheckpoints verifies them; verify with them is ok', async () => {
        const log = newLog({ groupMaxRecords: 4, checkpoints: { writer: checkpointWriter(), everyRecords: 5, intervalMs: 60_000 } })
        await appendEach(log, mixed(12))
        await log.close()
        expect(log.stats().lastCheckpointSeq).toBe(12)
        const read = await readCheckpoints(dir, keys, ISSUER)
        expect(read.invalid).toEqual([])
        expect(read.checkpoints.length).toBeGreaterThanOrEqual(2)
        const last = read.checkpoints.at(-1)!
        expect(last).toMatchObject({ chain: log.chainId(), instance: 'test-instance', seq: 12, head: (await rowAt(log.chainId(), 12))!.hash })
        expect(last.file).toBe(join(dir, `${log.chainId()}.000000000012.jws`))
        for (const cp of read.checkpoints) expect(cp.head).toBe((await rowAt(cp.chain, cp.seq))!.hash)
        expect(await verifyAuditLog(db, { checkpoints: read.checkpoints })).toStrictEqual({
          ok: true,
          records: 12,
          chains: 1,
          checkpoints: read.checkpoints.length,
          findings: [],
          uncovered: [],
          otherStores: [],
        })
        // A checkpoint file is a compact JWS with the documented header and payload.
        const [header, payload] = (await readFile(last.file, 'utf8'))
          .trim()
          .split('.')
          .slice(0, 2)
          .map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>)
        expect(header).toEqual({ alg: 'ES256', typ: CHECKPOINT_TYP, kid: key.kid })
        expect(payload).toEqual({ iss: ISSUER, chain: log.chainId(), instance: 'test-instance', seq: 12, head: last.head, iat: expect.any(Number) })
      })

      it('a chain is checkpointed as soon as its first record commits (a broker killed in its first second leaves one), then on the cadence', async () => {
        const real = checkpointWriter()
        const written: Promise<string>[] = []
        const writes: Checkpoint[] = []
        const writer = {
          write: (cp: Checkpoint) => {
            writes.push(cp)
            const jws = real.write(cp)
            written.push(jws)
            return jws
          },
        }
        // Neither the interval (60 s) nor the record count (10,000) would come due in this test.
        const log = newLog({ checkpoints: { writer, everyRecords: 10_000, intervalMs: 60_000 } })
        await log.append(policyLoaded('agent-a'))
        // Started before the append resolved to its caller: nothing to wait for.
        expect(writes.map((cp) => [cp.chain, cp.seq])).toEqual([[log.chainId(), 1]])
        await Promise.all(written)
        const read = await readCheckpoints(dir, keys, ISSUER)
        expect(read.checkpoints.map((c) => [c.chain, c.seq, c.head])).toEqual([[log.chainId(), 1, (await rowAt(log.chainId(), 1))!.hash]])
        // From then on, the usual cadence: five more records, no checkpoint before one is due.
        await appendEach(log, mixed(5))
        expect(writes).toHaveLength(1)
        // Were the broker killed now, deleting its chain would still be caught.
        await behindTrigger((tx) => tx.delete(auditLog).where(eq(auditLog.chainId, log.chainId())))
        expect(first(await verifyAuditLog(db, { checkpoints: read.checkpoints }))).toEqual({ kind: 'missing_chain', chain: log.chainId(), seq: 1 })
      })

      it('lists each chain’s records that no checkpoint covers, with the age of the oldest; stale past maxUncoveredAge', async () => {
        const covered = await seedChain(5, 'c')
        const partly = await seedChain(10, 'p')
        const bare = await seedChain(3, 'b')
        const w = checkpointWriter()
        await w.write({ chain: covered, instance: 'test-instance', seq: 5, head: (await rowAt(covered, 5))!.hash, at: T0 })
        await w.write({ chain: partly, instance: 'test-instance', seq: 6, head: (await rowAt(partly, 6))!.hash, at: T0 })
        const { checkpoints } = await readCheckpoints(dir, keys, ISSUER)
        // mixed() writes record i at T0 + i - 1.
        const tailOf = (chain: string, firstSeq: number, lastSeq: number, age: number, stale: boolean) => ({
          chain,
          instance: 'test-instance',
          firstSeq,
          lastSeq,
          records: lastSeq - firstSeq + 1,
          oldestAt: T0 + firstSeq - 1,
          age,
          stale,
        })
        const expected = (maxUncoveredAge: number) =>
          [tailOf(partly, 7, 10, 94, 94 > maxUncoveredAge), tailOf(bare, 1, 3, 100, 100 > maxUncoveredAge)].sort((a, b) => (a.chain < b.chain ? -1 : 1))
        for (const maxUncoveredAge of [0, 94, 99, 100]) {
          const report = await verifyAuditLog(db, { checkpoints, now: T0 + 100, maxUncoveredAge })
          expect(report, `maxUncoveredAge ${maxUncoveredAge}`).toMatchObject({ ok: true, findings: [], uncovered: expected(maxUncoveredAge) })
          for (const pageSize of [1, 4]) expect(await verifyAuditLog(db, { checkpoints, now: T0 + 100, maxUncoveredAge, pageSize })).toStrictEqual(report)
        }
        // A record written after verification began is not old at all.
        expect((await verifyAuditLog(db, { checkpoints, now: T0 - 50 })).uncovered!.map((t) => [t.age, t.stale])).toEqual([
          [0, false],
          [0, false],
        ])
        // Without checkpoints, coverage is not known, so not reported.
        expect(await verifyAuditLog(db)).not.toHaveProperty('uncovered')
        // Records cut off below a checkpoint are truncated, not uncovered.
        await behindTrigger((tx) => tx.delete(auditLog).where(and(eq(auditLog.chainId, covered), gte(auditLog.seq, 4))))
        const cut = await verifyAuditLog(db, { checkpoints, now: T0 + 100 })
        expect(first(cut)).toEqual({ kind: 'truncated', chain: covered, seq: 4 })
        expect(cut.uncovered!.map((t) => t.chain)).not.toContain(covered)
      })

      /** A chain of `n` records with a checkpoint written at its end by the writer; returns both. */
      async function checkpointedChain(n: number, prefix = 'k') {
        const chain = await seedChain(n, prefix)
        const head = (await rowAt(chain, n))!.hash
        await checkpointWriter().write({ chain, instance: 'test-instance', seq: n, head, at: T0 })
        const read = await readCheckpoints(dir, keys, ISSUER)
        expect(read.invalid).toEqual([])
        return { chain, checkpoints: read.checkpoints }
      }

      it('the newest records cut off: the chain alone verifies, the checkpoint reports truncated', async () => {
        const { chain, checkpoints } = await checkpointedChain(10)
        await behindTrigger((tx) => tx.delete(auditLog).where(and(eq(auditLog.chainId, chain), gte(auditLog.seq, 8))))
        expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: 7 })
        const report = await verifyAuditLog(db, { checkpoints })
        expect(report.ok).toBe(false)
        expect(report.findings).toHaveLength(1)
        expect(first(report)).toEqual({ kind: 'truncated', chain, seq: 8 })
        expect(report.findings[0]!.message).toMatch(/records 8\.\.10 were removed/)
      })

      it('the whole chain rewritten consistently: the chain alone verifies, the checkpoint reports rewritten', async () => {
        const { chain, checkpoints } = await checkpointedChain(10)
        const rows = await rowsOf(chain)
        const target = rows.find((r) => r.seq === 3)!
        expect(target.event).toBe('policy.loaded')
        let prev = GENESIS_HASH
        const rewritten = rows.map((r) => {
          const record = r.seq === 3 ? r.record.replace('"source":"agent-c.yaml"', '"source":"innocent.yaml"') : r.record
          const hash = chainHash(prev, record)
          const out = { seq: r.seq, record, prevHash: prev, hash }
          prev = hash
          return out
        })
        expect(rewritten[2]!.record).not.toBe(target.record)
        await behindTrigger(async (tx) => {
          for (const r of rewritten) await tx.update(auditLog).set({ record: r.record, prevHash: r.prevHash, hash: r.hash }).where(at(chain, r.seq))
        })
        expect(await verifyAuditLog(db)).toStrictEqual({ ok: true, records: 10, chains: 1, checkpoints: 0, findings: [] })
        const report = await verifyAuditLog(db, { checkpoints })
        expect(report.findings).toHaveLength(1)
        expect(first(report)).toEqual({ kind: 'rewritten', chain, seq: 10 })
      })

      it('a rewrite below an earlier checkpoint is named at that checkpoint', async () => {
        const chain = await seedChain(10)
        const w = checkpointWriter()
        for (const seq of [4, 10]) await w.write({ chain, instance: 'test-instance', seq, head: (await rowAt(chain, seq))!.hash, at: T0 })
        const { checkpoints } = await readCheckpoints(dir, keys, ISSUER)
        expect(checkpoints.map((c) => c.seq)).toEqual([4, 10])
        const rows = await rowsOf(chain)
        let prev = GENESIS_HASH
        await behindTrigger(async (tx) => {
          for (const r of rows) {
            const record = r.seq === 2 ? r.record.replace('"error":"invalid_scope"', '"error":"invalid_target"') : r.record
            const hash = chainHash(prev, record)
            await tx.update(auditLog).set({ record, prevHash: prev, hash }).where(at(chain, r.seq))
            prev = hash
          }
        })
        expect((await verifyAuditLog(db)).ok).toBe(true)
        const report = await verifyAuditLog(db, { checkpoints })
        expect(first(report)).toEqual({ kind: 'rewritten', chain, seq: 4 })
      })

      it('a whole chain deleted: missing_chain for it, the other chain clean', async () => {
        const kept = await checkpointedChain(5, 'kept')
        const gone = await checkpointedChain(7, 'gone')
        const { checkpoints } = await readCheckpoints(dir, keys, ISSUER)
        expect(checkpoints).toHaveLength(2)
        await behindTrigger((tx) => tx.delete(auditLog).where(eq(auditLog.chainId, gone.chain)))
        expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: 5, chains: 1 })
        const report = await verifyAuditLog(db, { checkpoints })
        expect(report.findings).toHaveLength(1)
        expect(first(report)).toEqual({ kind: 'missing_chain', chain: gone.chain, seq: 1 })
        expect(report.findings[0]!.message).toMatch(/saw 7 records/)
        expect(report.findings.some((f) => f.chain === kept.chain)).toBe(false)
      })

      it('files signed by another key, edited, of another type or issuer are listed as invalid, never used', async () => {
        const { chain } = await checkpointedChain(6)
        const head = (await rowAt(chain, 6))!.hash
        const good = (await readdir(dir)).filter((n) => n.endsWith('.jws'))
        expect(good).toHaveLength(1)
        const payload = { iss: ISSUER, chain, instance: 'test-instance', seq: 9, head, iat: T0 }
        const forge = async (file: string, jws: string) => writeFile(join(dir, file), `${jws}\n`)
        // Another key, under its own kid (unknown) and under ours (signature fails).
        await forge('a-other-kid.jws', await createJwtSigner(otherKey, CHECKPOINT_TYP)(payload))
        await forge('b-other-key-same-kid.jws', await createJwtSigner({ ...otherKey, kid: key.kid }, CHECKPOINT_TYP)(payload))
        // Ours, with the payload edited afterwards (seq 6 → 60).
        const [h, p, s] = (await readFile(join(dir, good[0]!), 'utf8')).trim().split('.') as [string, string, string]
        const edited = Buffer.from(JSON.stringify({ ...(JSON.parse(Buffer.from(p, 'base64url').toString()) as object), seq: 60 })).toString('base64url')
        await forge('c-edited.jws', `${h}.${edited}.${s}`)
        await forge('d-other-typ.jws', await createJwtSigner(key, 'at+jwt')(payload))
        await forge('e-other-issuer.jws', await createJwtSigner(key, CHECKPOINT_TYP)({ ...payload, iss: 'https://evil.test' }))
        await forge('f-garbage.jws', 'not a jws')
        await forge('g-bad-head.jws', await createJwtSigner(key, CHECKPOINT_TYP)({ ...payload, head: 'nope' }))
        await forge('h-bad-store.jws', await createJwtSigner(key, CHECKPOINT_TYP)({ ...payload, store: '../elsewhere' }))
        await forge('.hidden.jws', 'ignored')
        await forge('notes.txt', 'ignored')

        const read = await readCheckpoints(dir, keys, ISSUER)
        expect(read.checkpoints.map((c) => [c.chain, c.seq])).toEqual([[chain, 6]])
        expect(read.invalid.map((i) => [i.file.slice(dir.length + 1), i.reason])).toEqual([
          ['a-other-kid.jws', 'unknown_kid'],
          ['b-other-key-same-kid.jws', 'bad_signature'],
          ['c-edited.jws', 'bad_signature'],
          ['d-other-typ.jws', 'typ_not_allowed'],
          ['e-other-issuer.jws', 'wrong_issuer'],
          ['f-garbage.jws', 'not_compact_jws'],
          ['g-bad-head.jws', 'bad_head'],
          ['h-bad-store.jws', 'bad_store'],
        ])
        // Had the forged seq-9 checkpoints been trusted, verify would report a truncation.
        expect(await verifyAuditLog(db, { checkpoints: read.checkpoints })).toMatchObject({ ok: true, checkpoints: 1 })
        // Without an issuer to check, the other-issuer file is accepted.
        expect((await readCheckpoints(dir, keys, undefined)).invalid.map((i) => i.reason)).not.toContain('wrong_issuer')
      })

      it('are kept per database: held when they name this one, none, or another with a chain here; set aside when another’s chains are all absent', async () => {
        const store = await checkpointStore(h.database)
        expect(store).toMatch(new RegExp(`^${h.database.engine}-[0-9]+-[A-Za-z0-9_-]+$`))
        expect(await checkpointStore(h.database)).toBe(store)
        const sign = createJwtSigner(key, CHECKPOINT_TYP)
        const writerFor = (s?: string) => createCheckpointWriter({ dir, issuer: ISSUER, sign, ...(s === undefined ? {} : { store: s }) })
        const cp = async (chain: string, seq: number, head?: string) => ({
          chain,
          instance: 'test-instance',
          seq,
          head: head ?? (await rowAt(chain, seq))!.hash,
          at: T0,
        })
        const here = await seedChain(3, 'h')
        // A chain of this log checkpointed under another identity (a server upgraded or restored elsewhere), and a
        // chain of that same identity since deleted from here: both are this log's, so both are held.
        const renamed = await seedChain(2, 'r')
        const older = `${h.database.engine}-1-before`
        const deleted = randomUUID()
        // Another database's chains, none of them here; and a checkpoint from before they named a database.
        const foreign = `${h.database.engine}-2-elsewhere`
        const [f1, f2, legacy] = [randomUUID(), randomUUID(), randomUUID()]
        await writerFor(store).write(await cp(here, 3))
        await writerFor(older).write(await cp(renamed, 2, 'ab'.repeat(32)))
        await writerFor(older).write(await cp(deleted, 7, 'cd'.repeat(32)))
        await writerFor(foreign).write(await cp(f1, 4, 'ef'.repeat(32)))
        await writerFor(foreign).write(await cp(f2, 9, 'ef'.repeat(32)))
        await writerFor(undefined).write(await cp(legacy, 1, '01'.repeat(32)))
        expect(() => createCheckpointWriter({ dir, issuer: ISSUER, sign, store: '../x' })).toThrow(TypeError)

        const read = await readCheckpoints(dir, keys, ISSUER)
        expect(read.invalid).toEqual([])
        const where = (chain: string) => read.checkpoints.filter((c) => c.chain === chain).map((c) => [c.store, relative(dir, c.file)])
        expect(where(here)).toEqual([[store, join(store, `${here}.000000000003.jws`)]])
        expect(where(legacy)).toEqual([[undefined, `${legacy}.000000000001.jws`]])
        expect(where(f2)).toEqual([[foreign, join(foreign, `${f2}.000000000009.jws`)]])

        const report = await verifyAuditLog(db, { checkpoints: read.checkpoints, store })
        const found = report.findings.map((f) => [f.kind, f.chain]).sort()
        expect(found).toEqual(
          [
            ['missing_chain', deleted],
            ['missing_chain', legacy],
            ['rewritten', renamed],
          ].sort(),
        )
        expect(report.findings.find((f) => f.chain === legacy)!.message).toContain('name no database')
        expect(report.findings.find((f) => f.chain === deleted)!.message).not.toContain('name no database')
        expect(report.otherStores).toEqual([{ store: foreign, checkpoints: 2, chains: 2 }])
        expect(report.checkpoints).toBe(read.checkpoints.length - 2)
        // Without this database's identity every checkpoint is held, the other database's included.
        const unkeyed = await verifyAuditLog(db, { checkpoints: read.checkpoints })
        expect(
          unkeyed.findings
            .filter((f) => f.kind === 'missing_chain')
            .map((f) => f.chain)
            .sort(),
        ).toEqual([deleted, f1, f2, legacy].sort())
        expect(unkeyed.otherStores).toEqual([])

        // The migration the docs give for old files of another database: a subdirectory of their own.
        await mkdir(join(dir, 'pglite-before'))
        await rename(join(dir, `${legacy}.000000000001.jws`), join(dir, 'pglite-before', `${legacy}.000000000001.jws`))
        const moved = await verifyAuditLog(db, { checkpoints: (await readCheckpoints(dir, keys, ISSUER)).checkpoints, store })
        expect(moved.findings.map((f) => f.chain).sort()).toEqual([deleted, renamed].sort())
        const byStore = (a: { store: string }, b: { store: string }) => (a.store < b.store ? -1 : 1)
        expect(moved.otherStores).toEqual(
          [
            { store: foreign, checkpoints: 2, chains: 2 },
            { store: 'pglite-before', checkpoints: 1, chains: 1 },
          ].sort(byStore),
        )

        // A file moved into another database's directory still names its own in its signed payload.
        const copied = join(dir, foreign, `${here}.000000000003.jws`)
        await writeFile(copied, await readFile(join(dir, store, `${here}.000000000003.jws`), 'utf8'))
        expect((await readCheckpoints(dir, keys, ISSUER)).checkpoints.filter((c) => c.file === copied).map((c) => c.store)).toEqual([store])
      })
    })

    describe('queries', () => {
      /** Names by seq of the one chain the scenario writes. */
      let names: Map<number, string>
      let relevant: string[]
      const namesOf = (page: { records: readonly { seq: number }[] }) => page.records.map((r) => names.get(r.seq))

      /**
       * alice → agent-a (tok-a, root) → agent-b (tok-b) → agent-c (tok-c); bob's unrelated
       * tok-x by agent-x, and bob's tok-y by agent-b (another tree with an agent of this one);
       * revocations that touch the tree and ones that do not.
       */
      async function scenario(): Promise<string> {
        const killB = revoked({ kind: 'agent', agent: A('agent-b') }, T0 + 40)
        const script: [string, AuditEvent][] = [
          ['policy-a', policyLoaded('agent-a', T0)],
          ['tok-a', issued({ jti: 'tok-a', actors: ['agent-a'], at: T0 + 10, scopes: ['read', 'write'] })],
          ['tok-x', issued({ jti: 'tok-x', actors: ['agent-x'], sub: 'bob', at: T0 + 15 })],
          ['tok-b', issued({ jti: 'tok-b', actors: ['agent-b', 'agent-a'], parent: 'tok-a', root: 'tok-a', at: T0 + 20 })],
          ['denied-a', denied('agent-a', T0 + 25)],
          ['tok-y', issued({ jti: 'tok-y', actors: ['agent-b'], sub: 'bob', at: T0 + 27 })],
          ['tok-c', issued({ jti: 'tok-c', actors: ['agent-c', 'agent-b', 'agent-a'], parent: 'tok-b', root: 'tok-a', at: T0 + 30 })],
          ['kill-b', killB],
          ['kill-x', revoked({ kind: 'agent', agent: A('agent-x') }, T0 + 45)],
          ['revoke-c', revoked({ kind: 'jti', jti: J('tok-c') }, T0 + 50)],
          ['revoke-x', revoked({ kind: 'jti', jti: J('tok-x') }, T0 + 51)],
          ['kill-a-for-bob', revoked({ kind: 'agent_sub', agent: A('agent-a'), sub: S('bob'), iss: USER_ISS }, T0 + 52)],
          ['kill-a-for-alice', revoked({ kind: 'agent_sub', agent: A('agent-a'), sub: S('alice'), iss: USER_ISS }, T0 + 53)],
          ['kill-carol', revoked({ kind: 'sub', sub: S('carol'), iss: USER_ISS }, T0 + 54)],
          ['lift-b', lifted(killB, T0 + 60)],
          [
            'audit-read',
            { type: 'admin.audit.read', at: T0 + 70, by: 'auditor', request: '/admin/audit?agent=agent-b', clientAddress: undefined, traceId: undefined },
          ],
          ['key', { type: 'key.rotated', at: T0 + 80, kid: 'k2', previousKid: 'k1' }],
        ]
        const log = newLog()
        const receipts = await appendEach(
          log,
          script.map(([, e]) => e),
        )
        names = new Map(receipts.map((r, i) => [r.seq, script[i]![0]]))
        relevant = ['kill-b', 'revoke-c', 'kill-a-for-alice', 'lift-b']
        await log.close()
        return log.chainId()
      }

      it('delegationTree: the whole tree from the root, with parents, children and the revocations touching it', async () => {
        await scenario()
        const tree = await delegationTree(db, 'tok-c')
        expect(tree).toBeDefined()
        expect(tree!.jti).toBe('tok-c')
        expect(tree!.tokens).toBe(3)
        const root = tree!.root
        const shape = (n: TreeNode): unknown => ({ jti: n.jti, parent: n.parent, children: n.children.map(shape) })
        expect(shape(root)).toEqual({
          jti: 'tok-a',
          parent: null,
          children: [{ jti: 'tok-b', parent: 'tok-a', children: [{ jti: 'tok-c', parent: 'tok-b', children: [] }] }],
        })
        expect(root).toMatchObject({
          agent: 'agent-a',
          actors: ['agent-a'],
          sub: 'alice',
          audience: 'https://api.test',
          scopes: ['read', 'write'],
          issuedAt: T0 + 10,
          expiresAt: T0 + 310,
          policyHash: POLICY_HASH,
          instance: 'test-instance',
          withheld: false,
        })
        const c = root.children[0]!.children[0]!
        expect(c).toMatchObject({ agent: 'agent-c', actors: ['agent-c', 'agent-b', 'agent-a'], issuedAt: T0 + 30, withheld: false })
        expect(tree!.revocations.map((r) => names.get(r.seq))).toEqual(relevant)
        expect(tree!.revocations.map((r) => (r.record['revocation'] as { kind: string }).kind)).toEqual(['agent', 'jti', 'agent_sub', 'agent'])
        expect(tree!.revocations[3]!.record['event']).toBe('revocation.lifted')
        // Asked from any token of the tree, the same tree.
        for (const jti of ['tok-a', 'tok-b']) {
          const other = await delegationTree(db, jti)
          expect(other!.jti).toBe(jti)
          expect(shape(other!.root)).toEqual(shape(root))
          expect(other!.revocations.map((r) => r.seq)).toEqual(tree!.revocations.map((r) => r.seq))
        }
      })

      it('delegationTree: an unrelated token is a tree of its own; an unknown jti is undefined', async () => {
        await scenario()
        const x = await delegationTree(db, 'tok-x')
        expect(x).toMatchObject({ jti: 'tok-x', tokens: 1, root: { jti: 'tok-x', parent: null, children: [], sub: 'bob' } })
        expect(x!.revocations.map((r) => names.get(r.seq))).toEqual(['kill-x', 'revoke-x'])
        const y = await delegationTree(db, 'tok-y')
        // agent-b, for bob: the agent-wide kill (and its lift) touch it, alice's kill of agent-a does not.
        expect(y!.revocations.map((r) => names.get(r.seq))).toEqual(['kill-b', 'lift-b'])
        expect(await delegationTree(db, 'tok-unknown')).toBeUndefined()
        expect(await delegationTree(db, '')).toBeUndefined()
        // A jti that no token.issued names, though other records do (a denial has none; tok-c's revocation is not a token).
        expect(await delegationTree(db, 'tok-%')).toBeUndefined()
      })

      it('queryAudit filters: agent anywhere in actors, sub, jti, event exact and family, from/to inclusive; newest first', async () => {
        await scenario()
        const q = async (f: AuditFilter) => namesOf(await queryAudit(db, { ...f, limit: 500 }))
        expect(await q({})).toEqual([...names.values()].reverse())
        expect(await q({ agent: 'agent-a' })).toEqual(['kill-a-for-alice', 'kill-a-for-bob', 'tok-c', 'denied-a', 'tok-b', 'tok-a', 'policy-a'])
        expect(await q({ agent: 'agent-b' })).toEqual(['lift-b', 'kill-b', 'tok-c', 'tok-y', 'tok-b'])
        expect(await q({ agent: 'agent-c' })).toEqual(['tok-c'])
        expect(await q({ agent: 'agent-%' })).toEqual([])
        expect(await q({ sub: 'bob' })).toEqual(['kill-a-for-bob', 'tok-y', 'tok-x'])
        expect(await q({ sub: 'carol' })).toEqual(['kill-carol'])
        expect(await q({ jti: 'tok-c' })).toEqual(['revoke-c', 'tok-c'])
        expect(await q({ jti: 'tok-b' })).toEqual(['tok-b'])
        expect(await q({ event: 'token.issued' })).toEqual(['tok-c', 'tok-y', 'tok-b', 'tok-x', 'tok-a'])
        expect(await q({ event: 'token.*' })).toEqual(['tok-c', 'tok-y', 'denied-a', 'tok-b', 'tok-x', 'tok-a'])
        expect(await q({ event: 'revocation.*' })).toEqual([
          'lift-b',
          'kill-carol',
          'kill-a-for-alice',
          'kill-a-for-bob',
          'revoke-x',
          'revoke-c',
          'kill-x',
          'kill-b',
        ])
        expect(await q({ event: 'admin.*' })).toEqual(['audit-read'])
        expect(await q({ event: 'token' })).toEqual([])
        expect(await q({ event: 'tok*' })).toEqual([])
        expect(await q({ event: '%.*' })).toEqual([])
        expect(await q({ from: T0 + 45, to: T0 + 51 })).toEqual(['revoke-x', 'revoke-c', 'kill-x'])
        expect(await q({ from: T0 + 70 })).toEqual(['key', 'audit-read'])
        expect(await q({ to: T0 + 10 })).toEqual(['tok-a', 'policy-a'])
        expect(await q({ from: T0 + 11, to: T0 + 14 })).toEqual([])
        expect(await q({ agent: 'agent-a', event: 'token.*', from: T0 + 20 })).toEqual(['tok-c', 'denied-a', 'tok-b'])
        // Each entry is the hashed record itself, with where it sits.
        const [entry] = (await queryAudit(db, { jti: 'tok-b' })).records
        const row = (await db.select().from(auditLog).where(eq(auditLog.id, entry!.id)))[0]!
        expect(entry).toStrictEqual({ id: row.id, chain: row.chainId, seq: row.seq, hash: row.hash, record: JSON.parse(row.record) })
      })

      it('keyset pagination: pages of 7 over 50 records, each exactly once, newest first, no next on the last', async () => {
        const log = newLog()
        await Promise.all(mixed(50, 'p').map((e) => log.append(e)))
        const seen: number[] = []
        const sizes: number[] = []
        let before: number | undefined
        for (let pages = 0; ; pages++) {
          expect(pages).toBeLessThan(20)
          const page = await queryAudit(db, { limit: 7, ...(before === undefined ? {} : { before }) })
          sizes.push(page.records.length)
          seen.push(...page.records.map((r) => r.seq))
          if (page.next === undefined) break
          expect(page.next).toBe(page.records.at(-1)!.id)
          before = page.next
        }
        expect(sizes).toEqual([7, 7, 7, 7, 7, 7, 7, 1])
        expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => 50 - i))
        // A last page that is exactly full has no next either.
        const tens: number[] = []
        let page = await queryAudit(db, { limit: 10 })
        tens.push(page.records.length)
        while (page.next !== undefined) {
          page = await queryAudit(db, { limit: 10, before: page.next })
          tens.push(page.records.length)
        }
        expect(tens).toEqual([10, 10, 10, 10, 10])
        // Filtered pages: the 13 token.issued records, 5 at a time.
        const filtered: string[] = []
        let p = await queryAudit(db, { event: 'token.issued', limit: 5 })
        filtered.push(...p.records.map((r) => r.record['jti'] as string))
        while (p.next !== undefined) {
          p = await queryAudit(db, { event: 'token.issued', limit: 5, before: p.next })
          filtered.push(...p.records.map((r) => r.record['jti'] as string))
        }
        expect(filtered).toEqual(Array.from({ length: 13 }, (_, i) => `p-${48 - 4 * i}`))
        // The limit is held to 1..500.
        expect((await queryAudit(db, { limit: 0 })).records).toHaveLength(1)
        expect((await queryAudit(db, { limit: 10_000 })).records).toHaveLength(50)
      })
    })

    describe('close', () => {
      it('writes what is queued before it resolves (and a last checkpoint); appends after close are refused', async () => {
        // A long wait: only close() can send this group in time.
        const log = newLog({ groupMaxWaitMs: 10_000, checkpoints: { writer: checkpointWriter(), everyRecords: 1_000, intervalMs: 60_000 } })
        const pending = mixed(25).map((e) => log.append(e))
        const started = Date.now()
        await log.close()
        expect(Date.now() - started).toBeLessThan(5_000)
        expect(await rowsOf(log.chainId())).toHaveLength(25)
        expect((await Promise.all(pending)).map((r) => r.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1))
        expect(log.stats().lastCheckpointSeq).toBe(25)
        const { checkpoints, invalid } = await readCheckpoints(dir, keys, ISSUER)
        expect(invalid).toEqual([])
        expect(checkpoints.map((c) => c.seq)).toEqual([25])
        const late = await rejection(log.append(denied('agent-a')))
        expect(late).toBeInstanceOf(AuditUnavailable)
        expect((late as AuditUnavailable).outcome).toBe('not_written')
        await log.close() // idempotent
        expect(await rowsOf(log.chainId())).toHaveLength(25)
        expect(await verifyAuditLog(db, { checkpoints })).toMatchObject({ ok: true, records: 25 })
      })

      it('close with nothing queued resolves and writes no checkpoint for an empty chain', async () => {
        const log = newLog({ checkpoints: { writer: checkpointWriter(), everyRecords: 1, intervalMs: 60_000 } })
        await log.close()
        expect(log.stats()).toMatchObject({ records: 0, lastCheckpointSeq: 0 })
        expect((await readdir(dir).catch(() => [])).filter((n) => n.endsWith('.jws'))).toEqual([])
        await expect(log.append(denied('agent-a'))).rejects.toBeInstanceOf(AuditUnavailable)
      })
    })

    // PGlite lives in this process: there is no connection to cut.
    if (options.outages !== true) return

    describe('outages (PostgreSQL: connections cut through a proxy, answers lost to timeouts)', () => {
      /** A log on a second connection pool reaching the same database through a proxy. */
      async function proxiedLog(over: Partial<SqlAuditLogOptions> = {}) {
        const proxy = await startTcpProxy(h.url!)
        const database = await openDatabase(proxy.url, { dataDir: '/nonexistent' })
        const log = newLog({ database, writeTimeoutMs: 2_000, ...over })
        const close = async () => {
          await log.close().catch(() => {})
          proxy.restore()
          await database.close()
          await proxy.close()
        }
        return { proxy, log, close }
      }

      /** Every token.issued whose append was refused but which committed is followed by its token.withheld; nothing else is. */
      async function expectWithheldAccounting(chain: string, outcomes: readonly { jti: string; seq?: number; error?: unknown }[]) {
        const rows = await rowsOf(chain)
        const issuedSeq = new Map(rows.filter((r) => r.event === 'token.issued').map((r) => [r.jti!, r.seq]))
        const withheldSeq = new Map(rows.filter((r) => r.event === 'token.withheld').map((r) => [r.jti!, r.seq]))
        expect(withheldSeq.size).toBe(rows.filter((r) => r.event === 'token.withheld').length)
        for (const o of outcomes) {
          if (o.error === undefined) {
            expect(issuedSeq.get(o.jti), o.jti).toBe(o.seq)
            expect(withheldSeq.has(o.jti), o.jti).toBe(false)
          } else if (issuedSeq.has(o.jti)) {
            expect(withheldSeq.get(o.jti), `${o.jti} committed but refused: withheld after it`).toBeGreaterThan(issuedSeq.get(o.jti)!)
          } else {
            expect(withheldSeq.has(o.jti), o.jti).toBe(false)
          }
        }
        for (const jti of withheldSeq.keys()) expect(outcomes.find((o) => o.jti === jti)?.error, jti).toBeDefined()
      }

      it('readiness of an idle log notices the database gone (a background ping, answered from the last one) and back within 1 s', async () => {
        const { proxy, log, close } = await proxiedLog()
        try {
          await log.append(issued({ actors: ['a'], jti: 'idle-1' }))
          expect(await log.probe()).toBe(true)
          proxy.cut()
          // No write notices: readiness pings at most every 5 s, in the background, each bounded by 2 s.
          const goneBy = Date.now() + 12_000
          const answers: number[] = []
          let ready = true
          while (ready && Date.now() < goneBy) {
            const t0 = performance.now()
            ready = await log.probe()
            answers.push(performance.now() - t0)
            await new Promise((r) => setTimeout(r, 200))
          }
          expect(ready).toBe(false)
          // Each answer came from the last ping, without waiting for one.
          expect(Math.max(...answers)).toBeLessThan(100)
          proxy.restore()
          const restoredAt = performance.now()
          const backBy = Date.now() + 12_000
          while (!ready && Date.now() < backBy) {
            ready = await log.probe()
            if (!ready) await new Promise((r) => setTimeout(r, 20))
          }
          expect(ready).toBe(true)
          // While the database is gone the background ping is retried often: readiness is not held back for 5 s.
          expect(performance.now() - restoredAt).toBeLessThan(1_000)
        } finally {
          await close()
        }
      }, 40_000)

      it('appends in flight when the connection is cut are refused (AuditUnavailable); after restore the chain goes on unforked', async () => {
        const { proxy, log, close } = await proxiedLog({ groupMaxRecords: 20 })
        try {
          const chain = log.chainId()
          const outcomes: { jti: string; seq?: number; error?: unknown }[] = []
          const pending: Promise<void>[] = []
          let stop = false
          let n = 0
          const pump = (async () => {
            while (!stop) {
              for (let i = 0; i < 5; i++) {
                const o: { jti: string; seq?: number; error?: unknown } = { jti: `f-${n}` }
                outcomes.push(o)
                pending.push(
                  log.append(issued({ jti: `f-${n++}`, actors: ['agent-a'] })).then(
                    (r) => void (o.seq = r.seq),
                    (e: unknown) => void (o.error = e),
                  ),
                )
              }
              await sleep(2)
            }
          })()
          await sleep(150)
          proxy.cut()
          await sleep(500)
          proxy.restore()
          await sleep(500)
          stop = true
          await pump
          await Promise.all(pending)

          const refused = outcomes.filter((o) => o.error !== undefined)
          expect(outcomes.filter((o) => o.error === undefined).length).toBeGreaterThan(0)
          expect(refused.length).toBeGreaterThan(0)
          for (const o of refused) expect(o.error, o.jti).toBeInstanceOf(AuditUnavailable)
          // Later appends succeed once the pool has reconnected (its backoff is capped near 1 s; on a
          // loaded machine a connection can take longer than the 2 s write bound): retried like a
          // client answered 503. A refused retry that committed after all is accounted below, like the others.
          let later: AuditReceipt | undefined
          for (let i = 0; later === undefined; i++) {
            const jti = `after-${i}`
            try {
              later = await log.append(issued({ jti, actors: ['agent-a'] }))
              outcomes.push({ jti, seq: later.seq })
            } catch (err) {
              expect(err).toBeInstanceOf(AuditUnavailable)
              outcomes.push({ jti, error: err })
              if (i >= 8) throw err
              await sleep(500)
            }
          }
          expect(log.healthy()).toBe(true)
          expect(log.chainId()).toBe(chain)
          // Receipts are handed out in call order.
          const seqs = outcomes.filter((o) => o.seq !== undefined).map((o) => o.seq!)
          expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
          expect(await verifyAuditLog(db)).toMatchObject({ ok: true, chains: 1, findings: [] })
          const rows = await rowsOf(chain)
          expect(rows.map((r) => r.seq)).toEqual(rows.map((_, i) => i + 1))
          await expectWithheldAccounting(chain, outcomes)
        } finally {
          await close()
        }
      })

      it('a group that committed but whose answer was lost: refused as unknown, then its tokens are recorded as withheld', async () => {
        const { proxy, log, close } = await proxiedLog({ writeTimeoutMs: 5_000 })
        // The server takes 600 ms over each INSERT: long enough to cut the connection while it runs.
        await db.execute(sql.raw(`create function test_slow_insert() returns trigger language plpgsql as $$ begin perform pg_sleep(0.6); return null; end $$`))
        await db.execute(sql.raw(`create trigger test_slow_insert before insert on audit_log for each statement execute function test_slow_insert()`))
        try {
          const chain = log.chainId()
          expect(await log.append(policyLoaded('agent-a'))).toEqual({ seq: 1 })
          const group = [
            issued({ jti: 'w-1', actors: ['agent-a'] }),
            denied('agent-a'),
            issued({ jti: 'w-2', actors: ['agent-b', 'agent-a'], parent: 'w-1', root: 'w-1' }),
            issued({ jti: 'w-3', actors: ['agent-a'] }),
          ]
          const attempts = group.map((e) => rejection(log.append(e)))
          await sleep(200)
          proxy.cut()
          const errors = await Promise.all(attempts)
          for (const e of errors) {
            expect(e).toBeInstanceOf(AuditUnavailable)
            expect((e as AuditUnavailable).outcome).toBe('unknown')
          }
          expect(log.healthy()).toBe(false)
          // The server finishes the INSERT and commits, with nobody to tell.
          await sleep(800)
          expect((await rowsOf(chain)).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5])
          await db.execute(sql.raw(`drop trigger test_slow_insert on audit_log`))
          proxy.restore()

          expect(await log.append(policyLoaded('agent-b'))).toEqual({ seq: 9 })
          const rows = await rowsOf(chain)
          expect(rows.map((r) => [r.seq, r.event, r.jti])).toEqual([
            [1, 'policy.loaded', null],
            [2, 'token.issued', 'w-1'],
            [3, 'token.denied', null],
            [4, 'token.issued', 'w-2'],
            [5, 'token.issued', 'w-3'],
            [6, 'token.withheld', 'w-1'],
            [7, 'token.withheld', 'w-2'],
            [8, 'token.withheld', 'w-3'],
            [9, 'policy.loaded', null],
          ])
          expect(JSON.parse(rows[5]!.record)).toMatchObject({ agent: 'agent-a', sub: 'alice', jti: 'w-1', reason: expect.stringMatching(/503/) })
          expect(rows[6]!.agent).toBe('agent-b')
          expect(log.stats()).toMatchObject({ records: 9, failedGroups: 1 })
          expect(log.healthy()).toBe(true)
          expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: 9, chains: 1 })
          const tree = await delegationTree(db, 'w-2')
          expect(tree!.root).toMatchObject({ jti: 'w-1', withheld: true, children: [{ jti: 'w-2', withheld: true }] })
        } finally {
          await db.execute(sql.raw(`drop trigger if exists test_slow_insert on audit_log`))
          await db.execute(sql.raw(`drop function if exists test_slow_insert()`))
          await close()
        }
      })

      // A timed-out INSERT is left running by withTimeout; the writer waits for its end (up to one more
      // write timeout) before reading the head, so that a late commit is found and its tokens withheld.
      it('a group that timed out and committed later (the next group already sent): its tokens are still recorded as withheld', async () => {
        // No proxy: the answer is lost to writeTimeoutMs, the commonest way under load. The server takes
        // 600 ms over each INSERT; the writer gives up after 200 ms and goes on with the next group at once.
        const log = newLog({ writeTimeoutMs: 200 })
        const chain = log.chainId()
        expect(await log.append(policyLoaded('agent-a'))).toEqual({ seq: 1 })
        await db.execute(sql.raw(`create function test_slow_insert() returns trigger language plpgsql as $$ begin perform pg_sleep(0.6); return null; end $$`))
        await db.execute(sql.raw(`create trigger test_slow_insert before insert on audit_log for each statement execute function test_slow_insert()`))
        try {
          const slow = await rejection(log.append(issued({ jti: 'late-1', actors: ['agent-a'] })))
          expect(slow).toBeInstanceOf(AuditUnavailable)
          expect((slow as AuditUnavailable).outcome).toBe('unknown')
          // The next request's record, while the first INSERT is still running on the server.
          const next = await log.append(issued({ jti: 'late-2', actors: ['agent-a'] })).catch((e: unknown) => e)
          await sleep(1_500) // every INSERT has finished
          await db.execute(sql.raw(`drop trigger test_slow_insert on audit_log`))
          await log.append(policyLoaded('agent-b')).catch(() => log.append(policyLoaded('agent-b')))
          await log.close()

          const rows = await db.select().from(auditLog).orderBy(asc(auditLog.id))
          const issuedRows = rows.filter((r) => r.event === 'token.issued')
          const withheldRows = rows.filter((r) => r.event === 'token.withheld')
          const outcomes = [
            { jti: 'late-1', error: slow },
            next instanceof Error ? { jti: 'late-2', error: next } : { jti: 'late-2', seq: (next as AuditReceipt).seq },
          ]
          // Whatever committed and was refused to its caller is followed by its token.withheld.
          for (const o of outcomes) {
            const row = issuedRows.find((r) => r.jti === o.jti)
            if (o.error === undefined || row === undefined) continue
            const w = withheldRows.find((r) => r.jti === o.jti)
            expect(
              w,
              `${o.jti} committed (chain ${row.chainId === chain ? 'first' : 'other'}, seq ${row.seq}) but its caller was answered AuditUnavailable: no token.withheld`,
            ).toBeDefined()
            expect(w!.id).toBeGreaterThan(row.id)
          }
          expect((await verifyAuditLog(db)).ok).toBe(true)
        } finally {
          await db.execute(sql.raw(`drop trigger if exists test_slow_insert on audit_log`))
          await db.execute(sql.raw(`drop function if exists test_slow_insert()`))
        }
      })

      // Regression (failed before 1d4f944): the token.withheld records owed for a committed-but-refused
      // group travel with the next group; when the server refuses that one (here a trigger raising, in
      // production e.g. a statement timeout or a full disk), they must still be written by a later group.
      it('token.withheld records survive a refused write: they are written by a later group', async () => {
        const { proxy, log, close } = await proxiedLog({ writeTimeoutMs: 5_000 })
        const chain = log.chainId()
        await db.execute(sql.raw(`create function test_slow_insert() returns trigger language plpgsql as $$ begin perform pg_sleep(0.6); return null; end $$`))
        await db.execute(
          sql.raw(
            `create function test_refuse_insert() returns trigger language plpgsql as $$ begin raise exception 'disk full (test)' using errcode = '53100'; end $$`,
          ),
        )
        await db.execute(sql.raw(`create trigger test_slow_insert before insert on audit_log for each statement execute function test_slow_insert()`))
        try {
          // A group committed while its answer was lost: w-1 is refused to its caller.
          const lost = rejection(log.append(issued({ jti: 'w-1', actors: ['agent-a'] })))
          await sleep(200)
          proxy.cut()
          expect(((await lost) as AuditUnavailable).outcome).toBe('unknown')
          await sleep(800)
          expect((await rowsOf(chain)).map((r) => r.jti)).toEqual(['w-1'])
          await db.execute(sql.raw(`drop trigger test_slow_insert on audit_log`))
          proxy.restore()
          // The next group (carrying w-1's token.withheld) is refused by the server.
          await db.execute(sql.raw(`create trigger test_refuse_insert before insert on audit_log for each statement execute function test_refuse_insert()`))
          const refused = await rejection(log.append(denied('agent-a')))
          expect(refused).toBeInstanceOf(AuditUnavailable)
          expect((refused as AuditUnavailable).outcome).toBe('not_written')
          await db.execute(sql.raw(`drop trigger test_refuse_insert on audit_log`))
          // The database takes writes again.
          await log.append(policyLoaded('agent-b'))
          const rows = await db.select().from(auditLog).orderBy(asc(auditLog.id))
          const issuedRow = rows.find((r) => r.jti === 'w-1' && r.event === 'token.issued')!
          const withheld = rows.find((r) => r.jti === 'w-1' && r.event === 'token.withheld')
          expect(
            withheld,
            `w-1 committed at seq ${issuedRow.seq} and was refused to its caller, but no token.withheld was ever written; rows: ${JSON.stringify(rows.map((r) => [r.seq, r.event, r.jti]))}`,
          ).toBeDefined()
          expect(withheld!.id).toBeGreaterThan(issuedRow.id)
          expect((await verifyAuditLog(db)).ok).toBe(true)
        } finally {
          await db.execute(sql.raw(`drop trigger if exists test_slow_insert on audit_log`))
          await db.execute(sql.raw(`drop trigger if exists test_refuse_insert on audit_log`))
          await db.execute(sql.raw(`drop function if exists test_slow_insert()`))
          await db.execute(sql.raw(`drop function if exists test_refuse_insert()`))
          await close()
        }
      })

      it('close() settles a group left unconfirmed and writes the token.withheld records it owes', async () => {
        const { proxy, log, close } = await proxiedLog({ writeTimeoutMs: 5_000 })
        const chain = log.chainId()
        await db.execute(sql.raw(`create function test_slow_insert() returns trigger language plpgsql as $$ begin perform pg_sleep(0.6); return null; end $$`))
        await db.execute(sql.raw(`create trigger test_slow_insert before insert on audit_log for each statement execute function test_slow_insert()`))
        try {
          const lost = rejection(log.append(issued({ jti: 'c-1', actors: ['agent-a'] })))
          await sleep(200)
          proxy.cut()
          expect(((await lost) as AuditUnavailable).outcome).toBe('unknown')
          await sleep(800)
          await db.execute(sql.raw(`drop trigger test_slow_insert on audit_log`))
          proxy.restore()
          // Nothing else is appended: shutting down must still say that c-1 never left the broker.
          await log.close()
          expect((await rowsOf(chain)).map((r) => [r.seq, r.event, r.jti])).toEqual([
            [1, 'token.issued', 'c-1'],
            [2, 'token.withheld', 'c-1'],
          ])
          expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: 2 })
        } finally {
          await db.execute(sql.raw(`drop trigger if exists test_slow_insert on audit_log`))
          await db.execute(sql.raw(`drop function if exists test_slow_insert()`))
          await close()
        }
      })

      it('a group refused before it reached the server: no withheld records, the chain continues at the same seq', async () => {
        const { proxy, log, close } = await proxiedLog()
        try {
          const chain = log.chainId()
          await appendEach(log, [policyLoaded('agent-a'), issued({ jti: 'ok-1', actors: ['agent-a'] })])
          proxy.cut()
          const error = await rejection(log.append(issued({ jti: 'lost-1', actors: ['agent-a'] })))
          expect(error).toBeInstanceOf(AuditUnavailable)
          // Still cut: the writer cannot learn what happened, so it writes nothing.
          expect(await rejection(log.append(issued({ jti: 'lost-2', actors: ['agent-a'] })))).toBeInstanceOf(AuditUnavailable)
          proxy.restore()
          expect(await log.append(issued({ jti: 'ok-2', actors: ['agent-a'] }))).toEqual({ seq: 3 })
          expect(log.chainId()).toBe(chain)
          expect((await rowsOf(chain)).map((r) => r.jti)).toEqual([null, 'ok-1', 'ok-2'])
          expect(await verifyAuditLog(db)).toMatchObject({ ok: true, records: 3, chains: 1 })
        } finally {
          await close()
        }
      })
    })
  })
}

describeAuditLog('pglite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-audit-log-'))
  const database = await openDatabase(undefined, { dataDir: dir })
  await database.migrate()
  return {
    database,
    close: async () => {
      await database.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
})

describeAuditLog(
  'postgres',
  async () => {
    let test: TestDatabase | undefined = await createTestDatabase()
    try {
      // A session time zone far from UTC: `at` must come back as written.
      await test.admin(`alter database "${test.name}" set timezone to 'Asia/Kathmandu'`)
      const database = await openDatabase(test.url, { dataDir: '/nonexistent' })
      await database.migrate()
      const owned = test
      test = undefined
      return {
        database,
        url: owned.url,
        close: async () => {
          await database.close()
          await owned.drop()
        },
      }
    } finally {
      await test?.drop()
    }
  },
  { describe: describePostgres, outages: true },
)
