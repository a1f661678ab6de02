/**
 * `mandate migrate` and `mandate audit verify|query` as a user runs them, on
 * the embedded default (PGlite under the data directory): a broker process
 * issues a delegation, stops (SIGTERM: last group and checkpoint written),
 * then the CLI verifies, queries, and catches tampering behind the trigger's
 * back and truncation against the checkpoints. And on PostgreSQL, a broker
 * killed (SIGKILL) in its first seconds: its chain is covered by a
 * checkpoint all the same, so an appended forgery and the chain's deletion
 * both show.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { desc, eq, sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeRecord } from '../../src/audit/record.js'
import type { AgentId } from '../../src/core/claims.js'
import { openDatabase } from '../../src/storage/database.js'
import { auditLog } from '../../src/storage/schema.js'
import { freePort } from '../support/net.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { jtiOf } from '../support/tokens.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const bin = join(root, 'bin/mandate.js')

const exchangeForm = (subjectToken: string, scope: string) =>
  new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: subjectToken,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    audience: 'https://demo.example',
    scope,
  }).toString()

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`

/** Starts `mandate serve --dev` with `env`; resolves with the process and its base URL once /readyz answers. */
async function startBroker(env: NodeJS.ProcessEnv): Promise<{ server: ChildProcess; base: string }> {
  const port = await freePort()
  const server = spawn(process.execPath, [bin, 'serve', '--dev'], { cwd: root, env: { ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] })
  server.stdout.resume()
  server.stderr.resume()
  const base = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 45_000
  while (
    !(await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    ))
  ) {
    if (Date.now() > deadline || server.exitCode !== null) {
      server.kill('SIGKILL')
      throw new Error('broker did not become ready')
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  return { server, base }
}

describe('mandate audit (PGlite)', () => {
  let dataDir: string
  let env: NodeJS.ProcessEnv
  let server: ChildProcess | undefined
  let parentJti: string
  let childJti: string

  const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { cwd: root, env, encoding: 'utf8', timeout: 60_000 })

  async function stopServer(): Promise<void> {
    if (server === undefined || server.exitCode !== null) return
    const exited = new Promise((resolve) => server!.once('exit', resolve))
    server.kill('SIGTERM')
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))])
  }

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mandate-audit-cli-'))
    const { DATABASE_URL: _db, REDIS_URL: _redis, ...rest } = process.env
    env = { ...rest, MANDATE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' }
    const started = await startBroker(env)
    server = started.server
    const base = started.base
    const user = (
      (await (await fetch(`${base}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"demo:read demo:write"}' })).json()) as { access_token: string }
    ).access_token
    const post = async (auth: string, form: string) => {
      const res = await fetch(`${base}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
        body: form,
      })
      const body = (await res.json()) as { access_token: string }
      if (res.status !== 200) throw new Error(`exchange: ${res.status} ${JSON.stringify(body)}`)
      return body.access_token
    }
    const parent = await post(basic('demo-agent', 'demo-secret'), exchangeForm(user, 'demo:read'))
    const child = await post(basic('demo-subagent', 'demo-sub-secret'), exchangeForm(parent, 'demo:read'))
    parentJti = jtiOf(parent)
    childJti = jtiOf(child)

    // While the broker holds PGlite, the CLI refuses to open it (two processes would corrupt it).
    const busy = cli('audit', 'verify')
    expect(busy.status).toBe(2)
    expect(busy.stderr).toContain('in use by another process')

    await stopServer()
  }, 90_000)

  afterAll(async () => {
    await stopServer()
    await rm(dataDir, { recursive: true, force: true })
  })

  it('migrate is idempotent', () => {
    const run = cli('migrate')
    expect(run.stderr).toBe('')
    expect(run.status).toBe(0)
    expect(run.stdout).toContain('migrations applied to PGlite')
  })

  it('verify passes on the untouched log, with its checkpoints', async () => {
    // One subdirectory per database (src/audit/checkpoint.ts).
    const files = await readdir(join(dataDir, 'checkpoints'), { recursive: true })
    expect(files.filter((f) => f.endsWith('.jws')).length).toBeGreaterThan(0)
    const run = cli('audit', 'verify', '--checkpoints', join(dataDir, 'checkpoints'))
    expect(run.status, run.stdout + run.stderr).toBe(0)
    expect(run.stdout).toMatch(/^OK: \d+ records in 1 chain, \d+ checkpoints?/m)
  })

  it('query --chain prints the delegation tree; query filters and pages', () => {
    const tree = cli('audit', 'query', '--chain', childJti)
    expect(tree.status, tree.stderr).toBe(0)
    expect(tree.stdout).toContain('2 tokens')
    expect(tree.stdout).toContain(`${parentJti}  agent=demo-agent`)
    expect(tree.stdout).toContain(`└ ${childJti}  agent=demo-subagent`)
    expect(tree.stdout).toContain('<= asked')

    const issued = cli('audit', 'query', '--event', 'token.issued', '--json')
    expect(issued.status, issued.stderr).toBe(0)
    const records = issued.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { record: { jti: string; actors: string[] } }).record)
    expect(records.map((r) => r.jti)).toEqual([childJti, parentJti])
    expect(records[0]!.actors).toEqual(['demo-subagent', 'demo-agent'])

    const page = cli('audit', 'query', '--limit', '1', '--agent', 'demo-agent', '--event', 'token.*')
    expect(page.status, page.stderr).toBe(0)
    expect(page.stdout.trim().split('\n')).toHaveLength(1)
    expect(page.stderr).toMatch(/more: --before \d+/)

    expect(cli('audit', 'query', '--chain', 'no-such-jti').status).toBe(1)
    expect(cli('audit', 'query', '--event', 'nonsense').status).toBe(2)
  })

  it('query --sub --iss: the user of that issuer only; --iss needs --sub', () => {
    const all = cli('audit', 'query', '--sub', 'alice', '--event', 'token.issued')
    expect(all.status, all.stderr).toBe(0)
    const iss = /iss=(\S+)/.exec(all.stdout)?.[1]
    expect(iss).toMatch(/^https:\/\//)
    const mine = cli('audit', 'query', '--sub', 'alice', '--iss', iss!, '--event', 'token.issued', '--json')
    expect(mine.status, mine.stderr).toBe(0)
    expect(
      mine.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { record: { jti: string } }).record.jti),
    ).toEqual([childJti, parentJti])
    const other = cli('audit', 'query', '--sub', 'alice', '--iss', 'https://other-idp.test', '--event', 'token.issued')
    expect(other.status, other.stderr).toBe(0)
    expect(other.stdout).toBe('')
    expect(cli('audit', 'query', '--iss', iss!).status).toBe(2)
  })

  it('verify names a record changed behind the trigger, and truncation against the checkpoints', async () => {
    const db = await openDatabase(undefined, { dataDir })
    try {
      await expect(db.db.execute(sql`update audit_log set sub = 'mallory' where jti = ${childJti}`)).rejects.toThrow()
      await db.db.execute(sql`alter table audit_log disable trigger user`)
      await db.db.execute(sql`update audit_log set record = replace(record, '"alice"', '"mallory"') where jti = ${childJti}`)
      await db.db.execute(sql`alter table audit_log enable trigger user`)
    } finally {
      await db.close()
    }
    const changed = cli('audit', 'verify')
    expect(changed.status).toBe(1)
    expect(changed.stdout).toMatch(/^CHANGED: record [0-9a-f-]+\/\d+ \(id \d+\) was changed/m)
    expect(changed.stdout).toContain('FAILED')

    // Remove the newest records: the chain alone still verifies from 1 to the new end; the checkpoint does not.
    const db2 = await openDatabase(undefined, { dataDir })
    try {
      await db2.db.execute(sql`alter table audit_log disable trigger user`)
      await db2.db.execute(sql`delete from audit_log where seq >= (select seq from audit_log where jti = ${childJti} and event = 'token.issued')`)
      await db2.db.execute(sql`alter table audit_log enable trigger user`)
    } finally {
      await db2.close()
    }
    expect(cli('audit', 'verify').status).toBe(0)
    const truncated = cli('audit', 'verify', '--checkpoints', join(dataDir, 'checkpoints'))
    expect(truncated.status).toBe(1)
    expect(truncated.stdout).toMatch(/^TRUNCATED: chain [0-9a-f-]+ ends at seq \d+, but a checkpoint/m)
  })
})

