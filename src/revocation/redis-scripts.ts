/**
 * The Lua scripts of the Redis revocation feed (layout: redis.ts "Shared
 * state"), each with the names of its keys and arguments and the type of its
 * reply, so that a call names what it passes instead of counting positions.
 */
import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'

/** The keys of one prefix's revocation list. */
export interface FeedKeys {
  readonly records: string
  readonly stream: string
  readonly expiry: string
  readonly epoch: string
  readonly lock: string
}

export function feedKeys(prefix: string): FeedKeys {
  return {
    records: `${prefix}rev:records`,
    stream: `${prefix}rev:stream`,
    expiry: `${prefix}rev:expiry`,
    epoch: `${prefix}rev:epoch`,
    lock: `${prefix}rev:seed-lock`,
  }
}

/** A script: Lua and its SHA1, the names of KEYS and ARGV in order, and (as a type only) its reply. */
export interface RedisScript<K extends string, A extends string, R> {
  readonly lua: string
  readonly sha: string
  readonly keys: readonly K[]
  readonly args: readonly A[]
  /** Never set: carries the reply type. */
  readonly reply?: R
}

function script<R>() {
  return <const K extends string, const A extends string>(keys: readonly K[], args: readonly A[], lua: string): RedisScript<K, A, R> => ({
    lua,
    sha: createHash('sha1').update(lua).digest('hex'),
    keys,
    args,
  })
}

/** `publish` overwrites (never a lift with an unlifted version); `merge` writes only what is missing or newly lifted; `seed` is `merge` without a stream entry. */
export type PutMode = 'publish' | 'merge' | 'seed'

/** Writes one record to the hash, the expiry set and (but for `seed`) the stream. Replies 1 when written, 0 when not. */
export const PUT = script<0 | 1>()(
  ['records', 'stream', 'expiry'],
  ['id', 'json', 'lifted', 'expiresAt', 'maxlen', 'mode'],
  `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cur == ARGV[2] then return 0 end
  local ok, doc = pcall(cjson.decode, cur)
  local curLifted = ok and type(doc) == 'table' and doc['liftedAt'] ~= nil
  if curLifted and ARGV[3] == '0' then return 0 end
  if ARGV[6] ~= 'publish' and (curLifted or ARGV[3] == '0') then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
if ARGV[6] ~= 'seed' then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'r', ARGV[2]) end
return 1
`,
)

/** Atomically: the epoch (nil when missing), the stream's last id (nil when empty), and the whole hash, flat. */
export const SNAPSHOT = script<[epoch: string | null, tail: string | null, flat: string[]]>()(
  ['epoch', 'stream', 'records'],
  [],
  `
local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last = false
if #tail > 0 then last = tail[1][1] end
return { redis.call('GET', KEYS[1]), last, redis.call('HGETALL', KEYS[3]) }
`,
)

/** Drops up to 1000 records expired at `now` (epoch seconds); replies how many. */
export const SWEEP = script<number>()(
  ['expiry', 'records'],
  ['now'],
  `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
if #ids > 0 then
  redis.call('HDEL', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[1], unpack(ids))
end
return #ids
`,
)

/** Releases the seed lock if `owner` still holds it. */
export const UNLOCK = script<0 | 1>()(
  ['lock'],
  ['owner'],
  `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`,
)

/** Runs `s` by its SHA1, loading it again when Redis has forgotten it (a restart). */
export async function runScript<K extends string, A extends string, R>(
  conn: Redis,
  s: RedisScript<K, A, R>,
  keys: Readonly<Record<K, string>>,
  args: Readonly<Record<A, string>>,
): Promise<R> {
  const keyList = s.keys.map((k) => keys[k])
  const argList = s.args.map((a) => args[a])
  try {
    return (await conn.evalsha(s.sha, keyList.length, ...keyList, ...argList)) as R
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('NOSCRIPT')) return (await conn.eval(s.lua, keyList.length, ...keyList, ...argList)) as R
    throw err
  }
}
