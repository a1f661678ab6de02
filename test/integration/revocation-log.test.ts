/**
 * One contract for the `RevocationLog` port, run on every adapter: memory,
 * the SQL adapter on PGlite (temp directory) and on PostgreSQL (a database of
 * its own). The SQL engines also run their sessions in non-UTC time zones
 * (and PostgreSQL with a non-ISO DateStyle as its database default), so
 * epoch seconds must survive whatever the server prints.
 */
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql, type SQL } from 'drizzle-orm'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import { createMemoryRevocationLog } from '../../src/revocation/log-memory.js'
import { createSqlRevocationLog } from '../../src/revocation/log-sql.js'
import type { Revocation, RevocationLog, RevocationTarget } from '../../src/revocation/port.js'
import { openDatabase, type Database } from '../../src/storage/database.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const T0 = 1_800_000_000 // 2027-01-15T08:00:00Z, epoch seconds
const MAX_TIME = 253_402_300_799 // 9999-12-31T23:59:59Z

interface LogHarness {
  /** A log over an empty store. */
  fresh(): Promise<RevocationLog>
  /** Raw SQL on the same database; absent for memory. */
  readonly execute?: (query: SQL) => Promise<unknown>
  close(): Promise<void>
}

const jti = (v: string) => ({ kind: 'jti', jti: v as Jti }) as const
const chain = (v: string) => ({ kind: 'chain', jti: v as Jti }) as const
const agent = (v: string) => ({ kind: 'agent', agent: v as AgentId }) as const
const IDP = 'https://idp.example'
/** A user is (issuer, sub); `null` is any issuer (kills recorded before kills named one). */
const sub = (v: string, iss: string | null = IDP) => ({ kind: 'sub', sub: v as Subject, iss }) as const
const agentSub = (a: string, s: string, iss: string | null = IDP) => ({ kind: 'agent_sub', agent: a as AgentId, sub: s as Subject, iss }) as const

function revocation(target: RevocationTarget, over: Partial<Revocation> = {}): Revocation {
  const token = target.kind === 'jti' || target.kind === 'chain'
  return {
    id: randomUUID(),
    target,
    reason: 'incident 42',
    createdBy: 'responder',
    createdAt: T0,
    expiresAt: token ? T0 + 3600 : undefined,
    liftedAt: undefined,
    liftedBy: undefined,
    ...over,
  }
}

/** Newest first, as `list` answers. */
const newestFirst = (a: Revocation, b: Revocation) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)

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

