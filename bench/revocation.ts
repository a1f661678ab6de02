/**
 * npm run bench:revocation (also in bench:all): what the kill switch costs, in-process.
 *
 *   1. Propagation between two Redis revocation feeds (the real
 *      `createRedisRevocationFeed` on two connections, as two brokers run it):
 *      one record published at a time; the publish acknowledgement (what the
 *      admin API waits for before its 201) and the delivery to the other
 *      feed's mirror, both timed from the start of the publish. docs/ARCHITECTURE.md
 *      "The kill switch": every mirror applies a revocation within 100 ms p99.
 *   2. The mirror check every verification makes (`checkToken`), on a mirror
 *      holding 10,000 revocations, against an empty mirror and against one
 *      ES256 signature verification (node:crypto) measured in the same run.
 *      Rounds alternate between cases; each figure is the median of the
 *      rounds (shared, noisy machines: compare ratios, not absolute figures).
 *   3. Forward auth (bench/support/forward-auth.ts), against real brokers
 *      (`npm run build` first): a kill to the first refusal at GET
 *      /forward-auth, p50/p99 over many kills (across two brokers sharing
 *      PostgreSQL and Redis when both answer), and its latency at 1,000
 *      requests a second (target p99 ≤ 2 ms) and its capacity.
 *   4. @mandate/verifier (bench/support/verifier.ts), against real brokers
 *      likewise: a kill to the first refusal by a verifier following a
 *      broker's revocation feed, p50/p99 over many kills.
 *
 * Redis: REDIS_URL (default redis://127.0.0.1:6379), under a key prefix of
 * its own that is deleted afterwards; never flushed. Without Redis, part 1 is
 * reported as skipped. `--quick` runs fewer publishes and shorter rounds.
 */
import { generateKeyPairSync, randomUUID, sign, verify } from 'node:crypto'
import { cpus } from 'node:os'
import { Redis } from 'ioredis'
import type { AgentId, Jti, Subject } from '../src/core/claims.js'
import { createMemoryRevocationLog } from '../src/revocation/log-memory.js'
import { createRevocationMirror } from '@mandate/verifier/mirror'
import type { Revocation, RevocationMirror, RevocationTarget, TokenFacts } from '../src/revocation/port.js'
import { createRedisRevocationFeed } from '../src/revocation/redis.js'
import { createLogger } from '../src/telemetry/log.js'
import { deleteKeys } from './support/backing.js'
import { forwardAuthBench } from './support/forward-auth.js'
import { verifierBench } from './support/verifier.js'

const quick = process.argv.includes('--quick')
const PUBLISHES = quick ? 200 : 500
const ROUND_MS = quick ? 300 : 1000
const ROUNDS = quick ? 3 : 5
const MIRROR_SIZE = 10_000
const REDIS_URL = process.env['REDIS_URL'] || 'redis://127.0.0.1:6379'

