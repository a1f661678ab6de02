/**
 * What the propagation notes cost (src/revocation/propagation*.ts): `npx tsx bench/propagation-notes.ts`
 * with Redis at REDIS_URL (default redis://127.0.0.1:6379); keys under a prefix of its own, deleted after.
 *
 * 1. The mirror's apply, the one step of the kill path the tracker hangs on: ns per apply with the
 *    tracker subscribed against without (the note is queued; nothing is written on the caller's turn).
 * 2. One batch written to Redis, one pipelined round trip: 1 note, and 100 notes.
 * 3. The admin read (`read`: heartbeat, then two round trips) with 2 instances and 10 open streams.
 *
 * Prints the figures; writes nothing else. Not part of `npm run bench`.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { AgentId } from '../src/core/claims.js'
import type { Revocation } from '../src/revocation/port.js'
import { createPropagationTracker, type PropagationNote, type PropagationStore } from '../src/revocation/propagation.js'
import { createRedisPropagationStore } from '../src/revocation/propagation-redis.js'
import { observeMirror } from '../src/revocation/service.js'
import { deletePrefix, REDIS_URL } from '../test/support/redis.js'

const record = (): Revocation => ({
  id: randomUUID(),
  target: { kind: 'agent', agent: `agent-${Math.random()}` as AgentId },
  reason: 'bench',
  createdBy: 'bench',
  createdAt: Math.floor(Date.now() / 1000),
  expiresAt: undefined,
  liftedAt: undefined,
  liftedBy: undefined,
})
const percentile = (sorted: readonly number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
const us = (ms: number) => `${(ms * 1000).toFixed(0)} µs`

async function timed(runs: number, work: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < runs; i++) {
    const t = performance.now()
    await work()
    out.push(performance.now() - t)
  }
  return out.sort((a, b) => a - b)
}

function applyCost(withTracker: boolean, n: number): number {
  const mirror = observeMirror(createRevocationMirror(() => Math.floor(Date.now() / 1000)))
  const discard: PropagationStore = {
    write: async () => {},
    heartbeat: async () => {},
    leave: async () => {},
    read: async () => Promise.reject(new Error('unused')),
  }
  const tracker = withTracker
    ? createPropagationTracker({
        instance: 'bench',
        store: discard,
        subscribe: (l, o) => mirror.subscribe(l, o),
        records: () => mirror.records(),
        clock: Date.now,
        logger: pino({ enabled: false }),
      })
    : undefined
  const records = Array.from({ length: n }, record)
  const t = performance.now()
  for (const r of records) mirror.apply(r)
  const ns = ((performance.now() - t) * 1e6) / n
  void tracker?.close()
  return ns
}

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
const prefix = `mandate-bench-propagation:${randomUUID()}:`
const store = createRedisPropagationStore(redis, prefix, Date.now)
try {
  await redis.ping()
  // Warm up (JIT, connection) before measuring.
  applyCost(true, 20_000)
  applyCost(false, 20_000)
  const N = 100_000
  const without = applyCost(false, N)
  const withTracker = applyCost(true, N)
  console.log(`mirror.apply, ${N} records: ${without.toFixed(0)} ns without the tracker, ${withTracker.toFixed(0)} ns with it`)

  const id = randomUUID()
  const one = (): PropagationNote[] => [{ kind: 'applied', record: randomUUID(), instance: 'bench-a', at: Date.now() }]
  const hundred = (): PropagationNote[] => Array.from({ length: 100 }, one).flat()
  await timed(200, () => store.write(one()))
  const w1 = await timed(2_000, () => store.write(one()))
  const w100 = await timed(500, () => store.write(hundred()))
  console.log(`write 1 note: p50 ${us(percentile(w1, 50))}, p99 ${us(percentile(w1, 99))}`)
  console.log(`write 100 notes (one pipeline): p50 ${us(percentile(w100, 50))}, p99 ${us(percentile(w100, 99))}`)

  await store.heartbeat('bench-a', Date.now())
  await store.heartbeat('bench-b', Date.now())
  await store.write([
    { kind: 'applied', record: id, instance: 'bench-a', at: Date.now() },
    { kind: 'applied', record: id, instance: 'bench-b', at: Date.now() },
    ...Array.from({ length: 10 }, (_, i): PropagationNote => ({
      kind: 'opened',
      feed: { connection: `c${i}`, subscriber: `rs/${i}`, instance: i % 2 === 0 ? 'bench-a' : 'bench-b', connectedAt: Date.now(), snapshotAt: Date.now() },
    })),
  ])
  const reads = await timed(1_000, async () => {
    await store.heartbeat('bench-a', Date.now())
    return store.read(id)
  })
  console.log(`admin read (heartbeat + read, 2 instances, 10 streams): p50 ${us(percentile(reads, 50))}, p99 ${us(percentile(reads, 99))}`)
} finally {
  await store.close()
  await deletePrefix(redis, prefix)
  redis.disconnect()
}
