/**
 * Every adapter of every port the contract suites cover, built one way: the
 * suites import the ports and this file, never an adapter module, so that an
 * adapter moving between modules touches this file alone.
 *
 * Each adapter case owns its backing store for the life of its `describe`
 * block: a PostgreSQL database of its own (createTestDatabase), a PGlite
 * directory of its own, or a Redis key prefix of its own; `close()` removes it.
 * An unreachable server skips the case on a developer machine and fails it
 * under `CI=true` (describePostgres, redisAvailable).
 */
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { asc, eq, sql } from 'drizzle-orm'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { describe } from 'vitest'
import { createMemoryAdmissionStore } from '../../src/admission/memory.js'
import type { AdmissionStore } from '../../src/admission/port.js'
import { createRedisAdmissionStore } from '../../src/admission/redis.js'
import { createMemoryAuditLog } from '../../src/audit/memory.js'
import type { AuditEventType, AuditLog } from '../../src/audit/port.js'
import { createSqlAuditLog, type SqlAuditLog } from '../../src/audit/sql.js'
import { verifyAuditLog } from '../../src/audit/verify.js'
import { createMemoryRevocationLog } from '../../src/revocation/log-memory.js'
import { createSqlRevocationLog } from '../../src/revocation/log-sql.js'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { RevocationFeed, RevocationLog, RevocationMirror } from '../../src/revocation/port.js'
import { createRedisRevocationFeed } from '../../src/revocation/redis.js'
import { openDatabase, type Database } from '../../src/storage/database.js'
import { auditLog } from '../../src/storage/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { createTestDatabase, describePostgres } from '../support/pg-database.js'
import { deletePrefix, REDIS_CLIENT_OPTIONS, REDIS_URL, redisAvailable } from '../support/redis.js'

/** One adapter of a port, and the `describe` its suite runs under (skipping when its server is away, off CI). */
export interface AdapterCase<Store> {
  readonly name: string
  readonly describe: typeof describe
  /** Creates the case's backing store; the suite calls it once, in `beforeAll`, and closes it in `afterAll`. */
  open(): Promise<Store>
}

interface Closable {
  /** Closes what the store opened and removes its database, directory or keys. */
  close(): Promise<void>
}

// ------------------------------------------------------------------ SQL databases

/** A migrated database of the case's own, on PGlite (a temporary directory) or PostgreSQL (a database created for it). */
async function openSql(engine: 'pglite' | 'postgres', label: string): Promise<{ database: Database; remove(): Promise<void> }> {
  if (engine === 'pglite') {
    const dir = await mkdtemp(join(tmpdir(), `mandate-contract-${label}-`))
    try {
      const database = await openDatabase(undefined, { dataDir: dir })
      await database.migrate()
      // PGlite is one connection: a session setting holds for every later query. -03:30 / -02:30.
      await database.db.execute(sql`set time zone 'America/St_Johns'`)
      return {
        database,
        remove: async () => {
          await database.close()
          await rm(dir, { recursive: true, force: true })
        },
      }
    } catch (error) {
      await rm(dir, { recursive: true, force: true })
      throw error
    }
  }
  const test = await createTestDatabase()
  try {
    // A session time zone far from UTC and a DateStyle that is not ISO as the database's defaults:
    // epoch seconds must come back as written whatever the server prints (the connection asks for ISO).
    await test.admin(`alter database "${test.name}" set timezone to 'Asia/Kathmandu'`)
    await test.admin(`alter database "${test.name}" set datestyle to 'SQL, DMY'`)
    const database = await openDatabase(test.url, { dataDir: '/nonexistent' })
    await database.migrate()
    return {
      database,
      remove: async () => {
        await database.close()
        await test.drop()
      },
    }
  } catch (error) {
    await test.drop()
    throw error
  }
}

const SQL_ENGINES = [
  { engine: 'pglite', describe },
  { engine: 'postgres', describe: describePostgres },
] as const

// ------------------------------------------------------------------ Redis

