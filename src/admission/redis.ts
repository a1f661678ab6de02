import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import { withTimeout } from '../core/async.js'
import { retryAfterSeconds } from '../core/errors.js'
import { msToFill, msUntilToken, tokensAt } from './bucket.js'
import type { Admission, AdmissionRequest, AdmissionStore, BucketCharge } from './port.js'

export interface RedisAdmissionStoreOptions {
  /** Longest `admit` waits for Redis before it rejects, whatever `redis` is configured with. Default 2000. */
  readonly timeoutMs?: number
}

/**
 * KEYS: the marker, then one key per `jti` to spend (the assertion's, then
 * each DPoP proof's), then one key per bucket. ARGV: now (ms), the number n
 * of `jti`s, then per `jti` its earliest use (ms) and time to live (ms),
 * then per bucket: tokens per ms, burst, time to live (ms). A bucket is a
 * string "<tokens> <last update ms>" with a time to live: two commands per
 * bucket (GET, SET PX), not three (hash + PEXPIRE).
 * Returns 0 admitted, {1, i} the i-th `jti` (0-based) replayed, {2, ms}
 * predates the marker by ms, {3, i, ms} bucket i (0-based) has a token in ms
 * (to the nearest ms: floating-point noise must not turn 3600 s into 3601).
 */
const ADMIT = `
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
if n > 0 then
  local since = now
  local marker = redis.call('GET', KEYS[1])
  if marker then since = tonumber(marker) else redis.call('SET', KEYS[1], ARGV[1]) end
  for j = 1, n do
    local earliest = tonumber(ARGV[1 + 2 * j])
    if earliest < since then return {2, since - earliest} end
  end
  for j = 1, n do
    if not redis.call('SET', KEYS[1 + j], '1', 'PX', ARGV[2 + 2 * j], 'NX') then return {1, j - 1} end
  end
end
local k = 2 + n
local a = 3 + 2 * n
local left = {}
for i = 0, #KEYS - k do
  local rate = tonumber(ARGV[a + 3 * i])
  local burst = tonumber(ARGV[a + 1 + 3 * i])
  local tokens = burst
  local state = redis.call('GET', KEYS[k + i])
  if state then
    local t, at = string.match(state, '^(%S+) (%S+)$')
    if t then tokens = math.min(burst, tonumber(t) + math.max(0, now - tonumber(at)) * rate) end
  end
  if tokens < 1 then return {3, i, math.floor((1 - tokens) / rate + 0.5)} end
  left[i + 1] = tokens - 1
end
for i = 0, #KEYS - k do
  redis.call('SET', KEYS[k + i], string.format('%.17g %s', left[i + 1], ARGV[1]), 'PX', ARGV[a + 2 + 3 * i])
end
return 0
`

type AdmitCommand = (numKeys: number, ...args: (string | number)[]) => Promise<unknown>

/**
 * The admission store shared by every instance: one Lua script call per
 * request (ioredis `defineCommand`: EVAL once per connection, EVALSHA
 * after), auto-pipelined with the other commands of the same event-loop
 * turn when the client enables it. Keys under `prefix`:
 * - `replay:since`: epoch ms since which spent `jti`s are remembered, set
 *   whenever it is found missing (a new, flushed or restarted Redis) and at
 *   creation;
 * - `jti:<agent>:<jti>`: a spent assertion, until its expiry (`SET NX PX`);
 *   `jti:#dpop:<jkt>#<jti>` a spent DPoP proof, `jti:#id-jag:…` a spent ID-JAG;
 * - `rl:a:<agent>`, `rl:u:<agent>:<SHA-256 of issuer and sub>`: token buckets
 *   (tokens and last update), expiring once they would be full again.
 * Redis must not evict keys on its own (`maxmemory-policy noeviction`): a
 * spent `jti` evicted while the marker stays would be accepted again.
 *
 * Time is the broker's injected clock (`clock`, epoch ms), not Redis's, so
 * that every decision is reproducible in tests; instances are assumed to
 * agree on the time, as revocations already assume.
 *
 * `redis` stays the caller's; give it `commandTimeout` (at most `timeoutMs`
 * spares a timer per call) and a small `maxRetriesPerRequest` (or no offline
 * queue). A script that reaches Redis after its call was rejected only
 * spends a `jti` or a token: the safe side. Redis Cluster: use a hash tag in
 * `prefix` so that a request's keys share a slot.
 */
