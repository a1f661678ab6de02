/**
 * `listen.admin_port` (MANDATE_ADMIN_PORT) on a real `mandate serve` process:
 * the admin API answers only on that port and nothing but health answers
 * there; with PostgreSQL and Redis it is served by a thread of its own whose
 * kills reach the token endpoint of the same process through Redis; without
 * them by the process's own loop, which it says; a port it cannot open stops
 * the start.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../support/net.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'
import { logSink } from '../support/log-sink.js'

const root = new URL('../../', import.meta.url).pathname
const ADMIN = { authorization: 'Bearer demo-admin-key', 'content-type': 'application/json' }
const AGENT = { authorization: `Basic ${Buffer.from('demo-agent:demo-secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' }
const redisUp = await redisAvailable('admin-port.test.ts')

interface Broker {
  readonly child: ChildProcess
  readonly base: string
  readonly admin: string
  readonly lines: string[]
  readonly exited: Promise<number | null>
}

interface Stopped {
  readonly code: number | null
  readonly lines: string[]
}

/** `mandate serve --dev` with an admin port; resolves once both ports answer /readyz, or with its exit when it stops first. */
async function startBroker(env: Record<string, string>, dataDir: string, adminPort?: number): Promise<Broker | Stopped> {
  const port = await freePort()
  const admin = adminPort ?? (await freePort())
  const child = spawn(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--dev'], {
    cwd: root,
    env: { ...process.env, ...env, PORT: String(port), MANDATE_ADMIN_PORT: String(admin), MANDATE_DATA_DIR: dataDir, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  const sink = logSink('admin-port broker')
  const keep = (d: Buffer) => {
    sink(d)
    lines.push(...d.toString().split('\n').filter(Boolean))
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  const broker = { child, base: `http://127.0.0.1:${port}`, admin: `http://127.0.0.1:${admin}`, lines, exited }
  const ready = (url: string) =>
    fetch(`${url}/readyz`).then(
      (r) => r.ok,
      () => false,
    )
  for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
    if (child.exitCode !== null) {
      await exited
      return { code: child.exitCode, lines }
    }
    if ((await ready(broker.base)) && (await ready(broker.admin))) return broker
    await new Promise((r) => setTimeout(r, 100))
  }
  child.kill('SIGKILL')
  throw new Error(`broker not ready in 60 s: ${lines.slice(-5).join('\n')}`)
}

async function stopBroker(b: Broker): Promise<number | null> {
  if (b.child.exitCode !== null) return b.child.exitCode
  b.child.kill('SIGTERM')
  const timer = setTimeout(() => b.child.kill('SIGKILL'), 15_000)
  const code = await b.exited
  clearTimeout(timer)
  return code
}

async function exchange(b: Broker): Promise<Response> {
  const user = (await (await fetch(`${b.base}/dev/users/alice/token`, { method: 'POST', body: '{"scope":"demo:read"}' })).json()) as { access_token: string }
  return fetch(`${b.base}/oauth2/token`, {
    method: 'POST',
    headers: AGENT,
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: user.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience: 'https://demo.example',
      scope: 'demo:read',
    }),
  })
}

/** Each port answers only its own routes; health on both. */
async function expectSeparatePorts(b: Broker): Promise<void> {
  for (const url of [b.base, b.admin]) {
    expect((await fetch(`${url}/healthz`)).status).toBe(200)
    expect((await fetch(`${url}/readyz`)).status).toBe(200)
  }
  const onPublic = await fetch(`${b.base}/admin/revocations`, { method: 'POST', headers: ADMIN, body: JSON.stringify({ jti: 'never-stored' }) })
  expect(onPublic.status).toBe(404)
  expect(onPublic.headers.get('cache-control')).toBe('no-store')
  expect(await onPublic.json()).toEqual({ error: 'not_found', error_description: 'no such route on this port' })
  expect((await fetch(`${b.base}/admin/revocations`, { headers: ADMIN })).status).toBe(404)
  expect((await fetch(`${b.admin}/oauth2/token`, { method: 'POST', headers: AGENT, body: 'grant_type=x' })).status).toBe(404)
  expect((await fetch(`${b.admin}/.well-known/jwks.json`)).status).toBe(404)
  expect((await fetch(`${b.base}/.well-known/jwks.json`)).status).toBe(200)
  // The console is the admin API's client: it lives on the admin port with it, never on the public one.
  expect((await fetch(`${b.base}/console/sign-in`)).status).toBe(404)
  expect((await fetch(`${b.admin}/console/sign-in`)).status).toBe(200)
  const signedIn = await fetch(`${b.admin}/console/dev/sign-in`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'person=vera',
  })
  expect(signedIn.status).toBe(303)
  const cookie = signedIn.headers.getSetCookie()[0]!.split(';')[0]!
  const agents = await fetch(`${b.admin}/console/agents`, { headers: { cookie } })
  expect(agents.status).toBe(200)
  expect(await agents.text()).toContain('demo-agent')
}

