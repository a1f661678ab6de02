/**
 * GET /revocations/feed (server-sent events): RBAC on the real app, then the
 * stream itself on a tiny app over an observed in-memory mirror: snapshot
 * first, one event per applied record with increasing ids, heartbeats that
 * carry the broker's freshness, exact resumes with Last-Event-ID (and a
 * snapshot when a resume cannot be served), a snapshot after a resync, and
 * streams that end (with their timers) on disconnect, on shutdown and when a
 * client stops reading.
 */
import { createHash, randomUUID } from 'node:crypto'
import { Hono } from 'hono'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import type { AgentId, Jti } from '../../../src/core/claims.js'
import type { AppEnv } from '../../../src/http/env.js'
import { AdminError, renderError } from '../../../src/http/oauth-errors.js'
import { mountRevocationFeed, type RevocationFeedDeps } from '../../../src/http/routes/revocation-feed.js'
import { decodeHeartbeat, decodeSnapshot } from '@mandate/verifier/feed-wire'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { Revocation } from '../../../src/revocation/port.js'
import { decodeRevocation } from '@mandate/verifier/codec'
import { observeMirror } from '../../../src/revocation/service.js'
import { SseParser, type SseEvent } from '../../../packages/verifier/src/sse.js'
import {
  ADMIN_KEYS,
  basic,
  bearer,
  CLIENT_ASSERTION_TYPE_JWT,
  encodeForm,
  RESOURCE_SERVERS,
  RS_SECRET,
  SECRET,
  startTestBroker,
  T0,
  type TestBroker,
} from '../../support/broker.js'

const KEY = 'feed-reader-key-0123456789'

function record(jti: string, extra: Partial<Revocation> = {}): Revocation {
  return {
    id: randomUUID(),
    target: { kind: 'jti', jti: jti as Jti },
    reason: 'test',
    createdBy: 'test',
    createdAt: T0,
    expiresAt: T0 + 3600,
    liftedAt: undefined,
    liftedBy: undefined,
    ...extra,
  }
}

/** Reads a feed response as it arrives. */
function reader(res: Response) {
  const got: SseEvent[] = []
  let ended = false
  // A fetch body is a byte stream; undici-types leaves its chunk type `any`.
  const stream = (res.body as ReadableStream<Uint8Array>).getReader()
  const parser = new SseParser((e) => got.push(e))
  const decoder = new TextDecoder()
  void (async () => {
    try {
      for (;;) {
        const { done, value } = await stream.read()
        if (done) break
        parser.push(decoder.decode(value, { stream: true }))
      }
    } catch {
      // cancelled
    }
    ended = true
  })()
  return {
    got,
    ended: () => ended,
    of: (event: string) => got.filter((e) => e.event === event),
    cancel: () => stream.cancel().catch(() => undefined),
  }
}

/** A tiny app with the feed over an observed mirror whose freshness the test sets. */
function feedApp(limits: Partial<RevocationFeedDeps> = {}) {
  const mirror = observeMirror(createRevocationMirror(() => T0))
  let fresh = true
  let freshCalls = 0
  const app = new Hono<AppEnv>()
  app.onError((err, c) => (err instanceof AdminError ? renderError(c, err) : c.text('unexpected', 500)))
  mountRevocationFeed(app, {
    keys: [{ name: 'reader', sha256: createHash('sha256').update(KEY).digest(), roles: new Set(['auditor']) }],
    revocations: {
      records: () => mirror.records(),
      subscribe: (l, o) => mirror.subscribe(l, o),
      fresh: () => {
        freshCalls++
        return fresh
      },
      lag: () => (fresh ? 3 : 5000),
    },
    ...limits,
  })
  const request = async (lastEventId?: string) => {
    const res = await app.request('/revocations/feed', {
      headers: { ...bearer(KEY), ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) },
    })
    expect(res.status).toBe(200)
    return res
  }
  return {
    mirror,
    request,
    open: async (lastEventId?: string) => reader(await request(lastEventId)),
    setFresh: (v: boolean) => void (fresh = v),
    freshCalls: () => freshCalls,
  }
}

