/**
 * Where a verifier's revocation mirror comes from: the broker's Redis (a
 * read-only follower) or the broker's `/revocations/feed` (server-sent
 * events). Either way the mirror is checked in memory on every request, and
 * a source that cannot vouch for it makes the verifier refuse (503).
 */
import { pino, type Logger } from 'pino'
import { settleWithin } from '../core/async.js'
import { CLIENT_ASSERTION_TYPE_JWT } from '../core/claims.js'
import { messageOf } from '../core/errors.js'
import { decodeFeedRecord, decodeHeartbeat, decodeSnapshot, FEED_EVENTS } from '../revocation/feed-wire.js'
import type { RevocationFeed, RevocationMirror } from '../revocation/port.js'
import { SseParser, type SseEvent } from './sse.js'

export interface RevocationSource {
  /** True while the mirror is known to be in step with the broker. */
  fresh(): boolean
  /** Why it is not fresh, for logs and error details. */
  status(): string
  /** Resolves once the mirror first holds the whole list. Never rejects. */
  readonly synced: Promise<void>
  close(): Promise<void>
}

const silent = () => pino({ enabled: false })

/**
 * Follows the broker's Redis read-only (src/revocation/redis.ts "Read-only
 * followers"): it never writes a key, and a Redis the brokers have not
 * (re)seeded yet leaves it stale.
 */
export function followRedis(options: {
  readonly url: string
  readonly prefix: string
  readonly mirror: RevocationMirror
  readonly staleAfterMs: number
  /** Epoch milliseconds. */
  readonly now: () => number
  readonly logger?: Logger
}): RevocationSource {
  let feed: RevocationFeed | undefined
  let failure: string | undefined
  let closed = false
  let disconnect = () => {}
  // ioredis and the Redis feed are loaded only here: a verifier that follows the broker's feed never loads a Redis client.
  const started = Promise.all([import('ioredis'), import('../revocation/redis.js')])
    .then(([{ Redis }, { createRedisRevocationFeed }]) => {
      // A template only: the feed duplicates it; it never connects itself.
      const template = new Redis(options.url, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 1 })
      template.on('error', () => undefined)
      disconnect = () => template.disconnect()
      return createRedisRevocationFeed({
        readOnly: true,
        waitForFirstSync: false,
        redis: template,
        prefix: options.prefix,
        mirror: options.mirror,
        now: options.now,
        staleAfterMs: options.staleAfterMs,
        blockMs: Math.max(1, Math.min(250, Math.floor(options.staleAfterMs / 4))),
        logger: options.logger ?? silent(),
      })
    })
    .then(
      (f) => {
        feed = f
        return f
      },
      (err: unknown) => {
        failure = messageOf(err)
        return undefined
      },
    )
  const synced = started.then(
    (f) =>
      new Promise<void>((resolve) => {
        const poll = () => {
          if (closed || f === undefined) return
          if (f.fresh()) resolve()
          else setTimeout(poll, 10).unref()
        }
        poll()
      }),
  )
  return {
    fresh: () => !closed && feed !== undefined && feed.fresh(),
    status: () => failure ?? (feed === undefined ? 'redis follower starting' : `no answer from redis (or no revocation list there) for ${feed.lag()} ms`),
    synced,
    async close() {
      closed = true
      await (await started)?.close()
      disconnect()
    },
  }
}

/**
 * How the feed client proves who it is, on every connection: a resource
 * server's own credentials (Basic on a GET, or a fresh client assertion in a
 * POST's form body, RFC 7521 §4.2), or an admin key holding `read`.
 */
export type FeedCredentials =
  | { readonly method: 'client_secret_basic'; readonly id: string; readonly secret: string }
  | { readonly method: 'private_key_jwt'; readonly assertion: () => Promise<string> }
  | { readonly method: 'admin_key'; readonly key: string }

/** RFC 6749 §2.3.1: the id and the secret are form-urlencoded, then Basic-encoded. */
function basicAuthorization(id: string, secret: string): string {
  const encode = (v: string) => new URLSearchParams({ v }).toString().slice(2)
  return `Basic ${Buffer.from(`${encode(id)}:${encode(secret)}`).toString('base64')}`
}

/** The request that opens one connection: a new assertion each time, since the broker spends its `jti`. */
async function feedRequest(credentials: FeedCredentials): Promise<{ method: 'GET' | 'POST'; headers: Record<string, string>; body?: string }> {
  switch (credentials.method) {
    case 'client_secret_basic':
      return { method: 'GET', headers: { authorization: basicAuthorization(credentials.id, credentials.secret) } }
    case 'admin_key':
      return { method: 'GET', headers: { authorization: `Bearer ${credentials.key}` } }
    case 'private_key_jwt': {
      const body = new URLSearchParams({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: await credentials.assertion() })
      return { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: body.toString() }
    }
  }
}

/**
 * Follows the broker's `/revocations/feed` (wire format:
 * src/revocation/feed-wire.ts) with `credentials`. Reconnects
 * by itself (100 ms, doubling to 1 s) with `Last-Event-ID`, so the broker
 * replays what was missed or sends a fresh snapshot. Fresh while a snapshot
 * was received, the last event (heartbeats every 250 ms) is at most
 * `staleAfterMs` old on the process's monotonic clock, and the broker says
 * its own list is fresh. A connection silent for twice that is dropped and
 * made again. Redirects are refused: the credentials go to `url` only.
 */