describePostgres('mandate audit verify: a broker killed in its first seconds (PostgreSQL)', () => {
  let dataDir: string
  let env: NodeJS.ProcessEnv
  let test: TestDatabase | undefined
  let chain: string

  const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { cwd: root, env, encoding: 'utf8', timeout: 60_000 })
  const verify = () => cli('audit', 'verify', '--checkpoints', join(dataDir, 'checkpoints'))

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mandate-audit-kill-'))
    test = await createTestDatabase()
    // The longest checkpoint interval: only the first checkpoint can cover anything in this test.
    const config = join(dataDir, 'mandate.yaml')
    await writeFile(config, 'audit:\n  checkpoint_interval_ms: 60000\n')
    const { DATABASE_URL: _db, REDIS_URL: _redis, ...rest } = process.env
    env = { ...rest, MANDATE_DATA_DIR: dataDir, MANDATE_CONFIG: config, DATABASE_URL: test.url, LOG_LEVEL: 'warn' }
    const { server, base } = await startBroker(env)
    try {
      const user = (
        (await (await fetch(`${base}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"demo:read"}' })).json()) as { access_token: string }
      ).access_token
      const res = await fetch(`${base}/oauth2/token`, {
        method: 'POST',
        headers: { authorization: basic('demo-agent', 'demo-secret'), 'content-type': 'application/x-www-form-urlencoded' },
        body: exchangeForm(user, 'demo:read'),
      })
      expect(res.status).toBe(200)
    } finally {
      const exited = new Promise((resolve) => server.once('exit', resolve))
      server.kill('SIGKILL')
      await exited
    }
    const files = (await readdir(join(dataDir, 'checkpoints'), { recursive: true })).filter((f) => f.endsWith('.jws'))
    expect(files.length, 'a checkpoint written before the kill').toBeGreaterThan(0)
    chain = basename(files[0]!).split('.')[0]!
  }, 90_000)

  afterAll(async () => {
    await test?.drop()
    await rm(dataDir, { recursive: true, force: true })
  })

  it('lists the records after the first checkpoint as not yet checkpointed (exit 0), a forged record appended to the chain as uncovered (exit 3), and the chain deleted as missing (exit 1)', async () => {
    const fresh = verify()
    expect(fresh.status, fresh.stdout + fresh.stderr).toBe(0)
    expect(fresh.stdout).toMatch(new RegExp(`^NOT YET CHECKPOINTED: chain ${chain} \\(instance [^)]+\\): records? \\d+`, 'm'))
    expect(fresh.stdout).toMatch(/^OK: \d+ records in 1 chain, \d+ checkpoints?/m)

    // Someone with database rights appends a well-chained record, dated a day ago: no finding, but no checkpoint covers it.
    const db = await openDatabase(test!.url, { dataDir })
    try {
      const [last] = await db.db.select().from(auditLog).where(eq(auditLog.chainId, chain)).orderBy(desc(auditLog.seq)).limit(1)
      const at = Math.floor(Date.now() / 1000) - 86_400
      const forged = encodeRecord(
        { type: 'policy.loaded', at, agent: 'demo-agent' as AgentId, source: 'demo-agent.yaml', sha256: 'ab'.repeat(32) },
        { chainId: chain, seq: last!.seq + 1, instance: last!.instance, prevHash: last!.hash },
      )
      await db.db.insert(auditLog).values({ ...forged, actors: [...forged.actors] })
    } finally {
      await db.close()
    }
    const appended = verify()
    expect(appended.status, appended.stdout + appended.stderr).toBe(3)
    expect(appended.stdout).toMatch(
      new RegExp(`^UNCOVERED: chain ${chain} \\(instance [^)]+\\): records \\d+\\.\\.\\d+ \\(\\d+ records, the oldest 24 h old\\)`, 'm'),
    )
    expect(appended.stdout).toMatch(/^UNCOVERED: \d+ records in 1 chain, \d+ checkpoints?, \d+ records uncovered for over 2 min/m)
    const json = cli('audit', 'verify', '--checkpoints', join(dataDir, 'checkpoints'), '--json')
    expect(json.status).toBe(3)
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, status: 'uncovered', max_uncovered_age: 120, uncovered: [{ chain, stale: true }] })

    // The whole chain deleted: without the first checkpoint nothing would tell it ever existed.
    const db2 = await openDatabase(test!.url, { dataDir })
    try {
      await db2.db.transaction(async (tx) => {
        await tx.execute(sql`alter table audit_log disable trigger user`)
        await tx.execute(sql`delete from audit_log where chain_id = ${chain}`)
        await tx.execute(sql`alter table audit_log enable trigger user`)
      })
    } finally {
      await db2.close()
    }
    const deleted = verify()
    expect(deleted.status, deleted.stdout + deleted.stderr).toBe(1)
    expect(deleted.stdout).toMatch(new RegExp(`^MISSING_CHAIN: chain ${chain} `, 'm'))
  })
})
