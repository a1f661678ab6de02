/**
 * The `AdmissionStore` port (src/admission/port.ts), on every adapter: the
 * process-local store and Redis. `admit` decides, as if atomically and in
 * this order: an assertion whose earliest use precedes the store's memory is
 * `predates_memory`; a `jti` spent before is `replayed` (once only, however
 * many ask at once); then one token from every bucket, or from none when one
 * is empty (`limited`, with `retryAfter` in whole seconds, at least 1). The
 * clock is injected: buckets refill and memory begins by it, never by sleeping.
 */
import { expect, it } from 'vitest'
import type { AssertionUse, BucketCharge } from '../../src/admission/port.js'
import type { AgentId } from '../../src/core/claims.js'
import { admissionStoreAdapters } from './adapters.js'
import { describeEachAdapter } from './harness.js'

const T0 = 1_800_000_000_000 // epoch ms
const A = 'agent-a' as AgentId
const B = 'agent-b' as AgentId

/** An assertion issued at `iat` (ms), 60 s long, as client-auth describes one with 30 s skew and 300 s max lifetime. */
function assertion(key: string, iat: number): AssertionUse {
  return { key, earliestUse: Math.max(iat - 30_000, iat + 60_000 - 300_000), expiresAt: iat + 90_000 }
}

const perSecond = (n: number, burst: number) => ({ perSecond: n, burst })
const agentBucket = (agent: AgentId, limit: { perSecond: number; burst: number }): BucketCharge => ({ scope: 'agent', agent, limit })
const userBucket = (agent: AgentId, issuer: string, sub: string, limit: { perSecond: number; burst: number }): BucketCharge => ({
  scope: 'user',
  agent,
  issuer,
  sub,
  limit,
})

interface Clock {
  now: number
  readonly read: () => number
}
function clockAt(ms: number): Clock {
  const c = { now: ms, read: () => c.now }
  return c
}

const count = (outcomes: readonly { outcome: string }[], outcome: string) => outcomes.filter((o) => o.outcome === outcome).length