export function followFeed(options: {
  readonly url: string
  readonly credentials: FeedCredentials
  readonly mirror: RevocationMirror
  readonly staleAfterMs: number
  readonly logger?: Logger
}): RevocationSource {
  // Long, not split: the connection, the SSE parser, the watchdog and the backoff share one reconnecting state.
  const { mirror, staleAfterMs } = options
  const logger = options.logger ?? silent()
  const clock = () => performance.now()
  let closed = false
  let controller: AbortController | undefined
  let lastEventId: string | undefined
  let synced = false
  let brokerFresh = false
  let lastHeard = -Infinity
  /** Last byte on the current connection (or its start): the watchdog's measure. */
  let lastByte = clock()
  let lastError = 'not connected yet'
  let troubled = false
  let wakeSleep = () => {}
  let resolveSynced = () => {}
  const syncedPromise = new Promise<void>((resolve) => {
    resolveSynced = resolve
  })

  class ProtocolError extends Error {}

  function onEvent(e: SseEvent): void {
    switch (e.event) {
      case FEED_EVENTS.snapshot: {
        const snapshot = decodeSnapshot(e.data)
        if (snapshot === undefined) throw new ProtocolError('unreadable snapshot')
        if (snapshot.unreadable > 0) logger.warn({ count: snapshot.unreadable }, 'unreadable revocations in the feed snapshot skipped')
        mirror.replaceAll(snapshot.records)
        synced = true
        brokerFresh = snapshot.fresh
        lastEventId = e.id
        lastHeard = clock()
        resolveSynced()
        return
      }
      case FEED_EVENTS.revocation: {
        // Only ever after a snapshot on this connection or a resume of one.
        if (!synced) throw new ProtocolError('revocation before any snapshot')
        const record = decodeFeedRecord(e.data)
        if (record === undefined) logger.warn({ event: e.id }, 'unreadable revocation in the feed skipped')
        else mirror.apply(record)
        if (e.id !== undefined) lastEventId = e.id
        lastHeard = clock()
        return
      }
      case FEED_EVENTS.heartbeat: {
        const heartbeat = decodeHeartbeat(e.data)
        if (heartbeat === undefined) throw new ProtocolError('unreadable heartbeat')
        brokerFresh = heartbeat.fresh
        lastHeard = clock()
        return
      }
      default:
        // Events of a later version: ignored, and not taken as a sign of life.
        return
    }
  }

  let currentReader: ReadableStreamDefaultReader<Uint8Array> | undefined

  async function connectOnce(): Promise<void> {
    const ac = new AbortController()
    controller = ac
    lastByte = clock()
    try {
      const request = await feedRequest(options.credentials)
      const headers: Record<string, string> = { ...request.headers, accept: 'text/event-stream', 'cache-control': 'no-cache' }
      if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
      const response = await fetch(options.url, { ...request, headers, signal: ac.signal, redirect: 'error' })
      if (response.status !== 200 || response.body === null) {
        await response.body?.cancel().catch(() => undefined)
        throw new Error(`feed answered ${response.status}`)
      }
      if (!(response.headers.get('content-type') ?? '').toLowerCase().startsWith('text/event-stream')) {
        await response.body.cancel().catch(() => undefined)
        throw new Error('feed answered something other than text/event-stream')
      }
      // A fetch body is a byte stream (Fetch standard); undici-types leaves its chunk type `any`.
      const reader = (response.body as ReadableStream<Uint8Array>).getReader()
      currentReader = reader
      const decoder = new TextDecoder()
      const parser = new SseParser(onEvent)
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        lastByte = clock()
        parser.push(decoder.decode(value, { stream: true }))
        if (troubled) {
          troubled = false
          logger.info('revocation feed connected again')
        }
      }
      throw new Error('feed ended by the broker')
    } catch (err) {
      // An unreadable stream may have lost events: the next connection starts from a snapshot.
      if (err instanceof ProtocolError || err instanceof RangeError) lastEventId = undefined
      throw err
    } finally {
      ac.abort()
      if (controller === ac) controller = undefined
      currentReader = undefined
    }
  }

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms)
      wakeSleep = () => {
        clearTimeout(timer)
        resolve()
      }
    })

  async function run(): Promise<void> {
    let failures = 0
    while (!closed) {
      const started = clock()
      try {
        await connectOnce()
      } catch (err) {
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by another callback while this awaits; TypeScript keeps the narrowing from before the await
        if (closed) return
        const message = messageOf(err)
        lastError = message
        if (!troubled) {
          troubled = true
          logger.warn({ error: message }, 'revocation feed connection lost; failing closed once stale')
        }
      }
      // A connection that lasted starts the backoff over.
      failures = clock() - started > 5_000 ? 1 : failures + 1
      await sleep(Math.min(100 * 2 ** (failures - 1), 1_000))
    }
  }

  const watchdog = setInterval(
    () => {
      // A connection that went silent (a partition, a stuck proxy) is made again.
      if (controller !== undefined && clock() - lastByte > 2 * staleAfterMs) controller.abort()
    },
    Math.max(10, Math.floor(staleAfterMs / 4)),
  )
  watchdog.unref()
  const loop = run()

  return {
    fresh: () => !closed && synced && brokerFresh && clock() - lastHeard <= staleAfterMs,
    status() {
      if (!synced) return `no snapshot from the revocation feed yet (${lastError})`
      if (!brokerFresh) return 'the broker reports its revocation list stale'
      return `nothing from the revocation feed for ${Math.round(clock() - lastHeard)} ms (${lastError})`
    },
    synced: syncedPromise,
    async close() {
      closed = true
      clearInterval(watchdog)
      controller?.abort()
      // An abort does not always settle a read already pending on the body; cancel it too.
      void currentReader?.cancel().catch(() => undefined)
      wakeSleep()
      // Never let a stuck socket hold a shutdown: the loop has nothing left to do once closed.
      await settleWithin(loop, 2_000)
    },
  }
}
