/**
 * The durable delegation log under faults, across real processes: brokers are
 * `node bin/mandate.js serve --dev` against a PostgreSQL database of this
 * file's own (test/support/pg-database.ts), loaded by a separate load
 * generator process (48 or 32 concurrent exchange loops).
 *
 *   1. PostgreSQL cut for ~2 s under load, the cut landing while an audit
 *      INSERT is in flight (PostgreSQL commits it, its answer is lost): every
 *      answer is 200 or a well-formed 503, none hangs; token.issued minus
 *      token.withheld in the log is exactly the set of tokens answered 200;
 *      the broker recovers by itself (exchanges, /readyz), serving again
 *      within 1 s of the restore.
 *   2. The same, with PostgreSQL going away a second time just as the broker,
 *      back, writes the token.withheld records of the lost answer.
 *   3. SIGTERM under load: every token answered 200 has its row, the process
 *      logs 'audit log closed' and leaves a signed checkpoint at the chain's head.
 *   4. Every chain in the database verifies: seq contiguous from 1, prev_hash
 *      linked, hash = sha256(prev_hash + "\n" + record). Checked here with
 *      node:crypto (`mandate audit verify` is not available yet).
 *
 * The shared PostgreSQL server is never stopped. A broker under test reaches
 * it through a TcpProxy (test/support/proxy.ts) that the test cuts and
 * restores, and behind that through a tap (below) that can time the cut to an
 * audit INSERT: broker → TcpProxy → tap → PostgreSQL.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import postgres from 'postgres'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../src/core/claims.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { logSink } from '../support/log-sink.js'
import { startTcpProxy, type TcpProxy } from '../support/proxy.js'
import { freePort } from '../support/net.js'
import type { Answer } from '../support/load/answers.js'
import { LOAD_SCRIPTS, startLoadGenerator } from '../support/load/run.js'
import { jtiOf, payloadOf } from '../support/tokens.js'

const root = new URL('../../', import.meta.url).pathname
const AUDIENCE = 'https://demo.example'
const DEMO_BASIC = `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}`
const GENESIS = '0'.repeat(64)

/** Instance ids, so each test reads the records of its own broker. */
const CUT_INSTANCE = 'durability-cut'
const FLAP_INSTANCE = 'durability-flap'
const TERM_INSTANCE = 'durability-sigterm'

/** Longest any single exchange may take, outage or not (write timeout 2 s + settle 2 s + slack). */
const ANSWER_BOUND_MS = 10_000
/** How long the polls below wait for the broker to issue again once PostgreSQL is back (what the test asserts is far tighter). */
const RECOVERY_BOUND_MS = 22_000