describeEachAdapter('AdmissionStore', await admissionStoreAdapters(), (_adapter, backing) => {
  it('spends a jti once: admitted, then replayed; another jti, or another agent’s, is new', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const t = (clock.now = T0 + 60_000)
    expect(await store.admit({ assertion: assertion('agent-a:j1', t), buckets: [] })).toEqual({ outcome: 'admitted' })
    expect(await store.admit({ assertion: assertion('agent-a:j1', t), buckets: [] })).toEqual({ outcome: 'replayed' })
    expect(await store.admit({ assertion: assertion('agent-a:j2', t), buckets: [] })).toEqual({ outcome: 'admitted' })
    expect(await store.admit({ assertion: assertion('agent-b:j1', t), buckets: [] })).toEqual({ outcome: 'admitted' })
  })

  it('spends DPoP proofs with the assertion: a proof again is proof_replayed, the assertion again replayed; a refusal draws no token', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const t = (clock.now = T0 + 60_000)
    const proof = (jti: string): AssertionUse => ({ key: `#dpop:k#${jti}`, earliestUse: t - 5_000, expiresAt: t + 65_000 })
    const one = agentBucket(A, perSecond(1, 2))
    expect(await store.admit({ assertion: assertion('agent-a:p1', t), proofs: [proof('d1'), proof('s1')], buckets: [one] })).toEqual({
      outcome: 'admitted',
    })
    // The same client proof with a new assertion, and a new proof with the spent assertion.
    expect(await store.admit({ assertion: assertion('agent-a:p2', t), proofs: [proof('d1')], buckets: [one] })).toEqual({ outcome: 'proof_replayed' })
    expect(await store.admit({ assertion: assertion('agent-a:p1', t), proofs: [proof('d2')], buckets: [one] })).toEqual({ outcome: 'replayed' })
    // A holder's proof spent before, second in the list; proofs without an assertion (a secret-authenticated client).
    expect(await store.admit({ assertion: undefined, proofs: [proof('d3'), proof('s1')], buckets: [] })).toEqual({ outcome: 'proof_replayed' })
    expect(await store.admit({ assertion: undefined, proofs: [proof('d4')], buckets: [one] })).toEqual({ outcome: 'admitted' })
    // Two admitted requests drew the bucket's two tokens; the refused ones drew none.
    expect(await store.admit({ assertion: undefined, proofs: [proof('d5')], buckets: [one] })).toMatchObject({ outcome: 'limited' })
    // A proof that may predate the store's memory is refused as an assertion would be.
    const early: AssertionUse = { key: '#dpop:k#early', earliestUse: T0 - 1_000, expiresAt: t + 65_000 }
    expect(await store.admit({ assertion: undefined, proofs: [early], buckets: [] })).toMatchObject({ outcome: 'predates_memory' })
  })

  it('refuses an assertion that may have been spent before its memory began, and says when a new one passes', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    // Issued 10 s before the memory began: with 30 s of skew it may have been accepted 40 s before.
    expect(await store.admit({ assertion: assertion('a:old', T0 - 10_000), buckets: [] })).toEqual({ outcome: 'predates_memory', retryAfter: 40 })
    // Issued right at the start: the client's clock may run 30 s fast, so it may predate it.
    expect(await store.admit({ assertion: assertion('a:now', T0), buckets: [] })).toEqual({ outcome: 'predates_memory', retryAfter: 30 })
    clock.now = T0 + 30_000
    expect(await store.admit({ assertion: assertion('a:later', T0 + 30_000), buckets: [] })).toEqual({ outcome: 'admitted' })
    // An assertion as long as the longest lifetime allowed cannot predate anything it was issued after.
    const long = { key: 'a:long', earliestUse: T0, expiresAt: T0 + 300_000 }
    expect(await store.admit({ assertion: long, buckets: [] })).toEqual({ outcome: 'admitted' })
    // A refused request draws from no bucket.
    expect(await store.admit({ assertion: assertion('a:old', T0 - 10_000), buckets: [agentBucket(A, perSecond(1, 1))] })).toMatchObject({
      outcome: 'predates_memory',
    })
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, perSecond(1, 1))] })).toEqual({ outcome: 'admitted' })
  })

  it('lets a burst through at once, then one request per 1/rate, and says how long to wait', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const limit = { perSecond: 2, burst: 5 } // 120/min, burst 5
    for (let i = 0; i < 5; i++) expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'admitted' })
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 1 })
    clock.now += 499
    expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('limited')
    clock.now += 1
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'admitted' })
    expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('limited')
    // Another agent has a bucket of its own.
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(B, limit)] })).toEqual({ outcome: 'admitted' })
    // A long quiet spell refills up to the burst, not beyond.
    clock.now += 3_600_000
    for (let i = 0; i < 5; i++) expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('admitted')
    expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).outcome).toBe('limited')
  })

  it('waits the refill of a slow rate: 1/h with burst 1 says 3600 s', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const hourly = { perSecond: 1 / 3600, burst: 1 }
    expect((await store.admit({ assertion: undefined, buckets: [agentBucket(A, hourly)] })).outcome).toBe('admitted')
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, hourly)] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 3600 })
    clock.now += 1_800_000
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, hourly)] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 1800 })
  })

  it('keys a user bucket on the agent, the issuer and the sub together', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const one = { perSecond: 1 / 60, burst: 1 }
    const alice = userBucket(A, 'https://idp-1.test', 'alice', one)
    expect((await store.admit({ assertion: undefined, buckets: [alice] })).outcome).toBe('admitted')
    expect(await store.admit({ assertion: undefined, buckets: [alice] })).toEqual({ outcome: 'limited', scope: 'user', retryAfter: 60 })
    // Same sub at another issuer, another sub, another agent: other users' buckets.
    expect((await store.admit({ assertion: undefined, buckets: [userBucket(A, 'https://idp-2.test', 'alice', one)] })).outcome).toBe('admitted')
    expect((await store.admit({ assertion: undefined, buckets: [userBucket(A, 'https://idp-1.test', 'bob', one)] })).outcome).toBe('admitted')
    expect((await store.admit({ assertion: undefined, buckets: [userBucket(B, 'https://idp-1.test', 'alice', one)] })).outcome).toBe('admitted')
    // Separators cannot be forged into another user's key.
    expect((await store.admit({ assertion: undefined, buckets: [userBucket(A, 'https://idp-1.test\nalice', '', one)] })).outcome).toBe('admitted')
  })

  it('draws from every bucket or from none: a request refused by the user limit leaves the agent’s tokens', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const agent = agentBucket(A, { perSecond: 1 / 60, burst: 2 })
    const user = userBucket(A, 'https://idp.test', 'alice', { perSecond: 1 / 60, burst: 1 })
    expect((await store.admit({ assertion: undefined, buckets: [agent, user] })).outcome).toBe('admitted')
    expect(await store.admit({ assertion: undefined, buckets: [agent, user] })).toEqual({ outcome: 'limited', scope: 'user', retryAfter: 60 })
    expect(await store.admit({ assertion: undefined, buckets: [agent, user] })).toEqual({ outcome: 'limited', scope: 'user', retryAfter: 60 })
    // The agent bucket still holds its second token.
    expect((await store.admit({ assertion: undefined, buckets: [agent] })).outcome).toBe('admitted')
    expect(await store.admit({ assertion: undefined, buckets: [agent] })).toMatchObject({ outcome: 'limited', scope: 'agent' })
  })

  it('spends the assertion of a request refused by a limit, and draws nothing for a replay', async () => {
    const clock = clockAt(T0)
    const limited = await backing().fresh(clock.read)
    clock.now = T0 + 60_000
    const one = agentBucket(A, { perSecond: 1 / 60, burst: 1 })
    expect((await limited.admit({ assertion: assertion('a:1', clock.now), buckets: [one] })).outcome).toBe('admitted')
    expect((await limited.admit({ assertion: assertion('a:2', clock.now), buckets: [one] })).outcome).toBe('limited')
    expect(await limited.admit({ assertion: assertion('a:2', clock.now), buckets: [] })).toEqual({ outcome: 'replayed' })
    clock.now += 60_000
    // A replay draws no token: the next fresh request still finds one.
    expect(await limited.admit({ assertion: assertion('a:1', clock.now - 60_000), buckets: [one] })).toEqual({ outcome: 'replayed' })
    expect((await limited.admit({ assertion: assertion('a:3', clock.now), buckets: [one] })).outcome).toBe('admitted')
  })
  it('admits a request with neither an assertion nor a bucket', async () => {
    const store = await backing().fresh(clockAt(T0).read)
    expect(await store.admit({ assertion: undefined, buckets: [] })).toEqual({ outcome: 'admitted' })
  })

  it('decides in the port’s order: predating before replay, replay before a limit, and neither draws a token', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    clock.now = T0 + 60_000
    const one = agentBucket(A, perSecond(1 / 60, 1))
    const spent = assertion('a:spent', clock.now)
    expect(await store.admit({ assertion: spent, buckets: [] })).toEqual({ outcome: 'admitted' })
    // An assertion both predating the memory and (by its key) already spent is refused as predating.
    expect(await store.admit({ assertion: { ...spent, earliestUse: T0 - 1 }, buckets: [one] })).toEqual({ outcome: 'predates_memory', retryAfter: 1 })
    // A replay is a replay even when the bucket it would draw from is empty.
    expect(await store.admit({ assertion: undefined, buckets: [one] })).toEqual({ outcome: 'admitted' })
    expect(await store.admit({ assertion: spent, buckets: [one] })).toEqual({ outcome: 'replayed' })
    expect(await store.admit({ assertion: undefined, buckets: [one] })).toMatchObject({ outcome: 'limited', scope: 'agent' })
  })

  it('spends a jti once however many ask at once: of 25 concurrent uses, one is admitted and 24 replayed', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    clock.now = T0 + 60_000
    const use = assertion('a:race', clock.now)
    const outcomes = await Promise.all(Array.from({ length: 25 }, () => store.admit({ assertion: use, buckets: [agentBucket(A, perSecond(1, 100))] })))
    expect(count(outcomes, 'admitted')).toBe(1)
    expect(count(outcomes, 'replayed')).toBe(24)
  })

  it('draws a bucket exactly down to empty under concurrency: a burst of 7 admits 7 of 25 concurrent requests', async () => {
    const store = await backing().fresh(clockAt(T0).read)
    const limit = perSecond(1 / 60, 7)
    const outcomes = await Promise.all(
      Array.from({ length: 25 }, () =>
        store.admit({ assertion: undefined, buckets: [agentBucket(A, limit), userBucket(A, 'https://idp.test', 'alice', perSecond(1, 100))] }),
      ),
    )
    expect(count(outcomes, 'admitted')).toBe(7)
    expect(outcomes.filter((o) => o.outcome === 'limited')).toEqual(Array.from({ length: 18 }, () => ({ outcome: 'limited', scope: 'agent', retryAfter: 60 })))
  })

  it('remembers a spent jti until its expiry, and one already past it for a second at least', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const use = { key: 'a:until', earliestUse: T0, expiresAt: T0 + 60_000 }
    expect(await store.admit({ assertion: use, buckets: [] })).toEqual({ outcome: 'admitted' })
    clock.now = T0 + 59_999
    expect(await store.admit({ assertion: use, buckets: [] })).toEqual({ outcome: 'replayed' })
    // Presented after its own expiry (the verifier refuses that first; the store stays on the safe side).
    const past = { key: 'a:past', earliestUse: T0, expiresAt: clock.now - 30_000 }
    expect(await store.admit({ assertion: past, buckets: [] })).toEqual({ outcome: 'admitted' })
    expect(await store.admit({ assertion: past, buckets: [] })).toEqual({ outcome: 'replayed' })
  })

  it('a clock that steps back refills nothing and drains nothing', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    const limit = perSecond(1, 2)
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'admitted' })
    clock.now = T0 - 10_000
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'admitted' })
    expect(await store.admit({ assertion: undefined, buckets: [agentBucket(A, limit)] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 1 })
  })

  it('says when to retry in whole seconds, rounded up, at least 1', async () => {
    const clock = clockAt(T0)
    const store = await backing().fresh(clock.read)
    // 10 a second: the next token in 100 ms → 1 s. 1 every 2.5 s, 1 ms in → 3 s. 1 every 90 s, half refilled → 45 s.
    const fast = agentBucket(A, perSecond(10, 1))
    const slow = agentBucket(B, perSecond(1 / 90, 1))
    const odd = userBucket(A, 'https://idp.test', 'carol', perSecond(0.4, 1))
    for (const b of [fast, slow, odd]) expect((await store.admit({ assertion: undefined, buckets: [b] })).outcome).toBe('admitted')
    expect(await store.admit({ assertion: undefined, buckets: [fast] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 1 })
    clock.now = T0 + 1
    expect(await store.admit({ assertion: undefined, buckets: [odd] })).toEqual({ outcome: 'limited', scope: 'user', retryAfter: 3 })
    clock.now = T0 + 45_000
    expect(await store.admit({ assertion: undefined, buckets: [slow] })).toEqual({ outcome: 'limited', scope: 'agent', retryAfter: 45 })
  })
})
