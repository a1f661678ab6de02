/**
 * `openDatabase` on both engines: migrations (idempotent, serialized across
 * instances), PGlite persistence across a reopen, ping, and connection
 * failures that are fast and never quote the URL.
 */
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { AgentId } from '../../src/core/claims.js'
import { createSqlRevocationLog } from '../../src/revocation/log-sql.js'
import type { Revocation } from '../../src/revocation/port.js'
import { DatabaseError, MIGRATIONS_DIR, openDatabase, type Database } from '../../src/storage/database.js'
import { ADMIN_URL, createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const T0 = 1_800_000_000

const kill = (): Revocation => ({
  id: randomUUID(),
  target: { kind: 'agent', agent: 'billing-bot' as AgentId },
  reason: 'incident 7',
  createdBy: 'responder',
  createdAt: T0,
  expiresAt: undefined,
  liftedAt: undefined,
  liftedBy: undefined,
})

async function journalEntries(): Promise<number> {
  const journal = JSON.parse(await readFile(join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] }
  return journal.entries.length
}

/** Rows of a raw query on either driver (postgres.js answers an array, PGlite `{ rows }`). */
async function rows(database: Database, query: ReturnType<typeof sql>): Promise<Record<string, unknown>[]> {
  const result: unknown = await database.db.execute(query)
  return (Array.isArray(result) ? result : (result as { rows: Record<string, unknown>[] }).rows) as Record<string, unknown>[]
}

const appliedMigrations = async (database: Database) =>
  Number((await rows(database, sql`select count(*)::int as n from drizzle.__drizzle_migrations`))[0]!['n'])

const open: Database[] = []
afterEach(async () => {
  for (const d of open.splice(0)) await d.close()
})
const track = (d: Database) => (open.push(d), d)

describe('migrations folder', () => {
  it('resolves to <repo>/migrations, with the journal drizzle needs', async () => {
    expect(MIGRATIONS_DIR).toBe(join(REPO, 'migrations'))
    expect(await journalEntries()).toBeGreaterThan(0)
  })
})

describe('openDatabase: PGlite', () => {
  let dataDir: string
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mandate-database-'))
  })
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true })
  })

  it('creates <dataDir>/pglite, migrates idempotently, pings', async () => {
    const dir = join(dataDir, 'nested', 'data') // not there yet
    const database = track(await openDatabase(undefined, { dataDir: dir }))
    expect(database.engine).toBe('pglite')
    expect(existsSync(join(dir, 'pglite', 'PG_VERSION'))).toBe(true)
    await database.migrate()
    await database.migrate()
    await Promise.all([database.migrate(), database.migrate()])
    expect(await appliedMigrations(database)).toBe(await journalEntries())
    await expect(database.ping()).resolves.toBeUndefined()
  })

  it('keeps its data across close and reopen of the same directory', async () => {
    const dir = join(dataDir, 'persist')
    const record = kill()
    const first = await openDatabase(undefined, { dataDir: dir })
    await first.migrate()
    await createSqlRevocationLog(first.db).insert(record)
    await first.close()
    await first.close() // idempotent

    const second = track(await openDatabase(undefined, { dataDir: dir }))
    await second.migrate() // already applied: nothing to do
    expect(await appliedMigrations(second)).toBe(await journalEntries())
    expect(await createSqlRevocationLog(second.db).get(record.id)).toStrictEqual(record)
  })

  it('ping rejects with DatabaseError once closed', async () => {
    const database = await openDatabase(undefined, { dataDir: join(dataDir, 'closed') })
    await database.close()
    await expect(database.ping()).rejects.toBeInstanceOf(DatabaseError)
  })
})