function describeRevocationLog(name: string, open: () => Promise<LogHarness>, options: { sql: boolean; describe?: typeof describe }): void {
  ;(options.describe ?? describe)(`RevocationLog contract: ${name}`, () => {
    let harness: LogHarness | undefined
    let log: RevocationLog

    beforeAll(async () => {
      harness = await open()
    })
    afterAll(async () => {
      await harness?.close()
    })
    beforeEach(async () => {
      log = await harness!.fresh()
    })

    it('round-trips every target kind exactly, with undefined (not null) for absent fields', async () => {
      const records = [
        revocation(jti('tok-1'), { createdAt: T0 + 1, expiresAt: T0 + 901 }),
        revocation(chain('tok-2'), { createdAt: 0, expiresAt: MAX_TIME }),
        revocation(agent('billing-bot'), { createdAt: T0 + 3 }),
        revocation(sub('user@example.com'), { createdAt: MAX_TIME }),
        revocation(agentSub('billing-bot', 'user@example.com'), { reason: 'ünïcode ✓ \'quoted\' "x"', createdBy: 'ops:key-7' }),
        // The same user name at two issuers, and at any issuer: three users, three records.
        revocation(sub('user@example.com', 'https://other-idp.example/tenants/7')),
        revocation(sub('user@example.com', null)),
        revocation(agentSub('billing-bot', 'user@example.com', null)),
        // Stored already lifted, and a kill with an expiry: both come back as written.
        revocation(agent('old-bot'), { createdAt: T0 - 86_400, expiresAt: T0, liftedAt: T0 - 3600, liftedBy: 'admin' }),
      ]
      for (const r of records) await log.insert(r)
      for (const r of records) {
        expect(await log.get(r.id)).toStrictEqual(r)
      }
      const got = await log.get(records[2]!.id)
      expect(Object.keys(got!.target)).toEqual(['kind', 'agent'])
      expect((await log.get(records[3]!.id))!.target).toStrictEqual({ kind: 'sub', sub: 'user@example.com', iss: IDP })
      expect((await log.get(records[6]!.id))!.target).toStrictEqual({ kind: 'sub', sub: 'user@example.com', iss: null })
      expect(got!.expiresAt).toBeUndefined()
      expect(got!.liftedAt).toBeUndefined()
      expect(got!.liftedBy).toBeUndefined()
    })

    it('finds a record by its id in upper case, and returns the id lower-cased', async () => {
      const r = revocation(agent('a1'))
      await log.insert(r)
      expect(await log.get(r.id.toUpperCase())).toStrictEqual(r)
    })

    it('get with an id that is not a UUID resolves undefined', async () => {
      await log.insert(revocation(agent('a1')))
      for (const id of ['', 'not-a-uuid', '123', `${randomUUID()}x`, "' or 1=1 --", '{00000000-0000-0000-0000-000000000000}']) {
        expect(await log.get(id)).toBeUndefined()
      }
      expect(await log.get(randomUUID())).toBeUndefined()
    })

    it('refuses a second record with the same id, keeping the first', async () => {
      const r = revocation(agent('a1'))
      await log.insert(r)
      await expect(log.insert({ ...r, reason: 'other' })).rejects.toThrow(/already exists/)
      expect(await log.get(r.id)).toStrictEqual(r)
    })

    it('refuses records that cannot be stored, before anything is written', async () => {
      const bad: Revocation[] = [
        revocation(agent('a1'), { id: 'not-a-uuid' }),
        revocation(agent('a1'), { createdAt: T0 + 0.5 }),
        revocation(agent('a1'), { createdAt: -1 }),
        revocation(jti('t1'), { expiresAt: MAX_TIME + 1 }),
        revocation(jti('t1'), { liftedAt: T0, liftedBy: 'admin' }),
        revocation(agent('a1'), { liftedAt: T0 }),
        revocation(agent('a1'), { liftedBy: 'admin' }),
        revocation(agent('a\u0000b')),
        revocation({ kind: 'bogus' } as unknown as RevocationTarget),
        revocation({ kind: 'agent_sub', agent: 'a1' } as unknown as RevocationTarget),
        // A user kill states its issuer, or null for any: a forgotten one must not widen the kill.
        revocation({ kind: 'sub', sub: 'u1' } as unknown as RevocationTarget),
        revocation({ kind: 'agent_sub', agent: 'a1', sub: 'u1' } as unknown as RevocationTarget),
        revocation(sub('u1', '')),
        revocation(sub('u1', 'https://idp\u0000.example')),
      ]
      for (const r of bad) {
        expect(await rejection(log.insert(r)), JSON.stringify(r)).toBeInstanceOf(TypeError)
      }
      expect(await log.list({ limit: 100 })).toEqual([])
    })

    it('lift sets liftedAt and liftedBy once and returns the record', async () => {
      const kill = revocation(agentSub('a1', 'u1'))
      await log.insert(kill)
      const lifted = await log.lift(kill.id, 'alice', T0 + 60)
      expect(lifted).toStrictEqual({ record: { ...kill, liftedAt: T0 + 60, liftedBy: 'alice' }, changed: true })
      expect(await log.get(kill.id)).toStrictEqual(lifted!.record)
    })

    it('lifting again returns the record unchanged, says nothing changed: the first lifter is kept', async () => {
      const kill = revocation(sub('u1'))
      await log.insert(kill)
      const first = await log.lift(kill.id, 'alice', T0 + 60)
      const second = await log.lift(kill.id, 'bob', T0 + 120)
      expect(first?.changed).toBe(true)
      expect(second).toStrictEqual({ record: first!.record, changed: false })
      expect(second!.record).toMatchObject({ liftedAt: T0 + 60, liftedBy: 'alice' })
      expect(await log.get(kill.id)).toStrictEqual(first!.record)
    })

    it('concurrent lifts: exactly one lifter wins and every caller sees it', async () => {
      const kill = revocation(agent('a1'))
      await log.insert(kill)
      const results = await Promise.all(['l0', 'l1', 'l2', 'l3', 'l4'].map((by, i) => log.lift(kill.id, by, T0 + 10 + i)))
      const stored = await log.get(kill.id)
      expect(stored?.liftedBy).toMatch(/^l[0-4]$/)
      for (const r of results) expect(r?.record).toStrictEqual(stored)
      expect(results.filter((r) => r?.changed === true)).toHaveLength(1)
    })

    it('lift of an unknown or malformed id resolves undefined and writes nothing', async () => {
      expect(await log.lift(randomUUID(), 'alice', T0)).toBeUndefined()
      expect(await log.lift('not-a-uuid', 'alice', T0)).toBeUndefined()
      expect(await log.list({ limit: 10 })).toEqual([])
    })

    it('lift of a jti or chain revocation is refused (a revoked token stays revoked)', async () => {
      const token = revocation(jti('t1'))
      const tree = revocation(chain('t2'))
      await log.insert(token)
      await log.insert(tree)
      expect(await rejection(log.lift(token.id, 'alice', T0 + 1))).toBeInstanceOf(TypeError)
      expect(await rejection(log.lift(tree.id, 'alice', T0 + 1))).toBeInstanceOf(TypeError)
      expect(await log.get(token.id)).toStrictEqual(token)
      expect(await log.get(tree.id)).toStrictEqual(tree)
    })

    it('listRelevant: every kill (lifted or not) and unexpired jti/chain, oldest first', async () => {
      const now = T0 + 1000
      const keep = [
        revocation(agent('a1'), { createdAt: T0 + 5 }),
        revocation(jti('fresh'), { createdAt: T0 + 1, expiresAt: now + 1 }),
        revocation(sub('u1'), { createdAt: T0 + 3, liftedAt: T0 + 4, liftedBy: 'admin' }),
        revocation(chain('fresh'), { createdAt: T0 + 2, expiresAt: MAX_TIME }),
        revocation(agentSub('a1', 'u1'), { createdAt: T0 + 4, expiresAt: T0 }), // a kill's expiresAt is not read
        revocation(jti('no-expiry'), { createdAt: T0 + 6, expiresAt: undefined }), // never lapses
        revocation(agent('same-second-1'), { createdAt: T0 + 7 }),
        revocation(agent('same-second-2'), { createdAt: T0 + 7 }),
      ]
      const drop = [
        revocation(jti('expired'), { createdAt: T0, expiresAt: now - 1 }),
        revocation(jti('expires-now'), { createdAt: T0, expiresAt: now }),
        revocation(chain('expired'), { createdAt: T0, expiresAt: T0 + 10 }),
      ]
      for (const r of [...drop, ...keep]) await log.insert(r)
      const oldestFirst = [...keep].sort((a, b) => newestFirst(b, a))
      expect(await log.listRelevant(now)).toStrictEqual(oldestFirst)
      // A fractional `now` (Date.now() / 1000) is accepted; expiry is strict (`expiresAt > now`).
      expect(await log.listRelevant(now + 0.5)).toStrictEqual(oldestFirst)
      expect(await log.listRelevant(now + 1)).toStrictEqual(oldestFirst.filter((r) => r !== keep[1]))
    })

    it('list pages newest first by (createdAt, id) with a keyset cursor: 25 records → 10/10/5', async () => {
      // Three records per second: ties are broken by id, descending.
      const records = Array.from({ length: 25 }, (_, i) =>
        revocation(i % 2 === 0 ? agent(`a${i}`) : jti(`t${i}`), { createdAt: T0 + Math.floor(i / 3) }),
      )
      // Inserted out of order: the order comes from the data, not insertion.
      for (const r of [...records].reverse()) await log.insert(r)
      const expected = [...records].sort(newestFirst)

      const page1 = await log.list({ limit: 10 })
      const page2 = await log.list({ limit: 10, before: page1.at(-1)!.id })
      const page3 = await log.list({ limit: 10, before: page2.at(-1)!.id })
      const page4 = await log.list({ limit: 10, before: page3.at(-1)!.id })
      expect([page1.length, page2.length, page3.length, page4.length]).toEqual([10, 10, 5, 0])
      expect([...page1, ...page2, ...page3]).toStrictEqual(expected)
      expect(new Set([...page1, ...page2, ...page3].map((r) => r.id)).size).toBe(25)

      // Records strictly older than the cursor, whichever record it is.
      expect(await log.list({ limit: 100, before: expected[7]!.id })).toStrictEqual(expected.slice(8))
      expect(await log.list({ limit: 100, before: expected[7]!.id.toUpperCase() })).toStrictEqual(expected.slice(8))
      expect(await log.list({ limit: 3 })).toStrictEqual(expected.slice(0, 3))
      expect(await log.list({ limit: 0 })).toEqual([])
    })

    it('list with an unknown or malformed cursor is empty; a bad limit is refused', async () => {
      await log.insert(revocation(agent('a1')))
      expect(await log.list({ limit: 10, before: randomUUID() })).toEqual([])
      expect(await log.list({ limit: 10, before: 'not-a-uuid' })).toEqual([])
      for (const limit of [-1, 1.5, Number.NaN]) {
        expect(await rejection(log.list({ limit }))).toBeInstanceOf(TypeError)
      }
    })

    // Memory has no SQL; its equivalent is the TypeError test above.
    if (!options.sql) return

    it('the database refuses a row whose columns do not match its kind (CHECK)', async () => {
      const execute = harness!.execute!
      const insert = (kind: string, a: string | null, s: string | null, j: string | null, lifted = false, iss: string | null = null) =>
        execute(sql`insert into revocations (id, kind, agent, sub, sub_iss, jti, reason, created_by, created_at, lifted_at, lifted_by)
          values (${randomUUID()}, ${kind}, ${a}, ${s}, ${iss}, ${j}, 'r', 'c', now(),
                  ${lifted ? sql`now()` : sql`null`}, ${lifted ? 'admin' : null})`)
      const refused: [string, Promise<unknown>][] = [
        ['jti with agent', insert('jti', 'a', null, 't')],
        ['jti without jti', insert('jti', null, null, null)],
        ['chain with sub', insert('chain', null, 's', 't')],
        ['agent with jti', insert('agent', 'a', null, 't')],
        ['agent without agent', insert('agent', null, null, null)],
        ['sub with agent', insert('sub', 'a', 's', null)],
        ['agent_sub without sub', insert('agent_sub', 'a', null, null)],
        ['unknown kind', insert('bogus', 'a', null, null)],
        ['lifted jti', insert('jti', null, null, 't', true)],
        ['agent with an issuer', insert('agent', 'a', null, null, false, IDP)],
        ['jti with an issuer', insert('jti', null, null, 't', false, IDP)],
        ['sub with an empty issuer', insert('sub', null, 's', null, false, '')],
      ]
      for (const [what, attempt] of refused) {
        expect(sqlState(await rejection(attempt)), what).toBe('23514')
      }
      // The same statement shape is accepted when the columns fit the kind.
      await insert('agent_sub', 'a', 's', null, true)
      await insert('chain', null, null, 't')
      await insert('sub', null, 's', null, false, IDP)
      expect(await log.list({ limit: 10 })).toHaveLength(3)
    })
  })
}

