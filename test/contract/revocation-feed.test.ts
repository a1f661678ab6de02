/**
 * The `RevocationFeed` port (src/revocation/port.ts), on every adapter
 * (Redis): it carries revocations between instances and keeps each
 * instance's mirror in step. What the port promises:
 * - `publish` resolves once the shared store has the record: every
 *   instance's mirror then applies it (its own included); a record with a
 *   known id replaces the old version (a lift), and a lift only goes forward;
 * - a new instance's mirror holds the whole list once its feed is started,
 *   what its durable log holds included (no revocation is ever lost);
 * - `fresh()` is false once the instance has not heard from the shared store
 *   within the bound, `lag()` says for how long;
 * - after `close()`, nothing is fresh and `publish` rejects.
 * Several instances share one store per test (a key prefix of its own).
 */
import { randomUUID } from 'node:crypto'
import { afterEach, expect, it, vi } from 'vitest'
import type { AgentId, Jti, Subject } from '../../src/core/claims.js'
import type { Revocation, RevocationMirror, RevocationTarget } from '../../src/revocation/port.js'
import { feedDurableLog, revocationFeedAdapters } from './adapters.js'
import { describeEachAdapter, rejection } from './harness.js'

const WAIT = { timeout: 5_000, interval: 10 }

let serial = 0
function revocation(kind: RevocationTarget['kind'] = 'agent', over: Partial<Revocation> = {}): Revocation {
  const n = ++serial
  const nowSec = Math.floor(Date.now() / 1000)
  const target: RevocationTarget =
    kind === 'agent'
      ? { kind, agent: `agent-${n}` as AgentId }
      : kind === 'sub'
        ? { kind, sub: `user-${n}` as Subject, iss: 'https://idp.test' }
        : kind === 'agent_sub'
          ? { kind, agent: `agent-${n}` as AgentId, sub: `user-${n}` as Subject, iss: null }
          : kind === 'instance'
            ? { kind, agent: `agent-${n}` as AgentId, instance: `spiffe://example.org/pod-${n}` }
            : { kind, jti: `jti-${n}` as Jti }
  return {
    id: randomUUID(),
    target,
    reason: `reason ${n}`,
    createdBy: 'responder',
    createdAt: nowSec,
    expiresAt: kind === 'jti' || kind === 'chain' ? nowSec + 3600 : undefined,
    liftedAt: undefined,
    liftedBy: undefined,
    ...over,
  }
}

const held = (mirror: RevocationMirror, id: string) => mirror.records().find((r) => r.id === id)

