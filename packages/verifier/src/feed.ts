/**
 * The client of the broker's revocation feed (`/revocations/feed`,
 * server-sent events, wire format in feed-wire.ts): it keeps a
 * {@link RevocationMirror} in step, and says whether it can vouch for it.
 * The mirror is checked in memory on every request; a feed that cannot vouch
 * for it makes the verifier refuse (503).
 */
import { decodeFeedRecord, decodeHeartbeat, decodeSnapshot, FEED_EVENTS } from './feed-wire.js'
import type { RevocationMirror } from './revocation.js'
import { SseParser, type SseEvent } from './sse.js'

/** Where a verifier's warnings go: pino's `logger.warn(fields, message)` fits, as does a console wrapper. */
export interface VerifierLogger {
  warn(fields: Record<string, unknown>, message: string): void
  info(fields: Record<string, unknown>, message: string): void
}

const SILENT: VerifierLogger = { warn: () => undefined, info: () => undefined }

export interface RevocationSource {
  /** True while the mirror is known to be in step with the broker. */
  fresh(): boolean
  /** Why it is not fresh, for logs and error details. */
  status(): string
  /** Resolves once the mirror first holds the whole list. Never rejects. */
  readonly synced: Promise<void>
  close(): Promise<void>
}

/** One connection's request: method, headers and body, made afresh for each connection (a client assertion's `jti` is spent once). */
export interface FeedRequest {
  readonly method: 'GET' | 'POST'
  readonly headers: Readonly<Record<string, string>>
  readonly body?: string
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Resolves once `promise` settles (either way) or after `ms`: a bounded wait during a shutdown. */
async function settleWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const elapsed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
  })
  try {
    await Promise.race([promise.then(noop, noop), elapsed])
  } finally {
    clearTimeout(timer)
  }
}
const noop = () => undefined

/**
 * Follows the broker's revocation feed (wire format: feed-wire.ts), each
 * connection opened with a fresh `request()`. Reconnects
 * by itself (100 ms, doubling to 1 s) with `Last-Event-ID`, so the broker
 * replays what was missed or sends a fresh snapshot. Fresh while a snapshot
 * was received, the last event (heartbeats every 250 ms) is at most
 * `staleAfterMs` old on the process's monotonic clock, and the broker says
 * its own list is fresh. A connection silent for twice that is dropped and
 * made again. Redirects are refused: the credentials go to `url` only.
 */
export function followFeed(options: {
  readonly url: string
  readonly request: () => Promise<FeedRequest>
  readonly mirror: RevocationMirror
  readonly staleAfterMs: number
  readonly fetch?: typeof fetch
  readonly logger?: VerifierLogger
}): RevocationSource {
  // Long, not split: the connection, the SSE parser, the watchdog and the backoff share one reconnecting state.
  const { mirror, staleAfterMs } = options
  const logger = options.logger ?? SILENT
  const fetchImpl = options.fetch ?? fetch
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
      const request = await options.request()
      const headers: Record<string, string> = { ...request.headers, accept: 'text/event-stream', 'cache-control': 'no-cache' }
      if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
      const response = await fetchImpl(options.url, { ...request, headers, signal: ac.signal, redirect: 'error' })
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
          logger.info({}, 'revocation feed connected again')
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
  // Never holds a process open (Node; other runtimes' timers have no unref).
  ;(watchdog as { unref?: () => void }).unref?.()
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