const recordsOf = (e: SseEvent) => decodeSnapshot(e.data)!.records.map((r) => r.id)
const WAIT = { timeout: 2000, interval: 10 }

describe('GET /revocations/feed on the broker', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker()
  })
  afterAll(() => b.close())

  it('refuses a missing key, a wrong key and a key without read', async () => {
    for (const headers of [{}, bearer('not-a-key'), bearer(`${ADMIN_KEYS.auditor}x`)]) {
      const res = await b.mandate.app.request('/revocations/feed', { headers })
      expect(res.status).toBe(401)
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /)
      expect(((await res.json()) as { error: string }).error).toBe('unauthorized')
    }
    const res = await b.mandate.app.request('/revocations/feed', { headers: bearer(ADMIN_KEYS.responder) })
    expect(res.status).toBe(403)
    expect(((await res.json()) as { error: string }).error).toBe('forbidden')
  })

  it.each(['auditor', 'admin'] as const)('streams to a %s key: a snapshot of the mirror, then what the broker revokes', async (role) => {
    const before = await b.revocations.revokeToken(`before-${role}` as Jti)
    const res = await b.mandate.app.request('/revocations/feed', { headers: bearer(ADMIN_KEYS[role]) })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const feed = reader(res)
    await vi.waitFor(() => expect(feed.got.length).toBeGreaterThan(0), WAIT)
    expect(feed.got[0]!.event).toBe('snapshot')
    expect(recordsOf(feed.got[0]!)).toContain(before)
    const after = await b.revocations.killAgent(`agent-${role}` as AgentId)
    await vi.waitFor(() => expect(feed.of('revocation').map((e) => decodeRevocation(e.data)?.id)).toContain(after), WAIT)
    await feed.cancel()
  })

  describe('resource-server credentials', () => {
    const assertionForm = async (assertion: Promise<string>) =>
      encodeForm({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: await assertion })
    const postFeed = (body: string, headers: Record<string, string> = {}) =>
      Promise.resolve(
        b.mandate.app.request('/revocations/feed', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body }),
      )
    const opened = () => b.audit.events().filter((e) => e.type === 'admin.feed.opened')

    /** A 200 event stream whose first event is a snapshot holding `id`. */
    async function expectStream(res: Response, id: string): Promise<void> {
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
      const feed = reader(res)
      await vi.waitFor(() => expect(feed.got.length).toBeGreaterThan(0), WAIT)
      expect(feed.got[0]!.event).toBe('snapshot')
      expect(recordsOf(feed.got[0]!)).toContain(id)
      await feed.cancel()
    }

    it('streams to a resource server on GET with Basic, and records who opened it', async () => {
      const id = await b.revocations.revokeToken('rs-basic' as Jti)
      const before = opened().length
      await expectStream(await b.mandate.app.request('/revocations/feed', { headers: basic(RESOURCE_SERVERS.api, RS_SECRET) }), id)
      expect(opened().slice(before)).toEqual([expect.objectContaining({ type: 'admin.feed.opened', by: RESOURCE_SERVERS.api })])
    })

    it('streams to a resource server on POST with a client assertion in the body (RFC 7521 §4.2), one per connection', async () => {
      const id = await b.revocations.revokeToken('rs-jwt' as Jti)
      const body = await assertionForm(b.rsAssertion())
      await expectStream(await postFeed(body), id)
      expect(opened().at(-1)).toMatchObject({ by: RESOURCE_SERVERS.other })
      // The same assertion again is a replay.
      const replay = await postFeed(body)
      expect(replay.status).toBe(401)
      expect(((await replay.json()) as { error: string }).error).toBe('unauthorized')
    })

    it('streams on POST with Basic or an admin key too (the same credentials either way)', async () => {
      const id = await b.revocations.revokeToken('rs-post' as Jti)
      await expectStream(await postFeed('', basic(RESOURCE_SERVERS.api, RS_SECRET)), id)
      await expectStream(await postFeed('', bearer(ADMIN_KEYS.auditor)), id)
    })

    it.each([
      ['an agent’s credentials', () => ({ headers: basic('secret-agent', SECRET) })],
      ['a wrong resource-server secret', () => ({ headers: basic(RESOURCE_SERVERS.api, 'not-the-secret-at-all') })],
      ['an unknown resource server', () => ({ headers: basic('rs/nobody', RS_SECRET) })],
      ['a malformed Basic header', () => ({ headers: { authorization: 'Basic !!!' } })],
    ] as const)('refuses %s → 401 unauthorized, and opens nothing', async (_name, request) => {
      const before = opened().length
      const res = await b.mandate.app.request('/revocations/feed', request())
      expect(res.status).toBe(401)
      expect(res.headers.get('www-authenticate')).not.toBeNull()
      expect(((await res.json()) as { error: string }).error).toBe('unauthorized')
      expect(opened().length).toBe(before)
    })

    it('refuses an agent’s assertion, a wrong key, and an assertion in the query string', async () => {
      for (const body of [
        await assertionForm(b.assertion()),
        await assertionForm(b.assertion({ iss: RESOURCE_SERVERS.other, sub: RESOURCE_SERVERS.other })),
        await assertionForm(b.rsAssertion({ aud: 'https://elsewhere.test' })),
      ]) {
        expect((await postFeed(body)).status).toBe(401)
      }
      const query = await assertionForm(b.rsAssertion())
      expect((await b.mandate.app.request(`/revocations/feed?${query}`)).status).toBe(401)
    })

    it('refuses two methods at once, and an unreadable body → 400 invalid_request', async () => {
      const both = await postFeed(await assertionForm(b.rsAssertion()), basic(RESOURCE_SERVERS.api, RS_SECRET))
      expect(both.status).toBe(400)
      expect(((await both.json()) as { error: string }).error).toBe('invalid_request')
      const json = await b.mandate.app.request('/revocations/feed', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
      expect(json.status).toBe(400)
    })
  })
})

