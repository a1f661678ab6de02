/**
 * The propagation notes (src/revocation/propagation.ts) and the answer built
 * from them (routes/admin-revocation-propagation.ts `propagationOf`), with
 * the memory store and a real mirror: what counts as sent, what counts as
 * live, when `complete` holds, and that notes are batched off the caller's path.
 */
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { AgentId } from '../../../src/core/claims.js'
import { propagationOf } from '../../../src/http/routes/admin-revocation-propagation.js'
import type { Revocation } from '../../../src/revocation/port.js'
import {
  createMemoryPropagationStore,
  createPropagationTracker,
  isLive,
  LIVE_WINDOW_MS,
  sentAtOf,
  type FeedConnection,
  type PropagationNote,
  type PropagationStore,
  type StoredPropagation,
} from '../../../src/revocation/propagation.js'
import { observeMirror } from '../../../src/revocation/service.js'
import { stateOf } from '../../../src/ssf/delivery-of.js'

const T = 1_800_000_000_000
const record = (id: string, createdAt = T / 1000): Revocation => ({
  id,
  target: { kind: 'agent', agent: 'a' as AgentId },
  reason: 'r',
  createdBy: 'k',
  createdAt,
  expiresAt: undefined,
  liftedAt: undefined,
  liftedBy: undefined,
})
const feed = (over: Partial<FeedConnection> = {}): FeedConnection => ({
  connection: 'c1',
  subscriber: 'rs/api',
  instance: 'i1',
  connectedAt: T,
  snapshotAt: undefined,
  ...over,
})
const stored = (over: Partial<StoredPropagation> = {}): StoredPropagation => ({
  instances: new Map([['i1', T]]),
  applied: new Map(),
  feeds: [],
  sent: new Map(),
  ...over,
})

describe('sentAtOf', () => {
  it('the record’s own event, when written', () => {
    expect(sentAtOf(feed(), stored({ sent: new Map([['c1', T + 5]]) }))).toBe(T + 5)
  })
  it('a snapshot taken once its instance had applied the record (the same millisecond included)', () => {
    expect(sentAtOf(feed({ snapshotAt: T + 9 }), stored({ applied: new Map([['i1', T + 9]]) }))).toBe(T + 9)
  })
  it('not a snapshot taken before the instance applied it', () => {
    expect(sentAtOf(feed({ snapshotAt: T + 8 }), stored({ applied: new Map([['i1', T + 9]]) }))).toBeUndefined()
  })
  it('not a snapshot of another instance’s mirror', () => {
    expect(sentAtOf(feed({ snapshotAt: T + 9 }), stored({ applied: new Map([['i2', T]]) }))).toBeUndefined()
  })
  it('whichever came first', () => {
    const s = stored({ applied: new Map([['i1', T]]), sent: new Map([['c1', T + 20]]) })
    expect(sentAtOf(feed({ snapshotAt: T + 10 }), s)).toBe(T + 10)
  })
})

describe('isLive', () => {
  it('within three heartbeats, not after; never heard is not live', () => {
    expect(isLive(T, T + LIVE_WINDOW_MS)).toBe(true)
    expect(isLive(T, T + LIVE_WINDOW_MS + 1)).toBe(false)
    expect(isLive(undefined, T)).toBe(false)
  })
})

describe('propagationOf: complete', () => {
  const r = record('11111111-1111-4111-8111-111111111111')
  it('every live instance applied, every open stream of a live instance sent, every SSF receiver delivered', () => {
    const s = stored({
      instances: new Map([
        ['i1', T],
        ['i2', T],
        ['gone', T - LIVE_WINDOW_MS - 1],
      ]),
      applied: new Map([
        ['i1', T],
        ['i2', T + 3],
      ]),
      feeds: [feed(), feed({ connection: 'c-gone', instance: 'gone' })],
      sent: new Map([['c1', T + 4]]),
    })
    const p = propagationOf(r, s, [], T + 10)
    expect(p.complete).toBe(true)
    // The gone instance did not apply it: not listed; its stream is not listed either.
    expect(p.instances.map((i) => i.instance)).toEqual(['i1', 'i2'])
    expect(p.feed_subscribers.map((f) => f.connection)).toEqual(['c1'])
  })
  it('false while a live instance has not applied it', () => {
    const s = stored({
      instances: new Map([
        ['i1', T],
        ['i2', T],
      ]),
      applied: new Map([['i1', T]]),
    })
    const p = propagationOf(r, s, [], T)
    expect(p.complete).toBe(false)
    expect(p.instances.find((i) => i.instance === 'i2')).toEqual({ instance: 'i2', live: true, applied_at: null, last_seen: new Date(T).toISOString() })
  })
  it('false while an open stream was not sent it', () => {
    expect(propagationOf(r, stored({ applied: new Map([['i1', T]]), feeds: [feed()] }), [], T).complete).toBe(false)
  })
  it('false while an SSF receiver’s SETs are pending or failed; a stream begun after the revocation does not count', () => {
    const s = stored({ applied: new Map([['i1', T]]) })
    const ssf = (state: 'pending' | 'failed' | 'delivered' | 'before_stream' | 'not_queued') => [
      { receiver: 'siem', method: 'push' as const, state, attempts: 0, lastError: undefined, enqueuedAtMs: undefined },
    ]
    expect(propagationOf(r, s, ssf('pending'), T).complete).toBe(false)
    expect(propagationOf(r, s, ssf('failed'), T).complete).toBe(false)
    expect(propagationOf(r, s, ssf('not_queued'), T).complete).toBe(false)
    expect(propagationOf(r, s, ssf('before_stream'), T).complete).toBe(true)
    expect(propagationOf(r, s, ssf('delivered'), T).complete).toBe(true)
  })
  it('false when no instance is live (the notes cannot be trusted)', () => {
    expect(propagationOf(r, stored({ instances: new Map() }), [], T).complete).toBe(false)
  })
  it('an instance that applied it and stopped is listed, not live, and does not count', () => {
    const s = stored({
      instances: new Map([['i1', T]]),
      applied: new Map([
        ['i1', T],
        ['old', T - 1],
      ]),
    })
    const p = propagationOf(r, s, [], T)
    expect(p.instances).toContainEqual({ instance: 'old', live: false, applied_at: new Date(T - 1).toISOString(), last_seen: null })
    expect(p.complete).toBe(true)
  })
})

