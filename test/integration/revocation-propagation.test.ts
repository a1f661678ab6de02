/**
 * GET /admin/revocations/{id}/propagation through composed brokers, with a
 * real feed subscriber (a resource server reading /revocations/feed over
 * HTTP, as server-sent events):
 * - on PGlite (`embedded`, no Redis): the process is the only instance; a
 *   kill shows it applied and sent to the open stream, a stream opened after
 *   the kill has it by its snapshot, and a poll SSF receiver keeps `complete`
 *   false until it acknowledges the SETs;
 * - on PostgreSQL and Redis, two brokers on one key prefix: a kill through A
 *   shows both instances applied and the stream open on B sent; once B stops
 *   it leaves the live list (and its stream with it).
 * Unknown id: 404; no key: 401.
 */
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RevocationPropagation } from '../../src/http/routes/admin-revocation-propagation.js'
import { ADMIN_KEYS, RESOURCE_SERVERS, RS_SECRET, basic, bearer, startTestBroker, type TestBroker } from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { deletePrefix, REDIS_URL, redisAvailable } from '../support/redis.js'

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

async function until<T>(what: string, read: () => Promise<T>, test: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await read()
    if (test(value)) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`)
    await sleep(20)
  }
}

/** A broker served over HTTP on loopback (the feed is a long-lived stream). */
async function serveOnLoopback(b: TestBroker): Promise<{ url: string; stop(): Promise<void> }> {
  const server: ServerType = serve({ fetch: (req) => b.mandate.app.fetch(req), port: 0, hostname: '127.0.0.1' })
  await new Promise<void>((resolve) => server.once('listening', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as import('node:http').Server).closeAllConnections()
      }),
  }
}

/** A resource server following the feed: keeps every byte it read. */
async function subscribe(url: string): Promise<{ text: () => string; close(): void }> {
  const abort = new AbortController()
  const res = await fetch(`${url}/revocations/feed`, { headers: basic(RESOURCE_SERVERS.api, RS_SECRET), signal: abort.signal })
  expect(res.status).toBe(200)
  let text = ''
  const decoder = new TextDecoder()
  void (async () => {
    for await (const chunk of res.body! as AsyncIterable<Uint8Array>) text += decoder.decode(chunk, { stream: true })
  })().catch(() => {})
  // The opening snapshot has been read: the stream is open and noted.
  await until(
    'the snapshot',
    async () => text,
    (t) => t.includes('event: snapshot'),
  )
  return { text: () => text, close: () => abort.abort() }
}

async function kill(b: TestBroker, agent: string): Promise<string> {
  const res = await b.mandate.app.request('/admin/revocations', {
    method: 'POST',
    headers: { ...bearer(ADMIN_KEYS.responder), 'content-type': 'application/json' },
    body: JSON.stringify({ agent, reason: 'propagation test' }),
  })
  expect(res.status).toBe(201)
  return ((await res.json()) as { id: string }).id
}

async function propagation(b: TestBroker, id: string, headers: Record<string, string> = bearer(ADMIN_KEYS.auditor)): Promise<Response> {
  return b.mandate.app.request(`/admin/revocations/${id}/propagation`, { headers })
}
const read = async (b: TestBroker, id: string) => {
  const res = await propagation(b, id)
  expect(res.status).toBe(200)
  // The documented body, exactly (a strict schema: no field more or less).
  return RevocationPropagation.parse(await res.json())
}

describe('propagation on PGlite (one process, no Redis)', () => {
  let b: TestBroker
  let served: Awaited<ReturnType<typeof serveOnLoopback>>
  beforeAll(async () => {
    b = await startTestBroker({
      embedded: true,
      logLevel: 'warn',
      instanceId: 'solo',
      ssf: {
        receivers: [{ name: 'rs-api', audience: 'https://rs-api.test', delivery: { method: 'poll', resource_server: RESOURCE_SERVERS.api } }],
        scan_interval_ms: 50,
      },
    })
    served = await serveOnLoopback(b)
  })
  afterAll(async () => {
    await served?.stop()
    await b?.close()
  })

  it('a kill: applied here, sent to the open stream; complete once the poll receiver acknowledged its SETs', async () => {
    const rs = await subscribe(served.url)
    // The snapshot above was taken at this time; the kill comes a second later.
    b.advance(1)
    const id = await kill(b, 'secret-agent')
    await until(
      'the kill on the stream',
      async () => rs.text(),
      (t) => t.includes(id),
    )
    const queued = await until(
      'the SET queued',
      () => read(b, id),
      (p) => p.ssf_receivers[0]?.state === 'pending' && p.feed_subscribers[0]?.sent_at !== null,
    )
    expect(queued.instances).toEqual([{ instance: 'solo', live: true, applied_at: new Date(b.now() * 1000).toISOString(), last_seen: expect.any(String) }])
    expect(queued.feed_subscribers).toEqual([
      { subscriber: RESOURCE_SERVERS.api, connection: expect.any(String), instance: 'solo', connected_at: expect.any(String), sent_at: expect.any(String) },
    ])
    expect(queued).toMatchObject({ revocation_id: id, kind: 'agent', complete: false })
    expect(queued.ssf_receivers).toEqual([
      { receiver: 'rs-api', method: 'poll', state: 'pending', attempts: 0, last_error: null, enqueued_at: expect.any(String) },
    ])

    const polled = await b.mandate.app.request('/ssf/poll', {
      method: 'POST',
      headers: { ...basic(RESOURCE_SERVERS.api, RS_SECRET), 'content-type': 'application/json' },
      body: JSON.stringify({ returnImmediately: true, maxEvents: 100 }),
    })
    const { sets } = (await polled.json()) as { sets: Record<string, string> }
    await b.mandate.app.request('/ssf/poll', {
      method: 'POST',
      headers: { ...basic(RESOURCE_SERVERS.api, RS_SECRET), 'content-type': 'application/json' },
      body: JSON.stringify({ ack: Object.keys(sets), returnImmediately: true, maxEvents: 0 }),
    })
    const done = await read(b, id)
    expect(done.ssf_receivers[0]?.state).toBe('delivered')
    expect(done.complete).toBe(true)

    // The stream closes: it is no longer listed, and no longer counts.
    rs.close()
    await until(
      'the closed stream gone',
      () => read(b, id),
      (p) => p.feed_subscribers.length === 0,
    )
  })

  it('a stream opened after the kill has it by its snapshot', async () => {
    const id = await kill(b, 'jwt-agent')
    b.advance(1)
    const rs = await subscribe(served.url)
    try {
      expect(rs.text()).toContain(id)
      const p = await until(
        'the snapshot noted',
        () => read(b, id),
        (v) => v.feed_subscribers[0]?.sent_at !== null && v.feed_subscribers[0] !== undefined,
      )
      expect(p.feed_subscribers[0]?.sent_at).toBe(new Date(b.now() * 1000).toISOString())
    } finally {
      rs.close()
    }
  })

  it('unknown id: 404; malformed id: 404; no key: 401; a responder key lacks read: 403', async () => {
    expect((await propagation(b, randomUUID())).status).toBe(404)
    expect((await propagation(b, 'not-an-id')).status).toBe(404)
    const id = await kill(b, 'sub-agent')
    expect((await propagation(b, id, {})).status).toBe(401)
    expect((await propagation(b, id, bearer(ADMIN_KEYS.responder))).status).toBe(403)
  })
})

const redisReachable = await redisAvailable('revocation-propagation')
;(redisReachable ? describePostgres : (describe.skip as typeof describe))('propagation on PostgreSQL and Redis, two brokers', () => {
  let db: TestDatabase
  const prefix = `mandate-test-propagation:${randomUUID()}:`
  let a: TestBroker
  let b: TestBroker
  let servedB: Awaited<ReturnType<typeof serveOnLoopback>>
  let bStopped = false

  beforeAll(async () => {
    db = await createTestDatabase()
    const common = { database: db.url, storage: { redis_url: REDIS_URL, key_prefix: prefix }, logLevel: 'warn' as const }
    a = await startTestBroker({ ...common, instanceId: 'broker-a' })
    b = await startTestBroker({ ...common, instanceId: 'broker-b' })
    servedB = await serveOnLoopback(b)
  })
  afterAll(async () => {
    await servedB?.stop()
    if (!bStopped) await b?.close()
    await a?.close()
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
    try {
      await deletePrefix(redis, prefix)
    } finally {
      redis.disconnect()
    }
    await db?.drop()
  })

  it('a kill through A: both instances applied it, the stream open on B was sent it; complete', async () => {
    const rs = await subscribe(servedB.url)
    a.advance(1)
    b.advance(1)
    const id = await kill(a, 'secret-agent')
    await until(
      'the kill on the stream',
      async () => rs.text(),
      (t) => t.includes(id),
    )
    // B's next heartbeat (every 2 s) carries its clock's new time.
    const p = await until(
      'complete, both live',
      () => read(a, id),
      (v) => v.complete && v.instances.filter((i) => i.live).length === 2,
    )
    expect(p.instances.map((i) => [i.instance, i.live, i.applied_at !== null])).toEqual([
      ['broker-a', true, true],
      ['broker-b', true, true],
    ])
    expect(p.feed_subscribers).toEqual([
      { subscriber: RESOURCE_SERVERS.api, connection: expect.any(String), instance: 'broker-b', connected_at: expect.any(String), sent_at: expect.any(String) },
    ])
    expect(p.ssf_receivers).toEqual([])
    // Either instance answers the same.
    expect((await read(b, id)).instances).toEqual(p.instances)
    rs.close()
  })

  it('an instance that died without leaving (its last heartbeat 7 s old) is not live, nor are its streams; it does not count', async () => {
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
    try {
      const id = await kill(a, 'workload-agent')
      const lastBeat = a.now() * 1000 - 7_000
      await redis.zadd(`${prefix}prop:instances`, lastBeat, 'ghost')
      await redis.hset(`${prefix}prop:feeds:ghost`, 'ghost-stream', JSON.stringify({ s: 'rs/api', c: lastBeat, n: null }))
      const p = await until(
        'B live',
        () => read(a, id),
        (v) => v.instances.some((i) => i.instance === 'broker-b' && i.live),
      )
      expect(p.instances.map((i) => i.instance)).toEqual(['broker-a', 'broker-b'])
      expect(p.feed_subscribers.some((f) => f.instance === 'ghost')).toBe(false)
      expect(
        (
          await until(
            'complete',
            () => read(a, id),
            (v) => v.complete,
          )
        ).complete,
      ).toBe(true)
      // Had it still been beating, it would count (and it never applied the kill).
      await redis.zadd(`${prefix}prop:instances`, a.now() * 1000, 'ghost')
      const alive = await read(a, id)
      expect(alive.instances).toContainEqual({ instance: 'ghost', live: true, applied_at: null, last_seen: expect.any(String) })
      expect(alive.feed_subscribers.map((f) => f.connection)).toContain('ghost-stream')
      expect(alive.complete).toBe(false)
      await redis.zrem(`${prefix}prop:instances`, 'ghost')
    } finally {
      redis.disconnect()
    }
  })

  it('B stops: it leaves the live list with its stream, and no longer counts against complete', async () => {
    const rs = await subscribe(servedB.url)
    const before = await kill(a, 'jwt-agent')
    await until(
      'on the stream',
      async () => rs.text(),
      (t) => t.includes(before),
    )
    await servedB.stop()
    await b.close()
    bStopped = true
    const after = await kill(a, 'sub-agent')
    const p = await read(a, after)
    expect(p.instances).toEqual([{ instance: 'broker-a', live: true, applied_at: expect.any(String), last_seen: expect.any(String) }])
    expect(p.feed_subscribers).toEqual([])
    expect(p.complete).toBe(true)
    // B applied the earlier one before it stopped: still listed, not live.
    const earlier = await read(a, before)
    expect(earlier.instances.map((i) => [i.instance, i.live, i.applied_at !== null])).toEqual([
      ['broker-a', true, true],
      ['broker-b', false, true],
    ])
    rs.close()
  })
})
