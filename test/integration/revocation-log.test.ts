/**
 * The `revocations` table beyond the `RevocationLog` port (whose contract
 * suite, test/contract/revocation-log.test.ts, runs on every adapter): its
 * CHECKs refuse a row whose columns do not match its kind, for anything
 * written around the adapter. On PGlite (temp directory) and on PostgreSQL
 * (a database of its own).
 */
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql, type SQL } from 'drizzle-orm'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createSqlRevocationLog } from '../../src/revocation/log-sql.js'
import { openDatabase, type Database } from '../../src/storage/database.js'
import { createTestDatabase, describePostgres } from '../support/pg-database.js'

const IDP = 'https://idp.example'

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

function describeRevocationsTable(name: string, open: () => Promise<{ database: Database; close(): Promise<void> }>, suite: typeof describe = describe): void {
  suite(`revocations table: ${name}`, () => {
    let database: Database
    let close: (() => Promise<void>) | undefined

    beforeAll(async () => {
      ;({ database, close } = await open())
    })
    afterAll(async () => {
      await close?.()
    })
    beforeEach(async () => {
      await database.db.execute(sql`delete from revocations`)
    })

    it('the database refuses a row whose columns do not match its kind (CHECK)', async () => {
      const execute = (query: SQL) => database.db.execute(query)
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
      expect(await createSqlRevocationLog(database.db).list({ limit: 10 })).toHaveLength(3)
    })
  })
}

describeRevocationsTable('pglite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mandate-revocation-log-'))
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

describeRevocationsTable(
  'postgres',
  async () => {
    const test = await createTestDatabase()
    try {
      const database = await openDatabase(test.url, { dataDir: '/nonexistent' })
      await database.migrate()
      return {
        database,
        close: async () => {
          await database.close()
          await test.drop()
        },
      }
    } catch (error) {
      await test.drop()
      throw error
    }
  },
  describePostgres,
)