describe('stateOf (an SSF receiver’s SETs of one revocation)', () => {
  it('not queued, pending until all are queued and delivered, failed when one was given up', () => {
    expect(stateOf([], 1)).toBe('not_queued')
    expect(stateOf([{ state: 'delivered' }], 2)).toBe('pending')
    expect(stateOf([{ state: 'delivered' }, { state: 'pending' }], 2)).toBe('pending')
    expect(stateOf([{ state: 'delivered' }, { state: 'failed' }], 2)).toBe('failed')
    expect(stateOf([{ state: 'delivered' }, { state: 'delivered' }], 2)).toBe('delivered')
  })
})

describe('the tracker', () => {
  const setup = (store: PropagationStore = createMemoryPropagationStore(() => T)) => {
    const mirror = observeMirror(createRevocationMirror(() => T / 1000))
    const writes: (readonly PropagationNote[])[] = []
    const recording: PropagationStore = {
      ...store,
      write: (notes) => {
        writes.push(notes)
        return store.write(notes)
      },
    }
    const tracker = createPropagationTracker({
      instance: 'i1',
      store: recording,
      subscribe: (l, o) => mirror.subscribe(l, o),
      records: () => mirror.records(),
      clock: () => T,
      logger: pino({ enabled: false }),
    })
    return { mirror, tracker, writes }
  }
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

  it('notes nothing on the caller’s turn; the notes of one turn go in one write; an echo is noted once', async () => {
    const { mirror, tracker, writes } = setup()
    mirror.apply(record('r1'))
    mirror.apply(record('r2'))
    mirror.apply(record('r1'))
    expect(writes).toEqual([])
    await turn()
    expect(writes).toHaveLength(1)
    expect(writes[0]!.map((n) => (n.kind === 'applied' ? n.record : n.kind))).toEqual(['r1', 'r2'])
    const read = await tracker.read('r1')
    expect(read.applied).toEqual(new Map([['i1', T]]))
    await tracker.close()
  })

  it('a full resync notes every record held that was made within the notes’ life', async () => {
    const { mirror, tracker } = setup()
    mirror.replaceAll([record('recent'), record('ancient', T / 1000 - 2 * 86_400)])
    await turn()
    expect((await tracker.read('recent')).applied.has('i1')).toBe(true)
    expect((await tracker.read('ancient')).applied.size).toBe(0)
    await tracker.close()
  })

  it('a feed stream: opened, sent, snapshot, closed', async () => {
    const { mirror, tracker } = setup()
    const notes = tracker.feedOpened('rs/api')
    mirror.apply(record('r1'))
    notes.sent('r1')
    notes.snapshot(T)
    await turn()
    const s = await tracker.read('r1')
    expect(s.feeds).toEqual([{ connection: expect.any(String), subscriber: 'rs/api', instance: 'i1', connectedAt: T, snapshotAt: T }])
    expect(s.sent.get(s.feeds[0]!.connection)).toBe(T)
    notes.closed()
    await turn()
    expect((await tracker.read('r1')).feeds).toEqual([])
    await tracker.close()
  })

  it('a store that fails keeps the notes and writes them with a later batch', async () => {
    const memory = createMemoryPropagationStore(() => T)
    let down = true
    const flaky: PropagationStore = { ...memory, write: (notes) => (down ? Promise.reject(new Error('down')) : memory.write(notes)) }
    const { mirror, tracker } = setup(flaky)
    mirror.apply(record('r1'))
    await turn()
    await turn()
    down = false
    mirror.apply(record('r2'))
    await turn()
    await turn()
    expect((await memory.read('r1')).applied.has('i1')).toBe(true)
    expect((await memory.read('r2')).applied.has('i1')).toBe(true)
    await tracker.close()
  })

  it('close leaves the live list', async () => {
    const memory = createMemoryPropagationStore(() => T)
    const { tracker } = setup(memory)
    expect((await memory.read('x')).instances.has('i1')).toBe(true)
    await tracker.close()
    expect((await memory.read('x')).instances.has('i1')).toBe(false)
  })
})