describeRevocationLog(
  'memory',
  async () => ({
    fresh: async () => createMemoryRevocationLog(),
    close: async () => {},
  }),
  { sql: false },
)

/** A migrated database as a harness: each test starts from an empty table. */
function sqlHarness(database: Database, cleanup: () => Promise<void>): LogHarness {
  return {
    fresh: async () => {
      await database.db.execute(sql`delete from revocations`)
      return createSqlRevocationLog(database.db)
    },
    execute: (query) => database.db.execute(query),
    close: async () => {
      await database.close()
      await cleanup()
    },
  }
}

describeRevocationLog('pglite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-revocation-log-'))
  const database = await openDatabase(undefined, { dataDir: dir })
  await database.migrate()
  // One connection: a session setting holds for every later query.
  await database.db.execute(sql`set time zone 'America/St_Johns'`) // -03:30 / -02:30
  return sqlHarness(database, () => rm(dir, { recursive: true, force: true }))
}, { sql: true })

describeRevocationLog(
  'postgres',
  async () => {
    let test: TestDatabase | undefined = await createTestDatabase()
    try {
      // Database defaults the adapter must see through: a +05:45 zone, and a DateStyle
      // that is not ISO (the connection asks for ISO).
      await test.admin(`alter database "${test.name}" set timezone to 'Asia/Kathmandu'`)
      await test.admin(`alter database "${test.name}" set datestyle to 'SQL, DMY'`)
      const database = await openDatabase(test.url, { dataDir: '/nonexistent' })
      await database.migrate()
      const owned = test
      test = undefined
      return sqlHarness(database, () => owned.drop())
    } finally {
      await test?.drop()
    }
  },
  { sql: true, describe: describePostgres },
)