describeEachAdapter('RevocationFeed', await revocationFeedAdapters(), (_adapter, backing) => {
  afterEach(async () => {
    await backing().stopAll()
  })

  it('publish: once it resolves, every instance’s mirror applies the record, the publisher’s own included', async () => {
    const shared = backing().shared()
    const log = feedDurableLog()
    const instances = [await shared.start({ log }), await shared.start({ log }), await shared.start({ log, readOnly: true })]
    for (const { feed } of instances) expect(feed.fresh()).toBe(true)
    const records = (['agent', 'sub', 'agent_sub', 'jti', 'chain'] as const).map((kind) => revocation(kind))
    for (const r of records) await instances[0]!.feed.publish(r)
    for (const [i, { mirror }] of instances.entries()) {
      for (const r of records) await vi.waitFor(() => expect(held(mirror, r.id), `instance ${i}, ${r.target.kind}`).toStrictEqual(r), WAIT)
    }
  })

  it('a lifted version replaces the record on every mirror, and a late publish of the unlifted one does not revive it', async () => {
    const shared = backing().shared()
    const log = feedDurableLog()
    const a = await shared.start({ log })
    const b = await shared.start({ log })
    const kill = revocation('agent')
    await a.feed.publish(kill)
    await vi.waitFor(() => expect(held(b.mirror, kill.id)).toStrictEqual(kill), WAIT)
    const lifted: Revocation = { ...kill, liftedAt: kill.createdAt + 5, liftedBy: 'lead' }
    await b.feed.publish(lifted)
    await vi.waitFor(() => expect(held(a.mirror, kill.id)).toStrictEqual(lifted), WAIT)
    // A slow instance publishing the version it still has: the kill stays lifted everywhere.
    await a.feed.publish(kill)
    const marker = revocation('sub')
    await a.feed.publish(marker)
    await vi.waitFor(() => expect(held(b.mirror, marker.id)).toBeDefined(), WAIT)
    await vi.waitFor(() => expect(held(a.mirror, marker.id)).toBeDefined(), WAIT)
    expect(held(a.mirror, kill.id)).toStrictEqual(lifted)
    expect(held(b.mirror, kill.id)).toStrictEqual(lifted)
    // A new instance learns the lifted version.
    const c = await shared.start({ log })
    expect(held(c.mirror, kill.id)).toStrictEqual(lifted)
  })

  it('publishing a record again changes nothing: each mirror holds it once', async () => {
    const shared = backing().shared()
    const log = feedDurableLog()
    const a = await shared.start({ log })
    const b = await shared.start({ log })
    const r = revocation('jti')
    await a.feed.publish(r)
    await b.feed.publish(r)
    await a.feed.publish(r)
    const marker = revocation('agent')
    await a.feed.publish(marker)
    for (const { mirror } of [a, b]) {
      await vi.waitFor(() => expect(held(mirror, marker.id)).toBeDefined(), WAIT)
      expect(mirror.records().filter((x) => x.id === r.id)).toStrictEqual([r])
      expect(mirror.records()).toHaveLength(2)
    }
  })

  it('no record is lost: 60 concurrent publishes from two instances reach both mirrors, and a third started after', async () => {
    const shared = backing().shared()
    const log = feedDurableLog()
    const a = await shared.start({ log })
    const b = await shared.start({ log })
    const records = Array.from({ length: 60 }, (_, i) => revocation(i % 2 === 0 ? 'agent' : 'jti'))
    await Promise.all(records.map((r, i) => (i % 2 === 0 ? a : b).feed.publish(r)))
    const ids = records.map((r) => r.id).sort()
    for (const { mirror } of [a, b])
      await vi.waitFor(
        () =>
          expect(
            mirror
              .records()
              .map((r) => r.id)
              .sort(),
          ).toEqual(ids),
        WAIT,
      )
    const c = await shared.start({ log })
    expect(
      c.mirror
        .records()
        .map((r) => r.id)
        .sort(),
    ).toEqual(ids)
  })

  it('a new instance’s mirror holds the whole list when its feed has started, what only its durable log held included', async () => {
    const shared = backing().shared()
    const log = feedDurableLog()
    const a = await shared.start({ log })
    const published = [revocation('agent'), revocation('chain')]
    for (const r of published) {
      await log.insert(r)
      await a.feed.publish(r)
    }
    // Stored durably while the shared store was out of reach: never published.
    const durableOnly = revocation('sub')
    await log.insert(durableOnly)
    const b = await shared.start({ log })
    expect(b.feed.fresh()).toBe(true)
    for (const r of [...published, durableOnly]) expect(held(b.mirror, r.id), r.target.kind).toStrictEqual(r)
    // And it reaches the instances that were already running.
    await vi.waitFor(() => expect(held(a.mirror, durableOnly.id)).toStrictEqual(durableOnly), WAIT)
  })

  it('fresh() is false as soon as the instance has not heard from the store within the bound; lag() says how long; it recovers on hearing', async () => {
    const shared = backing().shared()
    let offset = 0
    const now = () => Date.now() + offset
    const { feed } = await shared.start({ log: feedDurableLog(), now })
    const bound = backing().staleAfterMs
    expect(feed.fresh()).toBe(true)
    expect(feed.lag()).toBeGreaterThanOrEqual(0)
    expect(feed.lag()).toBeLessThanOrEqual(bound)
    // The clock jumps past the bound: what was last heard is now too old.
    offset = bound + 5_000
    expect(feed.fresh()).toBe(false)
    expect(feed.lag()).toBeGreaterThan(bound + 4_000)
    await vi.waitFor(() => expect(feed.fresh()).toBe(true), WAIT)
    expect(feed.lag()).toBeLessThanOrEqual(bound)
  })

  it('close: once closed (twice is fine), the instance is not fresh and publish rejects', async () => {
    const shared = backing().shared()
    const { feed } = await shared.start({ log: feedDurableLog() })
    await feed.close()
    await feed.close()
    expect(feed.fresh()).toBe(false)
    expect(await rejection(feed.publish(revocation()))).toBeInstanceOf(Error)
  })

  it('a read-only follower applies what the brokers publish and refuses to publish itself', async () => {
    const shared = backing().shared()
    const log = feedDurableLog()
    const broker = await shared.start({ log })
    const follower = await shared.start({ log, readOnly: true })
    const r = revocation('agent_sub')
    expect(await rejection(follower.feed.publish(r))).toBeInstanceOf(Error)
    await broker.feed.publish(r)
    await vi.waitFor(() => expect(held(follower.mirror, r.id)).toStrictEqual(r), WAIT)
    expect(follower.feed.fresh()).toBe(true)
  })
})