export async function createRedisAdmissionStore(
  redis: Redis,
  prefix: string,
  clock: () => number,
  options: RedisAdmissionStoreOptions = {},
): Promise<AdmissionStore> {
  const timeoutMs = options.timeoutMs ?? 2_000
  if (!(timeoutMs > 0)) throw new TypeError('timeoutMs must be positive')
  const clientBound = (redis.options.commandTimeout ?? Infinity) <= timeoutMs
  const markerKey = `${prefix}replay:since`
  if (!(redis as unknown as Record<string, unknown>)['mandateAdmit']) redis.defineCommand('mandateAdmit', { lua: ADMIT })
  const run = (redis as unknown as { mandateAdmit: AdmitCommand }).mandateAdmit.bind(redis)
  // The store's memory begins now when it is new; a marker already there is kept.
  await redis.set(markerKey, String(clock()), 'NX')

  const bucketKey = (b: BucketCharge): string =>
    b.scope === 'agent' ? `${prefix}rl:a:${b.agent}` : `${prefix}rl:u:${b.agent}:${createHash('sha256').update(`${b.issuer}\n${b.sub}`).digest('base64url')}`

  function decide(reply: unknown, request: AdmissionRequest): Admission {
    const [code, a, b] = (typeof reply === 'number' ? [reply] : reply) as [number, number | undefined, number | undefined]
    switch (code) {
      case 0:
        return { outcome: 'admitted' }
      case 1:
        return { outcome: a === 0 && request.assertion !== undefined ? 'replayed' : 'proof_replayed' }
      case 2:
        return { outcome: 'predates_memory', retryAfter: retryAfterSeconds(a!) }
      case 3:
        return { outcome: 'limited', scope: request.buckets[a!]!.scope, retryAfter: retryAfterSeconds(b!) }
      default:
        throw new Error(`admission script: unexpected reply ${String(code)}`)
    }
  }

  async function script(request: AdmissionRequest, now: number): Promise<Admission> {
    const { assertion, proofs = [], buckets } = request
    const uses = assertion === undefined ? proofs : [assertion, ...proofs]
    const keys: string[] = [markerKey]
    const args: (string | number)[] = [now, uses.length]
    for (const use of uses) {
      keys.push(`${prefix}jti:${use.key}`)
      args.push(use.earliestUse, Math.max(1_000, Math.ceil(use.expiresAt - now)))
    }
    for (const b of buckets) {
      keys.push(bucketKey(b))
      args.push(b.limit.perSecond / 1000, b.limit.burst, msToFill(b.limit) + 1_000)
    }
    return decide(await run(keys.length, ...keys, ...args), request)
  }

  async function admit(request: AdmissionRequest): Promise<Admission> {
    const now = clock()
    const decision = script(request, now)
    if (clientBound) return decision
    return withTimeout(decision, timeoutMs, () => new Error(`admission store: redis did not answer within ${timeoutMs} ms`))
  }

  /** Reads the buckets (one MGET) and does the script's arithmetic on them here: nothing is written. */
  async function peek(charges: readonly BucketCharge[]): Promise<Admission> {
    if (charges.length === 0) return { outcome: 'admitted' }
    const now = clock()
    const states = await withTimeout(
      redis.mget(...charges.map(bucketKey)),
      timeoutMs,
      () => new Error(`admission store: redis did not answer within ${timeoutMs} ms`),
    )
    for (const [i, b] of charges.entries()) {
      const m = /^(\S+) (\S+)$/.exec(states[i] ?? '')
      const tokens = tokensAt(m === null ? undefined : { tokens: Number(m[1]), at: Number(m[2]) }, b.limit, now)
      if (tokens < 1) return { outcome: 'limited', scope: b.scope, retryAfter: retryAfterSeconds(msUntilToken(tokens, b.limit)) }
    }
    return { outcome: 'admitted' }
  }

  return { admit, peek }
}
