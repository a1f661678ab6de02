/**
 * One checkpoint directory, two databases: a broker that ran on the embedded
 * default (PGlite) and then on PostgreSQL with the same data directory writes
 * both databases' checkpoints under the same `audit.checkpoint_dir`. Each
 * database must be held against its own checkpoints only (a chain of the
 * other database is not "missing" from this one), while a chain deleted from
 * a database is still missing against that database's own checkpoints.
 *
 * The brokers are composed by the real composition root; `mandate audit
 * verify` runs as a user runs it.
 */
import { spawnSync } from 'node:child_process'
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { composeMandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { openDatabase } from '../../src/storage/database.js'
import { createLogger } from '../../src/telemetry/log.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const bin = join(root, 'bin/mandate.js')
const ISSUER = 'https://mandate.test'

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

/** Composes a dev broker on `dataDir` (PGlite, or PostgreSQL at `databaseUrl`), issues one token, and closes it (last checkpoint written). */
async function issueOnce(dir: string, databaseUrl: string | undefined): Promise<void> {
  const config = Config.parse({
    issuer: ISSUER,
    policies_dir: join(dir, 'policies'),
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    log: { level: 'silent' },
    ...(databaseUrl === undefined ? {} : { storage: { database_url: databaseUrl } }),
  })
  const m = await composeMandate(config, { dev: true, logger: createLogger('silent'), loadSignals: { eventLoopLag: () => 0 } })
  try {
    const user = await m.app.request('/dev/users/alice/token', { method: 'POST', body: '{"scope":"demo:read"}' })
    const subjectToken = ((await user.json()) as { access_token: string }).access_token
    const res = await m.app.request('/oauth2/token', {
      method: 'POST',
      headers: { authorization: basic('demo-agent', 'demo-secret'), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: subjectToken,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        audience: 'https://demo.example',
        scope: 'demo:read',
      }).toString(),
    })
    expect(res.status).toBe(200)
  } finally {
    await m.close()
  }
}

describePostgres('audit checkpoints of two databases in one directory', () => {
  let dir: string
  let test: TestDatabase | undefined
  let pgliteEnv: NodeJS.ProcessEnv
  let postgresEnv: NodeJS.ProcessEnv

  const verify = (env: NodeJS.ProcessEnv) =>
    spawnSync(process.execPath, [bin, 'audit', 'verify', '--checkpoints', join(dir, 'data', 'checkpoints')], {
      cwd: root,
      env,
      encoding: 'utf8',
      timeout: 120_000,
    })

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-checkpoint-stores-'))
    await cp(join(root, 'policies/dev'), join(dir, 'policies'), { recursive: true })
    test = await createTestDatabase()
    // The embedded default first, then PostgreSQL with the same data directory: the default checkpoint directory is shared.
    await issueOnce(dir, undefined)
    await issueOnce(dir, test.url)
    const { DATABASE_URL: _db, REDIS_URL: _redis, MANDATE_CONFIG: _config, ...rest } = process.env
    pgliteEnv = { ...rest, MANDATE_DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'warn' }
    postgresEnv = { ...pgliteEnv, DATABASE_URL: test.url }
  }, 120_000)

  afterAll(async () => {
    await test?.drop()
    await rm(dir, { recursive: true, force: true })
  })

  it('keeps each database’s checkpoints apart', async () => {
    const entries = await readdir(join(dir, 'data', 'checkpoints'), { withFileTypes: true })
    const stores = entries.filter((e) => e.isDirectory()).map((e) => e.name)
    expect(stores).toHaveLength(2)
    expect(stores.some((s) => s.startsWith('pglite-'))).toBe(true)
    expect(stores.some((s) => s.startsWith('postgres-'))).toBe(true)
    expect(entries.filter((e) => e.isFile() && e.name.endsWith('.jws'))).toEqual([])
  })

  // Each `mandate audit verify` is a process of its own (tsx compiles the CLI first): a minute on a busy machine.
  it('verifies PostgreSQL against its own checkpoints, naming PGlite’s apart (exit 0)', () => {
    const onPostgres = verify(postgresEnv)
    expect(onPostgres.status, onPostgres.stdout + onPostgres.stderr).toBe(0)
    expect(onPostgres.stdout).not.toContain('MISSING_CHAIN')
    expect(onPostgres.stdout).toMatch(/^OK: \d+ records in 1 chain, \d+ checkpoints?/m)
    expect(onPostgres.stdout).toMatch(/^OTHER DATABASE: pglite-\S+: \d+ checkpoints? of 1 chain, none of them in this database: not held against it$/m)
  }, 120_000)

  it('verifies PGlite against its own checkpoints, naming PostgreSQL’s apart (exit 0)', () => {
    const onPglite = verify(pgliteEnv)
    expect(onPglite.status, onPglite.stdout + onPglite.stderr).toBe(0)
    expect(onPglite.stdout).not.toContain('MISSING_CHAIN')
    expect(onPglite.stdout).toMatch(/^OTHER DATABASE: postgres-\S+: /m)
  }, 120_000)

  it('still reports a chain deleted from PostgreSQL as missing (exit 1): its own checkpoints are held', async () => {
    const db = await openDatabase(test!.url, { dataDir: join(dir, 'data') })
    try {
      await db.db.transaction(async (tx) => {
        await tx.execute(sql`alter table audit_log disable trigger user`)
        await tx.execute(sql`delete from audit_log`)
        await tx.execute(sql`alter table audit_log enable trigger user`)
      })
    } finally {
      await db.close()
    }
    const deleted = verify(postgresEnv)
    expect(deleted.status, deleted.stdout + deleted.stderr).toBe(1)
    expect(deleted.stdout).toMatch(/^MISSING_CHAIN: chain [0-9a-f-]+ /m)
  }, 120_000)
})