const logged = (b: Broker, msg: string) =>
  b.lines.flatMap((l) => {
    try {
      const j = JSON.parse(l) as Record<string, unknown>
      return j['msg'] === msg ? [j] : []
    } catch {
      return []
    }
  })

describePostgres('admin port, PostgreSQL + Redis: a thread of its own', () => {
  let db: TestDatabase
  let dataDir: string
  let broker: Broker
  const prefix = `mandate-test-admin-port-${randomBytes(4).toString('hex')}:`
  const env = () => ({ DATABASE_URL: db.url, REDIS_URL, MANDATE_REDIS_PREFIX: prefix })

  beforeAll(async () => {
    if (!redisUp) return
    db = await createTestDatabase()
    dataDir = await mkdtemp(join(tmpdir(), 'mandate-admin-port-'))
    const started = await startBroker(env(), dataDir)
    if (!('child' in started)) throw new Error(`broker exited ${String(started.code)}: ${started.lines.join('\n')}`)
    broker = started
  }, 90_000)

  afterAll(async () => {
    if (!redisUp) return
    if (broker !== undefined) await stopBroker(broker)
    await db?.drop()
    const redis = new Redis(REDIS_URL)
    await deletePrefix(redis, prefix)
    redis.disconnect()
    if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true })
  }, 30_000)

  it.skipIf(!redisUp)('serves the admin API on its own port from a thread, and nothing else there', async () => {
    const listening = logged(broker, 'mandate listening')[0]
    expect(listening).toMatchObject({ admin_thread: true })
    expect(logged(broker, 'admin API listening on a thread of its own')).toHaveLength(1)
    await expectSeparatePorts(broker)
  })

  it.skipIf(!redisUp)('a kill made on the admin port holds at the token endpoint of the same process', async () => {
    expect((await exchange(broker)).status).toBe(200)
    const kill = await fetch(`${broker.admin}/admin/revocations`, {
      method: 'POST',
      headers: ADMIN,
      body: JSON.stringify({ agent: 'demo-agent', reason: 'admin port test' }),
    })
    expect(kill.status).toBe(201)
    const { id } = (await kill.json()) as { id: string }
    // The thread's kill reaches this process's mirror through the Redis stream.
    let status = 200
    for (const deadline = Date.now() + 5_000; Date.now() < deadline && status === 200;) {
      status = (await exchange(broker)).status
      if (status === 200) await new Promise((r) => setTimeout(r, 50))
    }
    expect(status).toBe(400)
    // The thread writes its own audit chain; the record is there to read.
    const audit = await fetch(`${broker.admin}/admin/audit?event=revocation.created`, { headers: ADMIN })
    expect(audit.status).toBe(200)
    expect(JSON.stringify(await audit.json())).toContain(id)
    expect((await fetch(`${broker.admin}/admin/revocations/${id}`, { method: 'DELETE', headers: ADMIN })).status).toBe(200)
  })

  it.skipIf(!redisUp)(
    'stops the thread with the process: SIGTERM exits 0',
    async () => {
      expect(await stopBroker(broker)).toBe(0)
    },
    30_000,
  )

  it.skipIf(!redisUp)(
    'a port the thread cannot open stops the start (exit 1, the reason on stderr)',
    async () => {
      const taken = createServer()
      await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
      const port = (taken.address() as { port: number }).port
      const dir = await mkdtemp(join(tmpdir(), 'mandate-admin-port-'))
      try {
        const started = await startBroker(env(), dir, port)
        if ('child' in started) await stopBroker(started)
        expect(started).toMatchObject({ code: 1 })
        expect(started.lines.join('\n')).toContain(`mandate: cannot start: mandate admin thread: cannot listen on 127.0.0.1:${port}: EADDRINUSE`)
      } finally {
        taken.close()
        await rm(dir, { recursive: true, force: true })
      }
    },
    90_000,
  )
})

describe('admin port, embedded: the process’s own loop', () => {
  let dataDir: string
  let broker: Broker

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mandate-admin-port-'))
    const started = await startBroker({ DATABASE_URL: '', REDIS_URL: '' }, dataDir)
    if (!('child' in started)) throw new Error(`broker exited ${String(started.code)}: ${started.lines.join('\n')}`)
    broker = started
  }, 90_000)

  afterAll(async () => {
    if (broker !== undefined) await stopBroker(broker)
    await rm(dataDir, { recursive: true, force: true })
  }, 30_000)

  it('says the admin port shares the loop, and keeps the ports apart', async () => {
    expect(logged(broker, 'mandate listening')[0]).toMatchObject({ admin_thread: false })
    expect(
      logged(broker, 'the admin port shares this process’s event loop (its thread needs PostgreSQL and Redis): a token flood delays the kill switch'),
    ).toHaveLength(1)
    await expectSeparatePorts(broker)
    expect((await exchange(broker)).status).toBe(200)
    const kill = await fetch(`${broker.admin}/admin/revocations`, {
      method: 'POST',
      headers: ADMIN,
      body: JSON.stringify({ agent: 'demo-agent', reason: 'admin port test' }),
    })
    expect(kill.status).toBe(201)
    expect((await exchange(broker)).status).toBe(400)
  })
})