const nowSeconds = () => Math.floor(Date.now() / 1000)
const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
function percentile(xs: readonly number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

let serial = 0
function revocation(target: RevocationTarget): Revocation {
  const createdAt = nowSeconds()
  const token = target.kind === 'jti' || target.kind === 'chain'
  return {
    id: randomUUID(),
    target,
    reason: `bench ${++serial}`,
    createdBy: 'bench',
    createdAt,
    expiresAt: token ? createdAt + 3600 : undefined,
    liftedAt: undefined,
    liftedBy: undefined,
  }
}

console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}${quick ? ', --quick' : ''}`)

// ---------------------------------------------------------------- 1. propagation

async function propagation(): Promise<void> {
  const probe = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000, retryStrategy: () => null })
  probe.on('error', () => {})
  try {
    await probe.connect()
    await probe.ping()
  } catch {
    console.log(`\nPropagation between two Redis feeds: skipped (Redis not reachable at ${REDIS_URL})`)
    probe.disconnect()
    return
  }

  const prefix = `mandate-bench:${randomUUID()}:`
  const logger = createLogger('silent')
  const log = createMemoryRevocationLog()
  /** performance.now() at which the receiving mirror applied each record id. */
  const appliedAt = new Map<string, number>()
  const waiters = new Map<string, () => void>()
  const receiving = createRevocationMirror(nowSeconds)
  const observed: RevocationMirror = {
    ...receiving,
    apply(record) {
      receiving.apply(record)
      if (!appliedAt.has(record.id)) appliedAt.set(record.id, performance.now())
      waiters.get(record.id)?.()
    },
    replaceAll(records) {
      receiving.replaceAll(records)
      const at = performance.now()
      for (const r of records) {
        if (!appliedAt.has(r.id)) appliedAt.set(r.id, at)
        waiters.get(r.id)?.()
      }
    },
  }
  const connections: Redis[] = []
  const connection = async () => {
    const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2000, commandTimeout: 2000 })
    r.on('error', () => {})
    connections.push(r)
    if (r.status !== 'ready') await new Promise((resolve) => r.once('ready', resolve))
    return r
  }
  // As compose.ts configures them (max_staleness_ms 1000, block 250).
  const feedOptions = { prefix, log, now: Date.now, staleAfterMs: 1000, blockMs: 250, logger }
  const sender = await createRedisRevocationFeed({ ...feedOptions, redis: await connection(), mirror: createRevocationMirror(nowSeconds) })
  const receiver = await createRedisRevocationFeed({ ...feedOptions, redis: await connection(), mirror: observed })

  const ack: number[] = []
  const delivered: number[] = []
  try {
    for (let i = 0; i < PUBLISHES; i++) {
      const record = revocation({ kind: 'jti', jti: `bench-${i}-${randomUUID()}` as Jti })
      const arrived = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`record ${i} not delivered within 5 s`)), 5000)
        waiters.set(record.id, () => {
          clearTimeout(timer)
          resolve()
        })
        if (appliedAt.has(record.id)) waiters.get(record.id)!()
      })
      await log.insert(record)
      const t0 = performance.now()
      await sender.publish(record)
      ack.push(performance.now() - t0)
      await arrived
      waiters.delete(record.id)
      delivered.push(appliedAt.get(record.id)! - t0)
    }
  } finally {
    await sender.close()
    await receiver.close()
    for (const r of connections) r.disconnect()
    await deleteKeys(probe, prefix)
    probe.disconnect()
  }

  const row = (name: string, xs: readonly number[]) =>
    console.log(
      `  ${name.padEnd(46)} p50 ${percentile(xs, 50).toFixed(2).padStart(7)} ms   p99 ${percentile(xs, 99).toFixed(2).padStart(7)} ms   max ${Math.max(...xs)
        .toFixed(2)
        .padStart(7)} ms`,
    )
  console.log(`\nPropagation between two Redis feeds (${PUBLISHES} publishes, one at a time; from the start of each publish)`)
  row('publish acknowledged (what the 201 waits for)', ack)
  row('applied by the other feed’s mirror', delivered)
}

// ---------------------------------------------------------------- 2. mirror check vs signature

async function checkCost(): Promise<void> {
  // A mirror as a busy deployment might hold it: mostly single tokens, some chains, a few kills.
  const full = createRevocationMirror(nowSeconds)
  const records: Revocation[] = []
  for (let i = 0; i < MIRROR_SIZE; i++) {
    const n = i % 100
    const target: RevocationTarget =
      n < 90
        ? { kind: 'jti', jti: `revoked-${i}` as Jti }
        : n < 96
          ? { kind: 'chain', jti: `revoked-chain-${i}` as Jti }
          : n < 98
            ? { kind: 'agent', agent: `killed-agent-${i}` as AgentId }
            : n < 99
              ? { kind: 'sub', sub: `killed-user-${i}` as Subject, iss: 'https://idp.example' }
              : { kind: 'agent_sub', agent: `agent-${i}` as AgentId, sub: `user-${i}` as Subject, iss: 'https://idp.example' }
    records.push(revocation(target))
  }
  full.replaceAll(records)
  if (full.records().length !== MIRROR_SIZE) throw new Error(`mirror holds ${full.records().length} records, expected ${MIRROR_SIZE}`)
  const empty = createRevocationMirror(nowSeconds)

  // A delegated token (two agents, one ancestor): the common case, nothing revoked.
  const clearToken: TokenFacts = {
    jti: randomUUID() as Jti,
    sub: 'alice' as Subject,
    subIssuer: 'https://idp.example',
    actors: ['sub-agent', 'calendar-assistant'] as AgentId[],
    chain: [randomUUID() as Jti],
    iat: nowSeconds(),
  }
  const revokedToken: TokenFacts = { ...clearToken, jti: 'revoked-4242' as Jti }
  if (full.checkToken(clearToken).state !== 'clear' || full.checkToken(revokedToken).state !== 'revoked') {
    throw new Error('mirror does not answer as expected')
  }

  // One ES256 verification of a token-sized JWS signing input.
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })).toString('base64url')
  const payload = Buffer.from(
    JSON.stringify({
      iss: 'https://mandate.example',
      sub: 'alice',
      aud: 'https://api.example',
      act: { sub: 'agent' },
      scope: 'read',
      iat: 1,
      exp: 2,
      jti: randomUUID(),
    }),
  ).toString('base64url')
  const input = Buffer.from(`${header}.${payload}`)
  const signature = sign('sha256', input, { key: privateKey, dsaEncoding: 'ieee-p1363' })

  let sink = 0
  type Case = { name: string; batch: number; run: () => void }
  const cases: Case[] = [
    { name: `checkToken, empty mirror`, batch: 10_000, run: () => void (sink += empty.checkToken(clearToken).state.length) },
    {
      name: `checkToken, ${MIRROR_SIZE.toLocaleString('en')} revocations, token clear`,
      batch: 10_000,
      run: () => void (sink += full.checkToken(clearToken).state.length),
    },
    {
      name: `checkToken, ${MIRROR_SIZE.toLocaleString('en')} revocations, token revoked`,
      batch: 10_000,
      run: () => void (sink += full.checkToken(revokedToken).state.length),
    },
    {
      name: 'ES256 verify (node:crypto)',
      batch: 100,
      run: () => void (sink += verify('sha256', input, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature) ? 1 : 0),
    },
  ]
  /** Nanoseconds per op of `c` over about ROUND_MS. */
  const measure = (c: Case): number => {
    const t0 = performance.now()
    let n = 0
    while (performance.now() - t0 < ROUND_MS) {
      for (let i = 0; i < c.batch; i++) c.run()
      n += c.batch
    }
    return ((performance.now() - t0) * 1e6) / n
  }
  for (const c of cases) measure({ ...c, batch: Math.min(c.batch, 1000) }) // warm-up
  const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  for (let r = 0; r < ROUNDS; r++) for (const c of r % 2 === 0 ? cases : [...cases].reverse()) samples.get(c.name)!.push(measure(c))
  const ns = new Map([...samples].map(([k, v]) => [k, median(v)]))
  const emptyNs = ns.get(cases[0]!.name)!
  const verifyNs = ns.get(cases[3]!.name)!

  console.log(`\nRevocation check per verification (median of ${ROUNDS} alternating rounds)`)
  console.log(`  ${'case'.padEnd(48)} ${'ns/op'.padStart(9)}   ${'vs empty'.padStart(8)}   ${'vs ES256 verify'.padStart(15)}`)
  for (const [name, value] of ns) {
    console.log(
      `  ${name.padEnd(48)} ${value.toFixed(0).padStart(9)}   ${(value / emptyNs).toFixed(2).padStart(7)}x   ${((value / verifyNs) * 100).toFixed(2).padStart(14)}%`,
    )
  }
  if (sink === 42) console.log('') // keeps the results alive
}

await propagation()
await checkCost()
await forwardAuthBench(quick)
await verifierBench(quick)