describePostgres('openDatabase: PostgreSQL', () => {
  let test: TestDatabase
  beforeAll(async () => {
    test = await createTestDatabase()
  })
  afterAll(async () => {
    await test?.drop()
  })

  it('instances migrating at once are serialized; migrating again is a no-op; ping works', async () => {
    const a = track(await openDatabase(test.url, { dataDir: '/nonexistent' }))
    const b = track(await openDatabase(test.url, { dataDir: '/nonexistent' }))
    expect(a.engine).toBe('postgres')
    // A fresh database: without the advisory lock both would apply 0000 and one would fail.
    await Promise.all([a.migrate(), b.migrate(), a.migrate()])
    await a.migrate()
    expect(await appliedMigrations(a)).toBe(await journalEntries())
    await expect(a.ping()).resolves.toBeUndefined()

    const record = kill()
    await createSqlRevocationLog(a.db).insert(record)
    expect(await createSqlRevocationLog(b.db).get(record.id)).toStrictEqual(record)
  })

  it('ping rejects with DatabaseError once closed', async () => {
    const database = await openDatabase(test.url, { dataDir: '/nonexistent' })
    await database.close()
    await database.close() // idempotent
    const error = await database.ping().then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(DatabaseError)
    expect((error as DatabaseError).message).toMatch(/^cannot connect to PostgreSQL \(/)
  })

  it('a connection reset as soon as it is ready (its first query) fails queries, never the process', async () => {
    const tap = await startResetTap(test.url)
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const database = track(await openDatabase(tap.url, { dataDir: '/nonexistent' }))
      await database.migrate()
      tap.arm()
      // As many concurrent queries as the pool's max (10) make it open connections (it pipelines only
      // once at its max), each reset once it is ready: migrating left two or so open.
      await Promise.allSettled(Array.from({ length: 10 }, () => rows(database, sql`select pg_sleep(0.05)`)))
      tap.disarm()
      await new Promise((r) => setTimeout(r, 200))
      expect(tap.resets).toBeGreaterThan(0)
      // A driver that drops the promise of a query it sends on its own (postgres.js 3 did, fetching
      // types on each new connection) turns the reset into an unhandled rejection, which ends Node.
      expect(unhandled.map(String)).toEqual([])
      await expect(database.ping()).resolves.toBeUndefined()
      const record = kill()
      await createSqlRevocationLog(database.db).insert(record)
      expect(await createSqlRevocationLog(database.db).get(record.id)).toStrictEqual(record)
    } finally {
      process.off('unhandledRejection', onUnhandled)
      await tap.close()
    }
  })

  it('a database that does not exist: rejected with its SQLSTATE, no URL, no password', async () => {
    const url = new URL(ADMIN_URL)
    url.password = 'pw-must-not-leak-3d000'
    url.pathname = `/mandate_missing_${randomUUID().slice(0, 8)}`
    const error = await openDatabase(url.toString(), { dataDir: '/nonexistent' }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(DatabaseError)
    expect((error as DatabaseError).code).toBe('3D000')
    expectNoSecret(error, url.toString(), 'pw-must-not-leak-3d000')
  })
})

/**
 * A TCP hop in front of PostgreSQL that, once armed, resets every connection
 * opened from then on as soon as the server has said it is ready (the first
 * ReadyForQuery, `Z` length 5) and the client sends its next message.
 */
async function startResetTap(targetUrl: string): Promise<{ url: string; resets: number; arm(): void; disarm(): void; close(): Promise<void> }> {
  const target = new URL(targetUrl)
  const sockets = new Set<Socket>()
  let armed = false
  let resets = 0
  const READY = Buffer.from([0x5a, 0, 0, 0, 5])
  const server = createServer((down) => {
    const doomed = armed
    let ready = false
    const up = connect(Number(target.port || 5432), target.hostname)
    sockets.add(down).add(up)
    const drop = () => {
      down.destroy()
      up.destroy()
      sockets.delete(down)
      sockets.delete(up)
    }
    down.on('error', drop).on('close', drop)
    up.on('error', drop).on('close', drop)
    up.on('data', (chunk: Buffer) => {
      if (chunk.includes(READY)) ready = true
      down.write(chunk)
    })
    down.on('data', (chunk: Buffer) => {
      if (doomed && ready) {
        resets++
        down.resetAndDestroy()
        up.destroy()
        return
      }
      up.write(chunk)
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const url = new URL(targetUrl)
  url.hostname = '127.0.0.1'
  url.port = String((server.address() as AddressInfo).port)
  return {
    url: url.toString(),
    get resets() {
      return resets
    },
    arm: () => void (armed = true),
    disarm: () => void (armed = false),
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

describe('openDatabase: failures', () => {
  it('a closed port rejects within 10 s, saying "cannot connect to PostgreSQL (<code>)" without the URL', async () => {
    const url = 'postgres://postgres:pw-must-not-leak-1@127.0.0.1:1/x'
    const started = Date.now()
    const error = await openDatabase(url, { dataDir: '/nonexistent' }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(error).toBeInstanceOf(DatabaseError)
    expect((error as DatabaseError).message).toBe('cannot connect to PostgreSQL (ECONNREFUSED)')
    expect((error as DatabaseError).code).toBe('ECONNREFUSED')
    expectNoSecret(error, url, 'pw-must-not-leak-1')
  }, 15_000)

  it('a server that accepts the connection but never answers: rejected within 10 s (CONNECT_TIMEOUT)', async () => {
    const sockets = new Set<Socket>()
    const silent = createServer((socket) => void sockets.add(socket)) // reads nothing, writes nothing
    await new Promise<void>((done) => silent.listen(0, '127.0.0.1', done))
    const url = `postgres://postgres:pw-must-not-leak-5@127.0.0.1:${(silent.address() as AddressInfo).port}/x`
    try {
      const started = Date.now()
      const error = await openDatabase(url, { dataDir: '/nonexistent' }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(Date.now() - started).toBeLessThan(10_000)
      expect(error).toBeInstanceOf(DatabaseError)
      expect((error as DatabaseError).message).toBe('cannot connect to PostgreSQL (CONNECT_TIMEOUT)')
      expect(sockets.size).toBeGreaterThan(0)
      expectNoSecret(error, url, 'pw-must-not-leak-5')
    } finally {
      for (const socket of sockets) socket.destroy()
      await new Promise((done) => silent.close(done))
    }
  }, 15_000)

  it('a URL of another scheme is a TypeError that does not quote it', async () => {
    for (const url of ['mysql://root:pw-must-not-leak-2@db/x', 'pw-must-not-leak-2', '']) {
      const error = await openDatabase(url, { dataDir: '/nonexistent' }).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(TypeError)
      expectNoSecret(error, url, 'pw-must-not-leak-2')
    }
  })

  it('a malformed postgres URL is rejected without quoting it', async () => {
    const url = 'postgres://postgres:pw-must-not-leak-4@[not-a-host/x'
    const error = await openDatabase(url, { dataDir: '/nonexistent' }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(Error)
    expectNoSecret(error, url, 'pw-must-not-leak-4')
  }, 15_000)
})

function expectNoSecret(error: unknown, url: string, password: string): void {
  const e = error as Error
  for (const text of [e.message, String(e.stack), JSON.stringify(e), String((e as { cause?: unknown }).cause)]) {
    if (url !== '') expect(text).not.toContain(url)
    expect(text).not.toContain(password)
  }
}
