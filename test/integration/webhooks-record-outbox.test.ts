/**
 * The record source of a webhook's queue (src/ssf/record-outbox.ts) over a
 * real database, PostgreSQL and PGlite: which governance records of the
 * delegation log a scan returns, that an enqueued one is never returned
 * again, that the record cursor and its grace bound the scan, and that
 * settled entries are pruned by the record cursor, not the revocation one.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { count, eq } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AuditEvent } from '../../src/audit/port.js'
import { createSqlAuditLog, type SqlAuditLog } from '../../src/audit/sql.js'
import type { AgentId } from '../../src/core/claims.js'
import { createSqlSsfStore, type OutboxEntry, type SsfStore } from '../../src/ssf/outbox.js'
import type { LogRecord, RecordSelector } from '../../src/ssf/record-outbox.js'
import { openDatabase, type Database } from '../../src/storage/database.js'
import { ssfOutbox } from '../../src/storage/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { captureLogs } from '../support/log-sink.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const T = 1_800_000_000
const GRACE = 60
const DAY = 86_400
const DORMANT: RecordSelector[] = [{ event: 'agent.lifecycle', field: 'transition', values: ['dormant'] }]

const lifecycle = (at: number, agent: string, transition: 'dormant' | 'orphaned'): AuditEvent => ({
  type: 'agent.lifecycle',
  at,
  agent: agent as AgentId,
  transition,
  suspended: false,
  detail: 'test',
})

const entryOf = (receiver: string, r: LogRecord): OutboxEntry => ({
  receiver,
  jti: `msg_${r.id}`,
  auditId: r.id,
  revokedAt: r.at,
  ordinal: 0,
  eventType: 'agent.dormant',
  set: '{}',
  enqueuedAtMs: Date.now(),
})

function describeRecordOutbox(name: string, describeIt: typeof describe, open: () => Promise<{ database: Database; drop(): Promise<void> }>) {
  describeIt(`webhook record outbox (${name})`, () => {
    let database: Database
    let drop: () => Promise<void>
    let audit: SqlAuditLog
    let store: SsfStore

    beforeAll(async () => {
      const opened = await open()
      database = opened.database
      drop = opened.drop
      await database.migrate()
      audit = createSqlAuditLog({
        database,
        instance: 'test',
        clock: () => T * 1000,
        groupMaxRecords: 64,
        groupMaxWaitMs: 0,
        writeTimeoutMs: 5_000,
        logger: createLogger('debug', captureLogs(`record outbox ${name}`).stream),
      })
      store = createSqlSsfStore(database.db)
    })

    afterAll(async () => {
      await audit?.close()
      await database?.close()
      await drop?.()
    })

    it('returns the selected records made since the start, oldest first, and never one already enqueued', async () => {
      const receiver = 'webhook:select'
      await store.ensureStream(receiver, T)
      await audit.append(lifecycle(T - 1, 'before-start', 'dormant'))
      await audit.append(lifecycle(T + 2, 'b', 'dormant'))
      await audit.append(lifecycle(T + 1, 'a', 'dormant'))
      await audit.append(lifecycle(T + 1, 'other-transition', 'orphaned'))
      const unsent = await store.unsentRecords(receiver, DORMANT, GRACE, undefined, 100)
      expect(unsent.map((r) => (JSON.parse(r.record) as { agent: string }).agent)).toEqual(['a', 'b'])
      // A page resumes after the key given.
      expect(await store.unsentRecords(receiver, DORMANT, GRACE, { at: unsent[0]!.at, id: unsent[0]!.id }, 100)).toEqual([unsent[1]])
      expect(await store.unsentRecords(receiver, [], GRACE, undefined, 100)).toEqual([])

      await store.enqueueRecords(receiver, [entryOf(receiver, unsent[0]!)], unsent[0]!.at)
      expect((await store.unsentRecords(receiver, DORMANT, GRACE, undefined, 100)).map((r) => r.id)).toEqual([unsent[1]!.id])
      await store.enqueueRecords(receiver, [entryOf(receiver, unsent[1]!)], unsent[1]!.at)
      // Enqueued again by another instance: left as it is.
      await store.enqueueRecords(receiver, [entryOf(receiver, unsent[1]!)], unsent[1]!.at)
      expect(await store.unsentRecords(receiver, DORMANT, GRACE, undefined, 100)).toEqual([])
      expect((await store.pending(receiver, 10)).map((e) => e.auditId)).toEqual(unsent.map((r) => r.id))
      expect((await store.stream(receiver))?.auditCursorAt).toBe(T + 2)
    })

    it('reads no further back than the grace period behind the record cursor', async () => {
      const receiver = 'webhook:grace'
      await store.ensureStream(receiver, T)
      await audit.append(lifecycle(T + 10 * DAY, 'moves-cursor', 'dormant'))
      const [first] = await store.unsentRecords(receiver, DORMANT, GRACE, { at: T + 10 * DAY - 1, id: 0 }, 1)
      await store.enqueueRecords(receiver, [entryOf(receiver, first!)], first!.at)
      await audit.append(lifecycle(T + 10 * DAY - GRACE, 'late-within-grace', 'dormant'))
      await audit.append(lifecycle(T + 10 * DAY - GRACE - 1, 'late-past-grace', 'dormant'))
      const agents = (await store.unsentRecords(receiver, DORMANT, GRACE, undefined, 100)).map((r) => (JSON.parse(r.record) as { agent: string }).agent)
      expect(agents).toEqual(['late-within-grace'])
    })

    it('prunes settled record entries by the record cursor: a revocation cursor days ahead never makes the scan send them again', async () => {
      const receiver = 'webhook:prune'
      await store.ensureStream(receiver, T)
      const unsent = await store.unsentRecords(receiver, DORMANT, GRACE, undefined, 100)
      expect(unsent.length).toBeGreaterThan(0)
      await store.enqueueRecords(
        receiver,
        unsent.map((r) => entryOf(receiver, r)),
        Math.max(...unsent.map((r) => r.at)),
      )
      await store.delivered(
        receiver,
        unsent.map((r) => `msg_${r.id}`),
      )
      // Revocations moved this webhook's revocation cursor 30 days on; the transmitter prunes behind it.
      const revocationCursor = T + 30 * DAY
      await store.enqueue(receiver, [], revocationCursor)
      await store.prune(receiver, revocationCursor - GRACE - DAY)
      expect(await store.unsentRecords(receiver, DORMANT, GRACE, undefined, 100)).toEqual([])
      // Behind the record cursor they go.
      const cursor = (await store.stream(receiver))!.auditCursorAt!
      await store.pruneRecords(receiver, cursor + 1)
      const [left] = await database.db.select({ n: count() }).from(ssfOutbox).where(eq(ssfOutbox.receiver, receiver))
      expect(left?.n).toBe(0)
    })
  })
}

describeRecordOutbox('PostgreSQL', describePostgres, async () => {
  const db: TestDatabase = await createTestDatabase()
  return { database: await openDatabase(db.url, { dataDir: '' }), drop: () => db.drop() }
})

describeRecordOutbox('PGlite', describe, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-record-outbox-'))
  return { database: await openDatabase(undefined, { dataDir: dir }), drop: () => rm(dir, { recursive: true, force: true }) }
})