describe('the feed stream', () => {
  it('sends a snapshot, then each applied record with an increasing id, and heartbeats with the freshness', async () => {
    const f = feedApp()
    const first = record('j1')
    f.mirror.apply(first)
    const feed = await f.open()
    await vi.waitFor(() => expect(feed.got.length).toBeGreaterThan(0), WAIT)
    const [snapshot] = feed.got
    expect(snapshot!.event).toBe('snapshot')
    expect(decodeSnapshot(snapshot!.data)).toMatchObject({ fresh: true, records: [first] })
    const made = [record('j2'), record('j3'), record('j4')]
    for (const r of made) f.mirror.apply(r)
    await vi.waitFor(() => expect(feed.of('revocation')).toHaveLength(3), WAIT)
    const events = feed.of('revocation')
    expect(events.map((e) => decodeRevocation(e.data))).toEqual(made)
    const seq = [snapshot!, ...events].map((e) => Number(e.id!.split('.')[1]))
    expect(seq).toEqual([...seq].sort((a, b) => a - b))
    expect(new Set(seq).size).toBe(seq.length)

    await vi.waitFor(() => expect(feed.of('heartbeat').length).toBeGreaterThanOrEqual(2), WAIT)
    for (const h of feed.of('heartbeat')) {
      expect(h.id).toBeUndefined()
      expect(decodeHeartbeat(h.data)).toEqual({ fresh: true, lagMs: 3 })
    }
    f.setFresh(false)
    await vi.waitFor(() => expect(decodeHeartbeat(feed.of('heartbeat').at(-1)!.data)?.fresh).toBe(false), WAIT)
    await feed.cancel()
  })

  it('sends a record re-applied unchanged (the Redis echo of a local revocation) once, and its lifted version again', async () => {
    const f = feedApp()
    const feed = await f.open()
    const kill: Revocation = { ...record('k'), target: { kind: 'agent', agent: 'rogue' as AgentId }, expiresAt: undefined }
    f.mirror.apply(kill)
    f.mirror.apply(kill)
    const lifted = { ...kill, liftedAt: T0 + 5, liftedBy: 'test' }
    f.mirror.apply(lifted)
    f.mirror.apply(lifted)
    await vi.waitFor(() => expect(feed.of('revocation')).toHaveLength(2), WAIT)
    await new Promise((r) => setTimeout(r, 50))
    expect(feed.of('revocation').map((e) => decodeRevocation(e.data))).toEqual([kill, lifted])
    await feed.cancel()
  })

  it('replays exactly what a resuming client missed, without a snapshot', async () => {
    const f = feedApp()
    const feed = await f.open()
    const [a, b2, c] = [record('a'), record('b'), record('c')]
    f.mirror.apply(a)
    f.mirror.apply(b2)
    await vi.waitFor(() => expect(feed.of('revocation')).toHaveLength(2), WAIT)
    const resumeFrom = feed.of('revocation')[0]!.id!
    await feed.cancel()
    f.mirror.apply(c)

    const resumed = await f.open(resumeFrom)
    await vi.waitFor(() => expect(resumed.of('revocation')).toHaveLength(2), WAIT)
    expect(resumed.of('snapshot')).toHaveLength(0)
    expect(resumed.of('revocation').map((e) => decodeRevocation(e.data))).toEqual([b2, c])
    // Up to date: nothing to replay, straight to heartbeats.
    const current = await f.open(resumed.of('revocation')[1]!.id)
    await vi.waitFor(() => expect(current.of('heartbeat').length).toBeGreaterThan(0), WAIT)
    expect(current.got.filter((e) => e.event !== 'heartbeat')).toHaveLength(0)
    await resumed.cancel()
    await current.cancel()
  })

  it('sends a snapshot when a resume cannot be served exactly', async () => {
    const f = feedApp({ journalSize: 2 })
    const feed = await f.open()
    await vi.waitFor(() => expect(feed.of('snapshot')).toHaveLength(1), WAIT)
    const snapshotId = feed.of('snapshot')[0]!.id!
    const [instance] = snapshotId.split('.')
    for (let i = 0; i < 10; i++) f.mirror.apply(record(`r${i}`))
    await vi.waitFor(() => expect(feed.of('revocation')).toHaveLength(10), WAIT)
    await feed.cancel()
    // Too old for the journal, another process's id, one from the future, garbage.
    for (const id of [snapshotId, `ffffffffffffffff.3`, `${instance!}.99`, 'garbage', '']) {
      const again = await f.open(id)
      await vi.waitFor(() => expect(again.got.length).toBeGreaterThan(0), WAIT)
      expect(again.got[0]!.event, id).toBe('snapshot')
      expect(recordsOf(again.got[0]!)).toHaveLength(10)
      await again.cancel()
    }
  })

  it('sends a fresh snapshot after the mirror resynced, and resumes from before it get one too', async () => {
    const f = feedApp()
    f.mirror.apply(record('old'))
    const feed = await f.open()
    await vi.waitFor(() => expect(feed.of('snapshot')).toHaveLength(1), WAIT)
    const beforeResync = feed.of('snapshot')[0]!.id!
    const replacement = [record('x'), record('y')]
    f.mirror.replaceAll(replacement)
    await vi.waitFor(() => expect(feed.of('snapshot')).toHaveLength(2), WAIT)
    expect(recordsOf(feed.of('snapshot')[1]!)).toEqual(replacement.map((r) => r.id))
    await feed.cancel()
    const resumed = await f.open(beforeResync)
    await vi.waitFor(() => expect(resumed.got.length).toBeGreaterThan(0), WAIT)
    expect(resumed.got[0]!.event).toBe('snapshot')
    await resumed.cancel()
  })

  it('stops its heartbeats when the client disconnects', async () => {
    const f = feedApp({ heartbeatMs: 20 })
    const feed = await f.open()
    await vi.waitFor(() => expect(feed.of('heartbeat').length).toBeGreaterThanOrEqual(3), WAIT)
    await feed.cancel()
    await new Promise((r) => setTimeout(r, 60))
    const calls = f.freshCalls()
    await new Promise((r) => setTimeout(r, 200))
    expect(f.freshCalls()).toBe(calls)
  })

  it('ends every stream when the service ends its subscriptions, and opens none after', async () => {
    const f = feedApp({ heartbeatMs: 20 })
    const feeds = [await f.open(), await f.open()]
    await vi.waitFor(() => expect(feeds.every((s) => s.got.length > 0)).toBe(true), WAIT)
    f.mirror.end()
    await vi.waitFor(() => expect(feeds.every((s) => s.ended())).toBe(true), WAIT)
    const calls = f.freshCalls()
    const late = await f.open()
    await vi.waitFor(() => expect(late.ended()).toBe(true), WAIT)
    expect(late.got).toHaveLength(0)
    await new Promise((r) => setTimeout(r, 100))
    expect(f.freshCalls()).toBe(calls)
  })

  it('cuts off a client that stops reading once its queue passes the bound', async () => {
    const f = feedApp({ maxQueue: 5, heartbeatMs: 20 })
    // Nobody reads this response until the flood is over.
    const unread = await f.request()
    for (let i = 0; i < 200; i++) f.mirror.apply(record(`flood-${i}`))
    const rest = reader(unread)
    await vi.waitFor(() => expect(rest.ended()).toBe(true), WAIT)
    expect(rest.of('revocation').length).toBeLessThan(200)
  })
})