// ---------------------------------------------------------------- helpers (after kill-switch.test.ts)

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `test` until it holds; throws with `what` after `timeoutMs`. Resolves with the time it took (ms). */
async function until(what: string, test: () => Promise<boolean>, timeoutMs: number, intervalMs = 20): Promise<number> {
  const started = performance.now()
  for (;;) {
    if (await test().catch(() => false)) return performance.now() - started
    if (performance.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`)
    await sleep(intervalMs)
  }
}

const exchangeForm = (subjectToken: string) =>
  new URLSearchParams({
    grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: TOKEN_TYPE.accessToken,
    audience: AUDIENCE,
    scope: 'demo:read',
  }).toString()

const children = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', killAfterMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child)
    return
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs)
  await exited
  clearTimeout(timer)
  children.delete(child)
}

interface Broker {
  readonly base: string
  readonly child: ChildProcess
  readonly dataDir: string
  /** Parsed JSON log lines other than the per-request 'request' lines. */
  readonly lines: Record<string, unknown>[]
  /** 'request' log lines seen, by status. */
  readonly requestLines: Map<number, number>
  /** Token endpoint 200s the broker logged so far. */
  tokenOk(): number
  /** The last few KB of stdout and stderr, for failure messages. */
  output(): string
  userToken(sub: string): Promise<string>
  exchange(subjectToken: string): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }>
  readyz(): Promise<{ status: number; body: Record<string, unknown> }>
}

async function startBroker(instance: string, databaseUrl: string, dataDir: string): Promise<Broker> {
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
    cwd: root,
    env: {
      ...process.env,
      PORT: String(port),
      MANDATE_DATA_DIR: dataDir,
      MANDATE_POLICIES_DIR: join(root, 'policies/dev'),
      MANDATE_INSTANCE_ID: instance,
      DATABASE_URL: databaseUrl,
      REDIS_URL: '',
      // info: 'audit log closed' and 'audit checkpoint' are info lines.
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  let tail = ''
  let partial = ''
  const lines: Record<string, unknown>[] = []
  const requestLines = new Map<number, number>()
  let tokenOk = 0
  child.stdout.on('data', (d: Buffer) => {
    const text = d.toString()
    tail = (tail + text).slice(-8192)
    const parts = (partial + text).split('\n')
    partial = parts.pop()!
    for (const line of parts) {
      let parsed: Record<string, unknown>
      try {
        parsed = JSON.parse(line) as Record<string, unknown>
      } catch {
        continue
      }
      if (parsed['msg'] === 'request') {
        const status = Number(parsed['status'])
        requestLines.set(status, (requestLines.get(status) ?? 0) + 1)
        if (status === 200 && parsed['path'] === '/oauth2/token') tokenOk++
      } else if (parsed['msg'] !== 'request failed' || lines.length < 2_000) {
        lines.push(parsed)
      }
    }
  })
  child.stderr.on('data', (d: Buffer) => {
    tail = (tail + d.toString()).slice(-8192)
  })
  child.stdout.on('data', logSink('audit-durability broker stdout'))
  child.stderr.on('data', logSink('audit-durability broker stderr'))

  const broker: Broker = {
    base,
    child,
    dataDir,
    lines,
    requestLines,
    tokenOk: () => tokenOk,
    output: () => tail,
    async userToken(sub) {
      const res = await fetch(`${base}/dev/users/${sub}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ scope: 'demo:read' }),
        signal: AbortSignal.timeout(10_000),
      })
      const body = (await res.json()) as Record<string, unknown>
      if (res.status !== 200) throw new Error(`dev user token: ${res.status} ${JSON.stringify(body)}`)
      return body['access_token'] as string
    },
    async exchange(subjectToken) {
      const res = await fetch(`${base}/oauth2/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: DEMO_BASIC },
        body: exchangeForm(subjectToken),
        signal: AbortSignal.timeout(ANSWER_BOUND_MS),
      })
      return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> }
    },
    async readyz() {
      const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5_000) })
      return { status: res.status, body: (await res.json()) as Record<string, unknown> }
    },
  }

  const deadline = performance.now() + 40_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`broker ${instance} exited (${child.exitCode}) at start:\n${tail}`)
    if ((await broker.readyz().catch(() => ({ status: 0 }))).status === 200) return broker
    if (performance.now() > deadline) throw new Error(`broker ${instance} not ready within 40 s:\n${tail}`)
    await sleep(100)
  }
}

interface Load {
  /** Resolves once every loop had its first answer. */
  readonly go: Promise<void>
  /** Stops the loops; resolves with every answer once they have all ended. */
  stop(): Promise<Answer[]>
}

/** The load generator (test/support/load/answers.ts), its own process, at `broker`. */
function startLoad(broker: Broker, subjectToken: string, loops: number): Load {
  const load = startLoadGenerator(LOAD_SCRIPTS.answers, {
    url: `${broker.base}/oauth2/token`,
    authorization: DEMO_BASIC,
    body: exchangeForm(subjectToken),
    loops,
    maxMs: 40_000,
    timeoutMs: ANSWER_BOUND_MS + 5_000,
  })
  children.add(load.child)
  return {
    go: load.started(20_000),
    async stop() {
      // In-flight requests end within their own timeout.
      const { answers } = await load.stop(ANSWER_BOUND_MS + 10_000)
      await stopChild(load.child)
      return answers
    },
  }
}

const countBy = <T>(items: readonly T[], key: (t: T) => string | number) => {
  const counts: Record<string, number> = {}
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1
  return counts
}

const msgCount = (broker: Broker, msg: string) => broker.lines.filter((l) => l['msg'] === msg).length

/**
 * A forwarding TCP hop in front of PostgreSQL that watches the broker's audit
 * INSERTs so that an outage can be made to land on one. The INSERT is a
 * prepared statement: its text (`insert into audit_log (`) passes once per
 * connection, in a Parse message that names the statement; every execution
 * is a Bind message naming it. The tap learns the names from the Parses and
 * recognizes either message:
 *
 * - `loseNextInsertAnswer(fire)`: the next audit INSERT reaches PostgreSQL,
 *   which commits it; its answer (`INSERT 0 n`) is dropped and `fire` called
 *   (the test cuts the TcpProxy in it): a lost answer of a committed group;
 * - `dropNextInsert(fire)`: the next audit INSERT is never forwarded, its
 *   connection is closed and `fire` called: an uncommitted group.
 *
 * Each resolves once it fired; `disarm()` cancels what has not.
 */
interface Tap {
  readonly url: string
  loseNextInsertAnswer(fire: () => void): Promise<void>
  dropNextInsert(fire: () => void): Promise<void>
  disarm(): void
  close(): Promise<void>
}

const AUDIT_INSERT = 'insert into audit_log ('

/**
 * The statement names of the audit INSERT's Parse messages in `chunk`
 * (Parse: 'P', int32 length, name NUL, query NUL, …). The audit INSERT may
 * follow CTEs in its query (the usage summaries ride in the same statement),
 * and a query holds no NUL: the last NUL before the INSERT's text ends the
 * name. postgres.js names its statements with lowercase letters and digits:
 * the name is the run of those just before that NUL.
 */
function auditStatementNames(chunk: Buffer): string[] {
  const names: string[] = []
  for (let q = chunk.indexOf(AUDIT_INSERT); q >= 0; q = chunk.indexOf(AUDIT_INSERT, q + 1)) {
    const nul = chunk.lastIndexOf(0, q - 1)
    if (nul < 0) continue
    let start = nul
    while (start > 0 && /[a-z0-9]/.test(String.fromCharCode(chunk[start - 1]!))) start--
    if (start < nul) names.push(chunk.subarray(start, nul).toString('latin1'))
  }
  return names
}

async function startTap(targetUrl: string): Promise<Tap> {
  const target = new URL(targetUrl)
  const sockets = new Set<Socket>()
  let armed: { mode: 'lose-answer' | 'drop'; fire: () => void } | undefined
  /** NUL name NUL, as a Bind message with the unnamed portal carries it, for each prepared audit INSERT seen. */
  const binds: Buffer[] = []
  const isAuditInsert = (chunk: Buffer) => {
    const named = auditStatementNames(chunk)
    for (const n of named) binds.push(Buffer.from(`\0${n}\0`, 'latin1'))
    return named.length > 0 || chunk.includes(AUDIT_INSERT) || binds.some((b) => chunk.includes(b))
  }
  const server = createServer((down) => {
    const up = connect(Number(target.port || 5432), target.hostname)
    sockets.add(down)
    sockets.add(up)
    let dead = false
    /** Set once this connection carried the armed INSERT: its answer is to be lost. */
    let loseAnswer: (() => void) | undefined
    const drop = () => {
      dead = true
      down.destroy()
      up.destroy()
      sockets.delete(down)
      sockets.delete(up)
    }
    down.on('error', drop).on('close', drop)
    up.on('error', drop).on('close', drop)
    down.setNoDelay(true)
    up.setNoDelay(true)
    down.on('data', (chunk: Buffer) => {
      if (dead) return
      if (isAuditInsert(chunk) && armed !== undefined) {
        const { mode, fire } = armed
        armed = undefined
        if (mode === 'drop') {
          fire()
          drop()
          return
        }
        loseAnswer = fire
      }
      up.write(chunk)
    })
    up.on('data', (chunk: Buffer) => {
      if (dead) return
      if (loseAnswer !== undefined && chunk.includes('INSERT 0 ')) {
        const fire = loseAnswer
        loseAnswer = undefined
        fire()
        drop()
        return
      }
      down.write(chunk)
    })
  })
  server.on('error', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = new URL(targetUrl)
  url.hostname = '127.0.0.1'
  url.port = String((server.address() as AddressInfo).port)
  const arm = (mode: 'lose-answer' | 'drop', fire: () => void) =>
    new Promise<void>((resolve) => {
      armed = {
        mode,
        fire: () => {
          fire()
          resolve()
        },
      }
    })
  return {
    url: url.toString(),
    loseNextInsertAnswer: (fire) => arm('lose-answer', fire),
    dropNextInsert: (fire) => arm('drop', fire),
    disarm: () => void (armed = undefined),
    async close() {
      armed = undefined
      for (const s of sockets) s.destroy()
      sockets.clear()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** The broker's path to PostgreSQL: broker → TcpProxy (cut/restore) → tap → PostgreSQL. */
interface PgPath {
  readonly proxy: TcpProxy
  readonly tap: Tap
  /** Arms `arm` to cut the proxy; cuts anyway after `fallbackMs`. Resolves with how the cut came. */
  cutAt(arm: (tap: Tap, fire: () => void) => Promise<void>, fallbackMs: number): Promise<'tap' | 'timer'>
  close(): Promise<void>
}

async function startPgPath(databaseUrl: string): Promise<PgPath> {
  const tap = await startTap(databaseUrl)
  const proxy = await startTcpProxy(tap.url)
  return {
    proxy,
    tap,
    async cutAt(arm, fallbackMs) {
      let timer: NodeJS.Timeout | undefined
      const how = await Promise.race([
        arm(tap, () => proxy.cut()).then(() => 'tap' as const),
        new Promise<'timer'>((resolve) => {
          timer = setTimeout(() => {
            tap.disarm()
            proxy.cut()
            resolve('timer')
          }, fallbackMs)
        }),
      ])
      clearTimeout(timer)
      return how
    },
    async close() {
      await proxy.close()
      await tap.close()
    },
  }
}

/** What the log of `instance` says against the jtis answered 200. */
async function reconcile(sql: postgres.Sql, instance: string, answered: readonly string[]) {
  const rows = await sql<{ event: string; jti: string | null }[]>`
    select event, jti from audit_log
    where instance = ${instance} and event in ('token.issued', 'token.withheld')`
  const issued = rows.filter((r) => r.event === 'token.issued').map((r) => r.jti!)
  const withheld = rows.filter((r) => r.event === 'token.withheld').map((r) => r.jti!)
  const issuedSet = new Set(issued)
  const withheldSet = new Set(withheld)
  const answeredSet = new Set(answered)
  const logSays = new Set([...issuedSet].filter((j) => !withheldSet.has(j)))
  return {
    issued,
    withheld,
    issuedSet,
    withheldSet,
    answeredSet,
    logSays,
    missingRow: [...answeredSet].filter((j) => !issuedSet.has(j)),
    answeredButWithheld: [...answeredSet].filter((j) => withheldSet.has(j)),
    issuedNeverAnswered: [...logSays].filter((j) => !answeredSet.has(j)),
    withheldWithoutIssued: [...withheldSet].filter((j) => !issuedSet.has(j)),
  }
}

const describeReconcile = (r: Awaited<ReturnType<typeof reconcile>>, answered: readonly string[]) =>
  `log rows token.issued ${r.issued.length} (distinct ${r.issuedSet.size}), token.withheld ${r.withheld.length} (distinct ${r.withheldSet.size}); ` +
  `issued − withheld ${r.logSays.size}; jtis answered 200 ${answered.length} (distinct ${r.answeredSet.size}); ` +
  `answered without a row ${r.missingRow.length}, answered but withheld ${r.answeredButWithheld.length}, ` +
  `issued (not withheld) but never answered ${r.issuedNeverAnswered.length}, withheld without issued ${r.withheldWithoutIssued.length}`

/** The broker's failed audit groups: ms after `since` (epoch ms), outcome, code, records. */
const failedGroups = (broker: Broker, since: number) =>
  broker.lines
    .filter((l) => l['msg'] === 'audit group not written')
    .map((l) => `${Date.parse(String(l['time'])) - since}ms:${String(l['outcome'])}/${String(l['code'])}/${String(l['records'])}`)
    .join(' ')

const brokerEvents = (broker: Broker) =>
  `broker log: 'audit group not written' ×${msgCount(broker, 'audit group not written')}, ` +
  `'unconfirmed audit group had committed' ×${msgCount(broker, 'an unconfirmed audit group had committed; recording its tokens as withheld')} ` +
  `(withheld ${
    broker.lines
      .filter((l) => l['msg'] === 'an unconfirmed audit group had committed; recording its tokens as withheld')
      .map((l) => String(l['withheld']))
      .join('+') || 0
  }), ` +
  `'continuing on a new chain' ×${msgCount(broker, 'audit chain head is not where this writer left it; continuing on a new chain')}; ` +
  `request lines by status ${JSON.stringify(Object.fromEntries(broker.requestLines))}`

/**
 * After `proxy.restore()`: how long until the broker opens a connection through
 * the proxy again, and until it logs a token endpoint 200 again (ms; the polls
 * give up after RECOVERY_BOUND_MS).
 */
async function awaitRecovery(broker: Broker, proxy: TcpProxy, restoredAt: number, okBefore: number) {
  const [reconnect, firstOk] = await Promise.all([
    until('the broker connecting through the proxy again', async () => proxy.connections > 0, RECOVERY_BOUND_MS, 10).then(() => Date.now() - restoredAt),
    until('a token endpoint 200 after the restore', async () => broker.tokenOk() > okBefore, RECOVERY_BOUND_MS, 10).then(() => Date.now() - restoredAt),
  ])
  return { reconnect, firstOk }
}

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN

/** Figures of a load run around an outage [cutAt, restoreAt] (epoch ms). */
function outageFigures(answers: readonly Answer[], cutAt: number, restoreAt: number) {
  const ok = answers.filter((a) => a[2] === 200)
  const unavailable = answers.filter((a) => a[2] === 503)
  const firstOkAfterRestore = ok.filter((a) => a[0] >= restoreAt).map((a) => a[1] - restoreAt)
  const span = (Math.max(...answers.map((a) => a[1])) - Math.min(...answers.map((a) => a[0]))) / 1000
  return {
    byStatus: countBy(answers, (a) => a[2]),
    ok,
    unavailable,
    maxMs: Math.max(...answers.map((a) => a[1] - a[0])),
    /** 503s answered while PostgreSQL was gone (or just after, for requests caught in it). */
    during: unavailable.filter((a) => a[1] >= cutAt && a[1] <= restoreAt + 2_500).length,
    /** 200s to requests started and answered entirely inside the outage: impossible if the log is honoured. */
    okInsideCut: ok.filter((a) => a[0] > cutAt + 50 && a[1] < restoreAt).length,
    firstOkAfterRestore,
    /** Median time an exchange answered 200 took before the cut: what the load costs each one. */
    medianOkBeforeCutMs: median(ok.filter((a) => a[1] < cutAt).map((a) => a[1] - a[0])),
    recoveryMs: firstOkAfterRestore.length === 0 ? Number.NaN : Math.min(...firstOkAfterRestore),
    span,
    malformed503: unavailable.filter((a) => a[3] !== 'temporarily_unavailable' || !(Number(a[4]) > 0) || a[5] !== 'no-store'),
  }
}

// ---------------------------------------------------------------- the suite

describePostgres('the delegation log under faults, across broker processes (PostgreSQL)', () => {
  let database: TestDatabase | undefined
  let sql: postgres.Sql
  let cutPath: PgPath | undefined
  let flapPath: PgPath | undefined
  let cutBroker: Broker | undefined
  let flapBroker: Broker | undefined
  let termBroker: Broker | undefined
  const tempDirs: string[] = []

  const newDir = async (label: string) => {
    const dir = await mkdtemp(join(tmpdir(), `mandate-audit-${label}-`))
    tempDirs.push(dir)
    return dir
  }

  const cleanup = async () => {
    await Promise.all([...children].map((child) => stopChild(child).catch(() => {})))
    await cutPath?.close()
    await flapPath?.close()
    await sql?.end({ timeout: 5 }).catch(() => {})
    await database?.drop().catch(() => {})
    database = undefined
    await Promise.all(tempDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })))
  }

  beforeAll(async () => {
    try {
      database = await createTestDatabase()
      sql = postgres(database.url, { max: 2, connect_timeout: 5, onnotice: () => {} })
      cutPath = await startPgPath(database.url)
      flapPath = await startPgPath(database.url)
      const [dataCut, dataFlap, dataTerm] = await Promise.all([newDir('cut'), newDir('flap'), newDir('term')])
      ;[cutBroker, flapBroker, termBroker] = await Promise.all([
        startBroker(CUT_INSTANCE, cutPath.proxy.url, dataCut),
        startBroker(FLAP_INSTANCE, flapPath.proxy.url, dataFlap),
        startBroker(TERM_INSTANCE, database.url, dataTerm),
      ])
    } catch (err) {
      await cleanup()
      throw err
    }
  }, 60_000)

  afterAll(cleanup, 30_000)

  it('PostgreSQL cut for 2 s under 48 exchange loops: only 200s and 503s, the log holds exactly the tokens answered 200, the broker serves again within 1 s of the restore', async () => {
    const broker = cutBroker!
    const pg = cutPath!
    const LOOPS = 48
    const user = await broker.userToken('durability-alice')
    // One exchange before the load, also in the set of tokens answered.
    const first = await broker.exchange(user)
    expect(first.status, JSON.stringify(first.body)).toBe(200)
    const directJtis = [jtiOf(first.body['access_token'] as string)]

    const load = startLoad(broker, user, LOOPS)
    let answers: Answer[]
    let cutAt: number
    let restoreAt: number
    let cutBy: 'tap' | 'timer'
    let refusedInCut: number
    let recovery: { reconnect: number; firstOk: number }
    const readyDuringCut: { status: number; writing: unknown }[] = []
    try {
      await load.go
      await sleep(1_500)
      // PostgreSQL goes away just after committing an audit group: its answer never reaches the broker.
      cutBy = await pg.cutAt((tap, fire) => tap.loseNextInsertAnswer(fire), 1_000)
      cutAt = Date.now()
      // /readyz while PostgreSQL is gone; the restore does not wait for it.
      let polling = true
      const poller = (async () => {
        while (polling) {
          const r = await broker.readyz().catch(() => undefined)
          if (r !== undefined && polling)
            readyDuringCut.push({ status: r.status, writing: (r.body['audit_log'] as { writing?: unknown } | undefined)?.writing })
          await sleep(100)
        }
      })()
      await sleep(2_000)
      refusedInCut = pg.proxy.refused
      const okAtRestore = broker.tokenOk()
      restoreAt = Date.now()
      pg.proxy.restore()
      polling = false
      recovery = await awaitRecovery(broker, pg.proxy, restoreAt, okAtRestore)
      await poller
      // A little more load once it issues again.
      await sleep(1_500)
    } finally {
      answers = await load.stop()
    }

    // The broker recovered without a restart: /readyz says the log is writing, an exchange succeeds.
    const readyAfterMs = await until(
      '/readyz 200 with audit_log.writing true',
      async () => {
        const r = await broker.readyz()
        return r.status === 200 && (r.body['audit_log'] as { writing?: unknown }).writing === true
      },
      15_000,
      50,
    )
    const after = await broker.exchange(user)
    expect(after.status, JSON.stringify(after.body)).toBe(200)
    directJtis.push(jtiOf(after.body['access_token'] as string))

    const f = outageFigures(answers, cutAt, restoreAt)
    const answered = [...f.ok.map((a) => a[3]!), ...directJtis]
    const r = await reconcile(sql, CUT_INSTANCE, answered)
    console.log(
      `audit durability, PostgreSQL cut: ${LOOPS} loops, ${answers.length} answers in ${f.span.toFixed(1)} s ` +
        `(${Math.round(answers.length / f.span)}/s), by status ${JSON.stringify(f.byStatus)}; cut by ${cutBy} for ${restoreAt - cutAt} ms: ` +
        `${f.during} 503s in the cut window, ${f.okInsideCut} 200s started and ended inside it; slowest answer ${f.maxMs} ms; ` +
        `${refusedInCut} connection attempts refused during the cut; after the restore: first connection ${recovery.reconnect} ms, ` +
        `first 200 logged ${recovery.firstOk} ms (median 200 before the cut took ${f.medianOkBeforeCutMs} ms), ` +
        `first 200 (load generator) to a request started after it ${f.recoveryMs} ms; ` +
        `/readyz during the cut ${JSON.stringify(countBy(readyDuringCut, (x) => `${x.status}/${String(x.writing)}`))}, ` +
        `ready+writing ${readyAfterMs.toFixed(0)} ms after the load stopped`,
    )
    console.log(
      `audit durability, PostgreSQL cut: ${describeReconcile(r, answered)}; ${brokerEvents(broker)}; failed groups (ms after the cut:outcome/code/records) ${failedGroups(broker, cutAt)}`,
    )

    // Every answer is a 200 or a 503: no 500, no connection error, no hang.
    expect(f.byStatus, `answers by status; broker output:\n${broker.output()}`).toEqual({
      ...(f.ok.length > 0 ? { 200: f.ok.length } : {}),
      ...(f.unavailable.length > 0 ? { 503: f.unavailable.length } : {}),
    })
    expect(f.maxMs).toBeLessThan(ANSWER_BOUND_MS)
    // Every 503 is temporarily_unavailable with Retry-After and no-store.
    expect(f.malformed503.slice(0, 5)).toEqual([])
    // Every 200 carried a token with a jti, each one different.
    expect(f.ok.filter((a) => typeof a[3] !== 'string')).toEqual([])
    expect(r.answeredSet.size).toBe(answered.length)

    // The cut was felt: 503s while PostgreSQL was gone, nothing issued that started in it, /readyz said so.
    expect(cutBy).toBe('tap')
    expect(f.during).toBeGreaterThan(0)
    expect(f.okInsideCut).toBe(0)
    expect(readyDuringCut.some((x) => x.status === 503 && x.writing === false)).toBe(true)
    // And it recovered by itself, under the same load: serving again within 1 s of the restore, plus the time
    // an exchange takes under this load on this machine (the median answer before the cut).
    expect(f.firstOkAfterRestore.length).toBeGreaterThan(0)
    expect(recovery.firstOk).toBeLessThan(1_000 + f.medianOkBeforeCutMs)

    // The log: one row per token, withheld ⊆ issued, and issued − withheld = exactly the tokens answered 200.
    expect(r.issuedSet.size).toBe(r.issued.length)
    expect(r.withheldSet.size).toBe(r.withheld.length)
    expect(r.withheldWithoutIssued).toEqual([])
    expect(r.missingRow, 'tokens answered 200 with no token.issued row').toEqual([])
    expect(r.answeredButWithheld, 'tokens answered 200 but recorded as withheld').toEqual([])
    expect(r.issuedNeverAnswered, 'token.issued rows (not withheld) for tokens never answered 200').toEqual([])
    expect(r.logSays.size).toBe(r.answeredSet.size)
    // The group whose answer was lost had committed: its tokens are in the log, as withheld.
    expect(r.withheld.length).toBeGreaterThan(0)
  }, 45_000)

  it('PostgreSQL flapping: gone again just as the broker writes the token.withheld records of a lost answer — the log must still hold exactly the tokens answered 200', async () => {
    const broker = flapBroker!
    const pg = flapPath!
    const LOOPS = 48
    const user = await broker.userToken('durability-carol')
    const load = startLoad(broker, user, LOOPS)
    let answers: Answer[]
    const cuts: { by: string; at: number; restoreAt: number }[] = []
    let recovery: { reconnect: number; firstOk: number }
    try {
      await load.go
      await sleep(1_000)
      // Outage 1: a committed group's answer is lost (as in the test above).
      const by1 = await pg.cutAt((tap, fire) => tap.loseNextInsertAnswer(fire), 1_000)
      const at1 = Date.now()
      await sleep(1_000)
      // Outage 2: armed before the restore, so it takes the broker's first INSERT once back, the one
      // that carries the token.withheld records of outage 1 (after its head check, a SELECT, succeeded).
      const second = pg.cutAt((tap, fire) => tap.dropNextInsert(fire), RECOVERY_BOUND_MS)
      cuts.push({ by: by1, at: at1, restoreAt: Date.now() })
      pg.proxy.restore()
      const by2 = await second
      const at2 = Date.now()
      await sleep(1_000)
      const okAtRestore = broker.tokenOk()
      const restore2 = Date.now()
      cuts.push({ by: by2, at: at2, restoreAt: restore2 })
      pg.proxy.restore()
      recovery = await awaitRecovery(broker, pg.proxy, restore2, okAtRestore)
      await sleep(1_000)
    } finally {
      answers = await load.stop()
    }
    await until('/readyz 200 with audit_log.writing true', async () => (await broker.readyz()).status === 200, 15_000, 50)
    const after = await broker.exchange(user)
    expect(after.status, JSON.stringify(after.body)).toBe(200)

    const f = outageFigures(answers, cuts[0]!.at, cuts[1]!.restoreAt)
    const answered = [...f.ok.map((a) => a[3]!), jtiOf(after.body['access_token'] as string)]
    const r = await reconcile(sql, FLAP_INSTANCE, answered)
    console.log(
      `audit durability, PostgreSQL flapping: ${LOOPS} loops, ${answers.length} answers in ${f.span.toFixed(1)} s, by status ${JSON.stringify(f.byStatus)}; ` +
        `outages ${JSON.stringify(cuts.map((c) => ({ by: c.by, ms: c.restoreAt - c.at })))}, ${Math.round(cuts[1]!.at - cuts[0]!.restoreAt)} ms apart; ` +
        `slowest answer ${f.maxMs} ms; after the last restore: first connection ${recovery.reconnect} ms, first 200 logged ${recovery.firstOk} ms`,
    )
    console.log(
      `audit durability, PostgreSQL flapping: ${describeReconcile(r, answered)}; ${brokerEvents(broker)}; failed groups (ms after the first cut:outcome/code/records) ${failedGroups(broker, cuts[0]!.at)}`,
    )
    if (r.issuedNeverAnswered.length > 0) {
      const lost = await sql<{ seq: number; at: string }[]>`
        select seq::int as seq, at::text as at from audit_log where jti in ${sql(r.issuedNeverAnswered)} and event = 'token.issued' order by seq`
      console.log(
        `audit durability, PostgreSQL flapping: token.issued rows never answered and never withheld: ${r.issuedNeverAnswered.length}, ` +
          `seq ${String(lost[0]?.seq)}..${String(lost.at(-1)?.seq)} (e.g. jti ${String(r.issuedNeverAnswered[0])})`,
      )
    }

    expect(cuts.map((c) => c.by)).toEqual(['tap', 'tap'])
    expect(Object.keys(f.byStatus).sort()).toEqual(['200', '503'])
    expect(f.malformed503.slice(0, 5)).toEqual([])
    expect(f.maxMs).toBeLessThan(ANSWER_BOUND_MS)
    expect(r.missingRow, 'tokens answered 200 with no token.issued row').toEqual([])
    expect(r.answeredButWithheld, 'tokens answered 200 but recorded as withheld').toEqual([])
    // The token.withheld records of a settled group are owed until a group carrying them commits:
    // a second loss must not drop them, or the log would claim tokens left the broker that did not.
    expect(r.issuedNeverAnswered, 'token.issued rows (not withheld) for tokens never answered 200').toEqual([])
    expect(r.logSays.size).toBe(r.answeredSet.size)
  }, 45_000)

  it('SIGTERM under load: every token answered 200 has its row, the log is closed with a last checkpoint at the chain head', async () => {
    const broker = termBroker!
    const LOOPS = 32
    const user = await broker.userToken('durability-bob')
    const load = startLoad(broker, user, LOOPS)
    let answers: Answer[]
    let exitCode: number | null = null
    let exitSignal: NodeJS.Signals | null = null
    let exitMs: number
    let sigtermAt = 0
    try {
      await load.go
      await sleep(1_000)
      const exited = new Promise<void>((resolve) =>
        broker.child.once('exit', (code, signal) => {
          exitCode = code
          exitSignal = signal
          resolve()
        }),
      )
      const t0 = performance.now()
      sigtermAt = Date.now()
      broker.child.kill('SIGTERM')
      // serve.ts forces an exit (code 1) after 10 s; SIGKILL only past that.
      const killer = setTimeout(() => broker.child.kill('SIGKILL'), 15_000)
      await exited
      clearTimeout(killer)
      exitMs = performance.now() - t0
      children.delete(broker.child)
    } finally {
      answers = await load.stop()
    }

    const byStatus = countBy(answers, (a) => a[2])
    const ok = answers.filter((a) => a[2] === 200)
    const okAfterTerm = ok.filter((a) => a[0] > sigtermAt)
    const returned = ok.map((a) => a[3]!)
    const closed = broker.lines.filter((l) => l['msg'] === 'audit log closed')
    const r = await reconcile(sql, TERM_INSTANCE, returned)

    // The checkpoint files and the head of each chain this broker wrote.
    const checkpointDir = join(broker.dataDir, 'checkpoints')
    // One subdirectory per database (src/audit/checkpoint.ts).
    const files = (await readdir(checkpointDir, { recursive: true }).catch(() => [] as string[])).filter(
      (f) => f.endsWith('.jws') && !basename(f).startsWith('.'),
    )
    const checkpoints = await Promise.all(files.map(async (f) => payloadOf((await readFile(join(checkpointDir, f), 'utf8')).trim())))
    const heads = await sql<{ chain_id: string; seq: number; hash: string; n: number }[]>`
      select distinct on (chain_id) chain_id, seq::int as seq, hash, (count(*) over (partition by chain_id))::int as n
      from audit_log where instance = ${TERM_INSTANCE} order by chain_id, seq desc`

    console.log(
      `audit durability, SIGTERM: ${LOOPS} loops, ${answers.length} answers, by status ${JSON.stringify(byStatus)}; ` +
        `exit ${String(exitCode)}${exitSignal === null ? '' : ` (${String(exitSignal)})`} ${exitMs.toFixed(0)} ms after SIGTERM; ` +
        `200s to requests sent after SIGTERM ${okAfterTerm.length}, the last ${okAfterTerm.length === 0 ? '-' : Math.max(...okAfterTerm.map((a) => a[1])) - sigtermAt} ms after it; ` +
        `${describeReconcile(r, returned)}; ` +
        `'audit log closed' ${JSON.stringify(closed.map(({ records, groups, failed_groups, group_size, checkpoint_seq }) => ({ records, groups, failed_groups, group_size, checkpoint_seq })))}; ` +
        `chains ${JSON.stringify(heads.map((h) => ({ chain: h.chain_id, rows: h.n, head_seq: h.seq })))}; ` +
        `checkpoints ${JSON.stringify(checkpoints.map((c) => ({ chain: c['chain'], seq: c['seq'] })))}; ` +
        `other log lines ${JSON.stringify(
          broker.lines
            .filter((l) => l['level'] !== 'info' || ['shutting down', 'audit checkpoint'].includes(String(l['msg'])))
            .slice(-5)
            .map((l) => ({ level: l['level'], msg: l['msg'], seq: l['seq'] })),
        )}`,
    )

    // Nothing but 200, 503 (refused once the log is closing) and, once the port is closed, connection errors.
    expect(Object.keys(byStatus).filter((s) => !['200', '503', '0'].includes(s))).toEqual([])
    expect(ok.length).toBeGreaterThan(0)
    // Every token that left the broker has its row (and none is marked withheld).
    expect(r.missingRow, 'tokens answered 200 with no token.issued row').toEqual([])
    expect(r.answeredButWithheld).toEqual([])
    expect(heads.length).toBeGreaterThan(0)
    for (const head of heads) expect(head.n).toBe(head.seq)

    // SIGTERM under steady keep-alive load: responses carry Connection: close from the signal on, so
    // server.close() completes, mandate.close() flushes the log and writes the last checkpoints.
    expect.soft({ exitCode, exitSignal }, 'a clean exit, not serve.ts forcing exit(1) after 10 s').toEqual({ exitCode: 0, exitSignal: null })
    expect.soft(closed.length, "one 'audit log closed' line on stdout").toBe(1)
    // Under a clean close every answered request ended before close(): the log claims no token that never left.
    expect.soft(r.issuedNeverAnswered, 'token.issued rows (not withheld) for tokens never answered 200').toEqual([])
    // The last checkpoint of each chain is its head in the database: nothing was written after it.
    for (const head of heads) {
      const last = checkpoints.filter((c) => c['chain'] === head.chain_id).sort((x, y) => Number(y['seq']) - Number(x['seq']))[0]
      expect.soft(last, `a checkpoint for chain ${head.chain_id} in ${checkpointDir}`).toBeDefined()
      expect.soft({ seq: last?.['seq'], head: last?.['head'] }, 'the last checkpoint is the chain head').toEqual({ seq: head.seq, head: head.hash })
    }
    if (closed[0] !== undefined) {
      // One line for the whole log: every chain this process wrote, and the lowest last-checkpoint seq among them.
      expect.soft(closed[0]['chains']).toEqual(expect.arrayContaining(heads.map((h) => h.chain_id)))
      expect.soft(closed[0]['checkpoint_seq']).toBe(Math.min(...heads.map((h) => h.seq)))
    }
  }, 40_000)

  it('every chain in the log verifies: seq from 1 without gaps, prev_hash linked, hash = sha256(prev_hash "\\n" record)', async () => {
    const rows = await sql<{ chain_id: string; seq: number; instance: string; record: string; prev_hash: string; hash: string }[]>`
      select chain_id, seq::int as seq, instance, record, prev_hash, hash from audit_log order by chain_id, seq`
    const problems: string[] = []
    const chains = new Map<string, { instance: string; rows: number }>()
    let previous: { chain: string; seq: number; hash: string } | undefined
    for (const row of rows) {
      const fresh = previous === undefined || previous.chain !== row.chain_id
      const expectedSeq = fresh ? 1 : previous!.seq + 1
      const expectedPrev = fresh ? GENESIS : previous!.hash
      const where = `${row.chain_id}#${row.seq}`
      if (row.seq !== expectedSeq) problems.push(`${where}: seq ${row.seq}, expected ${expectedSeq}`)
      if (row.prev_hash !== expectedPrev) problems.push(`${where}: prev_hash does not link to the previous record`)
      const hash = createHash('sha256').update(row.prev_hash).update('\n').update(row.record, 'utf8').digest('hex')
      if (hash !== row.hash) problems.push(`${where}: hash does not match sha256(prev_hash + "\\n" + record)`)
      const doc = JSON.parse(row.record) as { chain?: unknown; seq?: unknown }
      if (doc.chain !== row.chain_id || doc.seq !== row.seq) problems.push(`${where}: record names ${String(doc.chain)}#${String(doc.seq)}`)
      const c = chains.get(row.chain_id) ?? { instance: row.instance, rows: 0 }
      c.rows++
      chains.set(row.chain_id, c)
      previous = { chain: row.chain_id, seq: row.seq, hash: row.hash }
    }
    console.log(
      `audit durability, hash chains: ${rows.length} rows in ${chains.size} chains ${JSON.stringify([...chains].map(([chain, c]) => ({ chain, ...c })))}; ` +
        `${problems.length} problems`,
    )
    expect(rows.length).toBeGreaterThan(0)
    expect([...new Set([...chains.values()].map((c) => c.instance))].sort()).toEqual([CUT_INSTANCE, FLAP_INSTANCE, TERM_INSTANCE].sort())
    expect(problems.slice(0, 20)).toEqual([])
  }, 15_000)
})
