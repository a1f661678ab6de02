/**
 * The propagation notes of every instance in Redis (propagation.ts), under
 * the broker's key prefix:
 * - `prop:instances`: sorted set, instance → last heartbeat (epoch ms);
 *   members unheard for an hour are dropped at each heartbeat;
 * - `prop:applied:<revocation id>`: hash, instance → when its mirror first
 *   applied the record (HSETNX); expires NOTE_TTL_MS after its last write;
 * - `prop:sent:<revocation id>`: hash, feed connection → when the record's
 *   own event was first written to it (HSETNX); same expiry;
 * - `prop:feeds:<instance>`: hash, connection → its subscriber, connection
 *   and snapshot times (JSON); expires LIVE_WINDOW_MS after the instance's
 *   last heartbeat, so a dead instance's streams leave with it.
 *
 * Every batch of notes and every heartbeat is one pipelined round trip on a
 * connection of its own, apart from the admission commands of the token path.
 */
import type { Redis, RedisOptions } from 'ioredis'
import { z } from 'zod'
import { quitRedis, redisReconnectDelay } from '../storage/redis.js'
import { isLive, LIVE_WINDOW_MS, NOTE_TTL_MS, type FeedConnection, type PropagationNote, type PropagationStore } from './propagation.js'

/** A gone instance's last heartbeat is kept this long, to show when it was last seen. */
const GONE_KEPT_MS = 3600 * 1000

const StoredFeed = z.object({ s: z.string(), c: z.number(), n: z.number().nullable() })

/** Undefined for text that is not JSON (a value some other writer left): skipped, never a failed read. */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

export interface RedisPropagationStore extends PropagationStore {
  close(): Promise<void>
}

/** `redis` is a template, duplicated (never used or closed here). `clock`: epoch ms. */
export function createRedisPropagationStore(redis: Redis, prefix: string, clock: () => number): RedisPropagationStore {
  const conn = redis.duplicate({
    connectionName: 'mandate-propagation',
    lazyConnect: false,
    // Queued while (re)connecting, each bounded by commandTimeout: the first notes come before the connection is up.
    enableOfflineQueue: true,
    maxRetriesPerRequest: 1,
    commandTimeout: 2_000,
    retryStrategy: redisReconnectDelay,
  } satisfies RedisOptions)
  conn.on('error', () => undefined) // the tracker logs failed writes once per outage
  const keys = {
    instances: `${prefix}prop:instances`,
    applied: (id: string) => `${prefix}prop:applied:${id}`,
    sent: (id: string) => `${prefix}prop:sent:${id}`,
    feeds: (instance: string) => `${prefix}prop:feeds:${instance}`,
  }
  const exec = async (p: ReturnType<Redis['pipeline']>): Promise<unknown[]> => {
    const replies = (await p.exec()) ?? []
    const failed = replies.find(([err]) => err !== null)
    if (failed !== undefined) throw failed[0] as Error
    return replies.map(([, value]) => value)
  }
  const feedJson = (f: FeedConnection) => JSON.stringify({ s: f.subscriber, c: f.connectedAt, n: f.snapshotAt ?? null })
  const pairs = (flat: unknown): Map<string, number> => new Map(Object.entries((flat ?? {}) as Record<string, string>).map(([k, v]) => [k, Number(v)] as const))

  return {
    async write(notes: readonly PropagationNote[]) {
      const p = conn.pipeline()
      for (const n of notes) {
        if (n.kind === 'applied') p.hsetnx(keys.applied(n.record), n.instance, n.at).pexpire(keys.applied(n.record), NOTE_TTL_MS)
        else if (n.kind === 'sent') p.hsetnx(keys.sent(n.record), n.connection, n.at).pexpire(keys.sent(n.record), NOTE_TTL_MS)
        else if (n.kind === 'opened')
          p.hset(keys.feeds(n.feed.instance), n.feed.connection, feedJson(n.feed)).pexpire(keys.feeds(n.feed.instance), LIVE_WINDOW_MS)
        else p.hdel(keys.feeds(n.instance), n.connection)
      }
      await exec(p)
    },
    async heartbeat(instance, at) {
      await exec(
        conn
          .pipeline()
          .zadd(keys.instances, at, instance)
          .pexpire(keys.feeds(instance), LIVE_WINDOW_MS)
          .zremrangebyscore(keys.instances, '-inf', at - GONE_KEPT_MS),
      )
    },
    async leave(instance) {
      await exec(conn.pipeline().zrem(keys.instances, instance).del(keys.feeds(instance)))
    },
    async read(record) {
      const [flatInstances, applied, sent] = await exec(
        conn.pipeline().zrange(keys.instances, 0, -1, 'WITHSCORES').hgetall(keys.applied(record)).hgetall(keys.sent(record)),
      )
      const list = flatInstances as string[]
      const instances = new Map<string, number>()
      for (let i = 0; i + 1 < list.length; i += 2) instances.set(list[i]!, Number(list[i + 1]))
      const now = clock()
      const live = [...instances].filter(([, seen]) => isLive(seen, now)).map(([name]) => name)
      const feeds: FeedConnection[] = []
      if (live.length > 0) {
        const perInstance = await exec(live.reduce((p, name) => p.hgetall(keys.feeds(name)), conn.pipeline()))
        live.forEach((instance, i) => {
          for (const [connection, json] of Object.entries((perInstance[i] ?? {}) as Record<string, string>)) {
            const parsed = StoredFeed.safeParse(parseJson(json))
            if (parsed.success)
              feeds.push({ connection, instance, subscriber: parsed.data.s, connectedAt: parsed.data.c, snapshotAt: parsed.data.n ?? undefined })
          }
        })
      }
      return { instances, applied: pairs(applied), sent: pairs(sent), feeds }
    },
    close: () => quitRedis(conn),
  }
}
