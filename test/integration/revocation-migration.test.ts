/**
 * Migration 0002 (users are issuer and subject) over data the previous
 * schema holds, on PGlite and on PostgreSQL: user kills stored without an
 * issuer keep holding that `sub` at every issuer (a migration never un-kills
 * anyone), and the delegation log's new `sub_iss` column is filled from each
 * record's hashed JSON, so that `audit verify` still finds nothing and the
 * log stays append-only.
 */
import { mkdtemp, readFile, rm, writeFile, copyFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import type { PgliteDatabase } from 'drizzle-orm/pglite'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import type { PostgresJsDatabase } from 'drizzle-orm/postgres-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AuditEvent } from '../../src/audit/port.js'
import { encodeRecord, GENESIS_HASH } from '../../src/audit/record.js'
import { verifyAuditLog } from '../../src/audit/verify.js'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import { createSqlRevocationLog } from '../../src/revocation/log-sql.js'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { TokenFacts } from '../../src/revocation/port.js'
import { MIGRATIONS_DIR, openDatabase, type Database } from '../../src/storage/database.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const T0 = 1_800_000_000
const IDP_A = 'https://idp-a.example'
const IDP_B = 'https://idp-b.example'
const A = (s: string) => s as AgentId
const S = (s: string) => s as Subject
const J = (s: string) => s as Jti

/** `migrations/` as it was before 0002: its first two files and a journal naming only them. */
async function previousMigrations(dir: string): Promise<string> {
  const folder = join(dir, 'migrations-before-0002')
  await mkdir(join(folder, 'meta'), { recursive: true })
  const journal = JSON.parse(await readFile(join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: { tag: string }[] }
  journal.entries = journal.entries.filter((e) => e.tag === '0000_revocations' || e.tag === '0001_audit_log')
  expect(journal.entries).toHaveLength(2)
  await writeFile(join(folder, 'meta', '_journal.json'), JSON.stringify(journal))
  for (const e of journal.entries) await copyFile(join(MIGRATIONS_DIR, `${e.tag}.sql`), join(folder, `${e.tag}.sql`))
  return folder
}

async function migrateTo(database: Database, folder: string): Promise<void> {
  if (database.engine === 'pglite') await migratePglite(database.db as unknown as PgliteDatabase, { migrationsFolder: folder })
  else await migratePostgres(database.db as unknown as PostgresJsDatabase, { migrationsFolder: folder })
}

/** SQLSTATE of a failed query, looked up through drizzle's wrapper. */
function sqlState(error: unknown): string | undefined {
  for (let e = error; typeof e === 'object' && e !== null; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string') return code
  }
  return undefined
}

const KILL_ALICE = randomUUID()
const KILL_BOT_FOR_ALICE = randomUUID()

/** Events as the previous version wrote them: no issuer on a denial or a user kill. */
const OLD_EVENTS: AuditEvent[] = [
  {
    type: 'token.issued',
    at: T0,
    agent: A('bot'),
    sub: S('alice'),
    subIssuer: IDP_A,
    actors: [A('bot')],
    jti: J('tok-1'),
    parentJti: undefined,
    rootJti: J('tok-1'),
    audience: 'https://api.example',
    scopes: ['read'],
    expiresAt: T0 + 300,
    policyHash: 'ab'.repeat(32),
  },
  { type: 'token.denied', at: T0 + 1, agent: A('bot'), sub: S('alice'), error: 'invalid_scope', reason: 'scope exceeds policy' },
  {
    type: 'revocation.created',
    at: T0 + 2,
    by: 'ops',
    revocation: {
      id: KILL_ALICE,
      target: { kind: 'sub', sub: S('alice'), iss: null },
      reason: 'r',
      createdBy: 'ops',
      createdAt: T0 + 2,
      expiresAt: undefined,
      liftedAt: undefined,
      liftedBy: undefined,
    },
  },
]

/** Writes the previous schema's rows: the columns it had, nothing else. */
async function writeOldData(database: Database): Promise<void> {
  const db = database.db
  await db.execute(sql`insert into revocations (id, kind, agent, sub, jti, reason, created_by, created_at)
    values (${KILL_ALICE}, 'sub', null, 'alice', null, 'r', 'ops', to_timestamp(${T0 + 2})),
           (${KILL_BOT_FOR_ALICE}, 'agent_sub', 'bot', 'alice', null, 'r', 'ops', to_timestamp(${T0 + 3}))`)
  const chainId = randomUUID()
  let prevHash = GENESIS_HASH
  let seq = 0
  for (const event of OLD_EVENTS) {
    const r = encodeRecord(event, { chainId, seq: ++seq, instance: 'broker-old', prevHash })
    prevHash = r.hash
    await db.execute(sql`insert into audit_log (chain_id, seq, at, event, instance, agent, actors, sub, jti, parent_jti, root_jti, record, prev_hash, hash)
      values (${r.chainId}, ${r.seq}, to_timestamp(${r.at}), ${r.event}, ${r.instance}, ${r.agent}, ${`{${r.actors.join(',')}}`}::text[],
              ${r.sub}, ${r.jti}, ${r.parentJti}, ${r.rootJti}, ${r.record}, ${r.prevHash}, ${r.hash})`)
  }
}

interface Harness {
  readonly database: Database
  readonly dir: string
  close(): Promise<void>
}

function describeMigration(name: string, open: (dir: string) => Promise<Harness>, options: { describe?: typeof describe } = {}): void {
  ;(options.describe ?? describe)(`migration 0002 (user issuer): ${name}`, () => {
    let h: Harness | undefined
    beforeAll(async () => {
      const dir = await mkdtemp(join(tmpdir(), 'mandate-migration-'))
      h = await open(dir)
      await migrateTo(h.database, await previousMigrations(dir))
      await writeOldData(h.database)
      await h.database.migrate()
    })
    afterAll(async () => {
      await h?.close()
    })

    it('un-kills no one: user kills stored without an issuer hold that sub at every issuer', async () => {
      const log = createSqlRevocationLog(h!.database.db)
      const records = await log.listRelevant(T0 + 10)
      expect(records.map((r) => r.target)).toStrictEqual([
        { kind: 'sub', sub: 'alice', iss: null },
        { kind: 'agent_sub', agent: 'bot', sub: 'alice', iss: null },
      ])
      const mirror = createRevocationMirror(() => T0 + 10)
      mirror.replaceAll(records)
      const token = (iss: string): TokenFacts => ({ jti: J(randomUUID()), sub: S('alice'), subIssuer: iss, actors: [A('other-bot')], chain: [], iat: T0 + 5 })
      for (const iss of [IDP_A, IDP_B]) {
        expect(mirror.checkToken(token(iss)).state).toBe('revoked')
        expect(mirror.check({ agent: A('bot'), sub: S('alice'), subIssuer: iss, actors: [], ancestors: [], subjectIssuedAt: T0 + 5 })).toMatchObject({
          state: 'revoked',
          what: 'agent',
        })
      }
      // And the migrated table takes kills naming an issuer.
      const kill = {
        id: randomUUID(),
        target: { kind: 'sub', sub: S('bob'), iss: IDP_B },
        reason: 'r',
        createdBy: 'ops',
        createdAt: T0 + 20,
        expiresAt: undefined,
        liftedAt: undefined,
        liftedBy: undefined,
      } as const
      await log.insert(kill)
      expect(await log.get(kill.id)).toStrictEqual(kill)
    })

    it("fills the delegation log's sub_iss from each record's JSON; verify finds nothing; the log stays append-only", async () => {
      const db = h!.database.db
      const raw: unknown = await db.execute(sql`select event, sub_iss from audit_log order by seq`)
      const rows = raw as { rows: { event: string; sub_iss: string | null }[] } | { event: string; sub_iss: string | null }[]
      const list = Array.isArray(rows) ? rows : rows.rows
      expect(list.map((r) => [r.event, r.sub_iss])).toEqual([
        ['token.issued', IDP_A],
        ['token.denied', null],
        ['revocation.created', null],
      ])
      const report = await verifyAuditLog(db)
      expect(report.findings).toEqual([])
      expect(report).toMatchObject({ ok: true, records: 3 })
      expect(
        sqlState(
          await db.execute(sql`update audit_log set sub_iss = 'x'`).then(
            () => undefined,
            (e: unknown) => e,
          ),
        ),
      ).toBe('42501')
      expect(
        sqlState(
          await db.execute(sql`delete from audit_log`).then(
            () => undefined,
            (e: unknown) => e,
          ),
        ),
      ).toBe('42501')
    })
  })
}

describeMigration('pglite', async (dir) => {
  const database = await openDatabase(undefined, { dataDir: dir })
  return {
    database,
    dir,
    close: async () => {
      await database.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
})

describeMigration(
  'postgres',
  async (dir) => {
    const test: TestDatabase = await createTestDatabase()
    const database = await openDatabase(test.url, { dataDir: '/nonexistent' }).catch(async (err: unknown) => {
      await test.drop()
      throw err
    })
    return {
      database,
      dir,
      close: async () => {
        await database.close()
        await test.drop()
        await rm(dir, { recursive: true, force: true })
      },
    }
  },
  { describe: describePostgres },
)