/** One connection per case, configured as compose.ts configures the broker's; the case's keys live under its prefix. */
async function openRedis(): Promise<{ redis: Redis; prefix: string; remove(): Promise<void> }> {
  const redis = new Redis(REDIS_URL, REDIS_CLIENT_OPTIONS)
  redis.on('error', () => {})
  if (redis.status !== 'ready') {
    await new Promise<void>((resolve, reject) => {
      redis.once('ready', () => resolve())
      redis.once('end', () => reject(new Error(`Redis at ${REDIS_URL} closed before it was ready`)))
    })
  }
  const prefix = `mandate-contract:${randomUUID()}:`
  return {
    redis,
    prefix,
    remove: async () => {
      try {
        await deletePrefix(redis, prefix)
      } finally {
        redis.disconnect()
      }
    },
  }
}

/** `describe` for the Redis cases of `suite`: skipped off CI when Redis is away (a failure under CI=true). */
async function redisDescribe(suite: string): Promise<typeof describe> {
  return (await redisAvailable(suite)) ? describe : (describe.skip as typeof describe)
}

// ------------------------------------------------------------------ AuditLog

/** A record as its store holds it, in the writer's chain. */
export interface StoredAuditRecord {
  readonly seq: number
  readonly type: AuditEventType
  readonly at: number
  readonly jti: string | null
  /** Present where the store keeps a hash chain: the canonical record and its links. */
  readonly chain?: { readonly record: string; readonly prevHash: string; readonly hash: string }
}

export interface AuditLogWriter {
  readonly log: AuditLog
  /** What the store holds of this writer's chain, oldest first. */
  stored(): Promise<readonly StoredAuditRecord[]>
}

export interface AuditLogStore extends Closable {
  /** A new writer on the store, as a new broker process would start one. */
  writer(): AuditLogWriter
  /** Where the store keeps hash chains: recomputes all of them (`mandate audit verify`). */
  readonly verify?: () => Promise<{ ok: boolean; records: number; chains: number }>
  /** Empties the store between tests. */
  reset(): Promise<void>
}

function sqlAuditStore(database: Database, remove: () => Promise<void>): AuditLogStore {
  const db = database.db
  const logger = createLogger('silent')
  const writers: SqlAuditLog[] = []
  return {
    writer() {
      const log = createSqlAuditLog({
        database,
        instance: 'contract',
        clock: () => Date.now(),
        groupMaxRecords: 64,
        groupMaxWaitMs: 0,
        writeTimeoutMs: 10_000,
        logger,
      })
      writers.push(log)
      return {
        log,
        stored: async () =>
          (await db.select().from(auditLog).where(eq(auditLog.chainId, log.chainId())).orderBy(asc(auditLog.seq))).map((row) => ({
            seq: row.seq,
            type: row.event,
            at: row.at,
            jti: row.jti,
            chain: { record: row.record, prevHash: row.prevHash, hash: row.hash },
          })),
      }
    },
    verify: async () => {
      const report = await verifyAuditLog(db)
      return { ok: report.ok, records: report.records, chains: report.chains }
    },
    async reset() {
      await Promise.all(writers.splice(0).map((w) => w.close().catch(() => {})))
      // The table is append-only (a trigger refuses DELETE): the owner switches it off for one transaction.
      await db.transaction(async (tx) => {
        await tx.execute(sql`alter table audit_log disable trigger user`)
        await tx.execute(sql`delete from audit_log`)
        await tx.execute(sql`alter table audit_log enable trigger user`)
      })
    },
    async close() {
      await Promise.all(writers.splice(0).map((w) => w.close().catch(() => {})))
      await remove()
    },
  }
}

export interface AuditLogAdapterCase extends AdapterCase<AuditLogStore> {
  /** The store links each record to its predecessor by hash (src/audit/record.ts), and can verify the links. */
  readonly hashChain: boolean
}

export function auditLogAdapters(): AuditLogAdapterCase[] {
  return [
    {
      name: 'memory',
      describe,
      hashChain: false,
      open: async () => ({
        writer() {
          const log = createMemoryAuditLog()
          return {
            log,
            stored: async () => log.events().map((e, i) => ({ seq: i + 1, type: e.type, at: e.at, jti: 'jti' in e ? e.jti : null })),
          }
        },
        reset: async () => {},
        close: async () => {},
      }),
    },
    ...SQL_ENGINES.map(({ engine, describe }) => ({
      name: engine,
      describe,
      hashChain: true,
      open: async () => {
        const { database, remove } = await openSql(engine, 'audit')
        return sqlAuditStore(database, remove)
      },
    })),
  ]
}