describe('the propagation notes of the feed', () => {
  it('notes each stream (who opened it), its snapshot, each record written to it, a resume’s replay, and its end', async () => {
    const { createMemoryPropagationStore, createPropagationTracker, sentAtOf } = await import('../../../src/revocation/propagation.js')
    const { pino } = await import('pino')
    let now = T0 * 1000
    const clock = () => now
    const store = createMemoryPropagationStore(clock)
    const mirror = observeMirror(createRevocationMirror(() => T0))
    const tracker = createPropagationTracker({
      instance: 'i1',
      store,
      subscribe: (l, o) => mirror.subscribe(l, o),
      records: () => mirror.records(),
      clock,
      logger: pino({ enabled: false }),
    })
    const app = new Hono<AppEnv>()
    mountRevocationFeed(app, {
      keys: [{ name: 'reader', sha256: createHash('sha256').update(KEY).digest(), roles: new Set(['auditor']) }],
      revocations: { records: () => mirror.records(), subscribe: (l, o) => mirror.subscribe(l, o), fresh: () => true, lag: () => 0 },
      propagation: tracker,
      clock,
    })
    const open = async (lastEventId?: string) =>
      reader(await app.request('/revocations/feed', { headers: { ...bearer(KEY), ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) } }))
    const feed = await open()
    await vi.waitFor(() => expect(feed.of('snapshot')).toHaveLength(1), WAIT)
    const snapshotAt = now
    now += 1000
    const [a, b2] = [record('a'), record('b')]
    mirror.apply(a)
    await vi.waitFor(() => expect(feed.of('revocation')).toHaveLength(1), WAIT)
    const seenA = await vi.waitFor(async () => {
      const s = await tracker.read(a.id)
      expect(s.feeds).toHaveLength(1)
      expect(s.sent.size).toBe(1)
      return s
    }, WAIT)
    expect(seenA.feeds[0]).toMatchObject({ subscriber: 'admin:reader', instance: 'i1', snapshotAt })
    // Its own event, after the snapshot: the snapshot did not hold it.
    expect(sentAtOf(seenA.feeds[0]!, seenA)).toBe(now)
    const resumeFrom = feed.of('revocation')[0]!.id!
    await feed.cancel()
    await vi.waitFor(async () => expect((await tracker.read(a.id)).feeds).toHaveLength(0), WAIT)

    // Missed while away, replayed on resume: noted for the new stream.
    mirror.apply(b2)
    const resumed = await open(resumeFrom)
    await vi.waitFor(() => expect(resumed.of('revocation')).toHaveLength(1), WAIT)
    await vi.waitFor(async () => {
      const s = await tracker.read(b2.id)
      expect(s.feeds).toHaveLength(1)
      expect(sentAtOf(s.feeds[0]!, s)).toBe(now)
    }, WAIT)
    await resumed.cancel()
    await tracker.close()
  })
})