// ------------------------------------------------------------------ AdmissionStore

export interface AdmissionBacking extends Closable {
  /**
   * A store on empty backing state whose memory begins at `clock()` now: a new
   * process for memory, a new key prefix (under the case's) for Redis.
   */
  fresh(clock: () => number): Promise<AdmissionStore>
}

export async function admissionStoreAdapters(): Promise<AdapterCase<AdmissionBacking>[]> {
  return [
    { name: 'memory', describe, open: async () => ({ fresh: async (clock) => createMemoryAdmissionStore(clock), close: async () => {} }) },
    {
      name: 'redis',
      describe: await redisDescribe('admission store contract'),
      open: async () => {
        const { redis, prefix, remove } = await openRedis()
        return { fresh: (clock) => createRedisAdmissionStore(redis, `${prefix}${randomUUID()}:`, clock), close: remove }
      },
    },
  ]
}

// ------------------------------------------------------------------ RevocationLog

export interface RevocationLogBacking extends Closable {
  /** A log over an empty store. */
  fresh(): Promise<RevocationLog>
}

export function revocationLogAdapters(): AdapterCase<RevocationLogBacking>[] {
  return [
    { name: 'memory', describe, open: async () => ({ fresh: async () => createMemoryRevocationLog(), close: async () => {} }) },
    ...SQL_ENGINES.map(({ engine, describe }) => ({
      name: engine,
      describe,
      open: async (): Promise<RevocationLogBacking> => {
        const { database, remove } = await openSql(engine, 'revocations')
        return {
          fresh: async () => {
            await database.db.execute(sql`delete from revocations`)
            return createSqlRevocationLog(database.db)
          },
          close: remove,
        }
      },
    })),
  ]
}

// ------------------------------------------------------------------ RevocationFeed

export interface FeedInstance {
  readonly feed: RevocationFeed
  /** The instance's in-memory index, which the feed keeps in step. */
  readonly mirror: RevocationMirror
}

export interface FeedOptions {
  /** The instance's durable log (a broker reseeds and reconciles from it). */
  readonly log: RevocationLog
  /** Epoch milliseconds; default the system clock. */
  readonly now?: () => number
  /** A follower that never writes (resource-server verifiers). */
  readonly readOnly?: boolean
}

export interface FeedBacking extends Closable {
  /** Bound after which an instance that has not heard from the shared store is not fresh. */
  readonly staleAfterMs: number
  /** A shared store of its own (a key prefix under the case's) for one test. */
  shared(): { start(options: FeedOptions): Promise<FeedInstance> }
  /** Closes every instance started so far (between tests). */
  stopAll(): Promise<void>
}

export async function revocationFeedAdapters(): Promise<AdapterCase<FeedBacking>[]> {
  return [
    {
      name: 'redis',
      describe: await redisDescribe('revocation feed contract'),
      open: async () => {
        const { redis, prefix, remove } = await openRedis()
        const started: RevocationFeed[] = []
        const staleAfterMs = 1_000
        const stopAll = async () => {
          await Promise.all(started.splice(0).map((f) => f.close()))
        }
        return {
          staleAfterMs,
          shared() {
            const shared = `${prefix}${randomUUID()}:`
            return {
              async start({ log, now = () => Date.now(), readOnly = false }) {
                const mirror = createRevocationMirror(() => Math.floor(now() / 1000))
                const common = { redis, prefix: shared, mirror, now, staleAfterMs, blockMs: 250 }
                const feed = readOnly
                  ? await createRedisRevocationFeed({ ...common, readOnly: true })
                  : await createRedisRevocationFeed({ ...common, log, logger: pino({ enabled: false }) })
                started.push(feed)
                return { feed, mirror }
              },
            }
          },
          stopAll,
          close: async () => {
            await stopAll()
            await remove()
          },
        }
      },
    },
  ]
}

/** The durable log the feed instances share in the feed suite: the reference (memory) adapter. */
export const feedDurableLog = (): RevocationLog => createMemoryRevocationLog()
