/**
 * /revocations/feed: the broker's revocation list as server-sent events,
 * for resource servers that cannot reach Redis. Wire format:
 * packages/verifier/src/feed-wire.ts (`@mandate/verifier/feed-wire`).
 *
 * Followed by resource servers with their own credentials (`resource_servers`
 * in the config): Basic on GET or POST, or a client assertion (RFC 7523) in a
 * POST's form body, since RFC 7521 §4.2 puts assertions in the body, which a
 * GET lacks; a fresh assertion per connection. An admin key holding `read`
 * (auditor, admin) also opens it. A new connection gets a `snapshot`, then
 * one `revocation` event per record the broker's mirror applies (made here
 * or arriving from Redis; the Redis echo of a record made here is sent
 * once), and a `heartbeat` every 250 ms carrying the broker's own freshness. A client
 * reconnecting with `Last-Event-ID` is replayed exactly what it missed when
 * this process still has it (a bounded journal); otherwise it gets a fresh
 * snapshot. A resync of the broker's mirror sends every client a snapshot.
 *
 * A client that stops reading is cut off once its queue passes a bound (it
 * reconnects and gets a snapshot). Streams end, and their timers with them,
 * when the client disconnects and when the service ends its subscriptions
 * (server shutdown).
 */
import { randomUUID } from 'node:crypto'
import type { Context, Hono } from 'hono'
import { describeRoute, resolver, type DescribeRouteOptions } from 'hono-openapi'
import { z } from 'zod'
import { streamSSE, type SSEMessage, type SSEStreamingApi } from 'hono/streaming'
import type { RevocationService } from '../../revocation/service.js'
import type { PropagationTracker } from '../../revocation/propagation.js'
import { encodeFeedRecord, encodeHeartbeat, encodeSnapshot, FEED_EVENTS, feedEventId, feedSequence } from '@mandate/verifier/feed-wire'
import { OAuthError } from '../../core/errors.js'
import type { AuthenticatedCaller, ClientCredentials } from '../../tokens/port.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import type { AppEnv } from '../env.js'
import { clientCredentials } from '../client-credentials.js'
import { FormParams, readForm } from '../form.js'
import { AdminError } from '../oauth-errors.js'
import { adminErrors, ClientAuthFields } from '../openapi.js'

export interface RevocationFeedDeps {
  readonly keys: readonly AdminKey[]
  /** Authenticates a configured resource server and spends its assertion, if any; without it only admin keys open the feed. */
  readonly resourceServers?: (credentials: ClientCredentials) => Promise<AuthenticatedCaller>
  /** Largest POST body read. Default 64 KiB. */
  readonly maxBodyBytes?: number
  readonly revocations: Pick<RevocationService, 'records' | 'subscribe' | 'fresh' | 'lag'>
  /** Records who opened the feed (the audit log); rejecting refuses the feed. */
  readonly recordOpen?: (c: Context) => Promise<void>
  /** Default 250. */
  readonly heartbeatMs?: number
  /** Records kept to replay a resume exactly. Default 4096. */
  readonly journalSize?: number
  /** Messages queued for one slow client before it is cut off. Default 10 000. */
  readonly maxQueue?: number
  /** Told of each stream opened and of what is written to it (GET /admin/revocations/{id}/propagation reads it). */
  readonly propagation?: Pick<PropagationTracker, 'feedOpened'>
  /** Epoch ms: when a snapshot was taken. Default Date.now. */
  readonly clock?: () => number
}

const feedDoc = (method: 'GET' | 'POST', more: Partial<DescribeRouteOptions>) =>
  describeRoute({
    tags: ['Revocation feed'],
    operationId: method === 'GET' ? 'followRevocationFeed' : 'followRevocationFeedWithAssertion',
    summary: method === 'GET' ? 'Follow the revocation list (server-sent events)' : 'Follow the revocation list, authenticating in the form',
    description:
      'For resource servers that cannot reach Redis (`resource_servers` in the config), or an admin key with `read`. Events: `snapshot` ' +
      '(`{"fresh", "lag_ms", "records"}`, every record; sent first, and again after a resync), `revocation` (one record, to apply), ' +
      '`heartbeat` (`{"fresh", "lag_ms"}` every 250 ms; none heard, or `fresh: false`, means the revocation state is unknown). ' +
      'Reconnect with `Last-Event-ID` to be replayed what was missed. Opening the feed is recorded in the delegation log.',
    ...more,
    responses: {
      200: { description: 'The event stream, until either side closes it.', content: { 'text/event-stream': { schema: { type: 'string' } } } },
      ...adminErrors(400, 401, 403, ...(method === 'POST' ? ([413] as const) : []), 503),
    },
  })

interface Client {
  push(message: SSEMessage): void
  /** Drops what is queued (the snapshot holds it) and queues `snapshot`. */
  resync(snapshot: SSEMessage): void
  end(): void
}

/** Mounts GET and POST /revocations/feed. Subscribes to the service once, for the app's life. */
export function mountRevocationFeed(app: Hono<AppEnv>, deps: RevocationFeedDeps): void {
  // Long, not split: the GET and POST routes share the event sequence, the replay journal and the open clients.
  const heartbeatMs = deps.heartbeatMs ?? 250
  const journalSize = deps.journalSize ?? 4096
  const maxQueue = deps.maxQueue ?? 10_000
  if (!(heartbeatMs > 0) || !(journalSize >= 0) || !(maxQueue > 0)) throw new TypeError('revocation feed: bad limits')
  const { revocations } = deps

  const instance = randomUUID().replaceAll('-', '').slice(0, 16)
  let sequence = 0
  /** Sequence of the last resync: a resume from before it cannot be served exactly. */
  let resetAt = 0
  /** The last `journalSize` record events, oldest first, contiguous in sequence after `resetAt`. */
  let journal: { readonly sequence: number; readonly data: string; readonly record: string }[] = []
  /** What a written message tells the propagation notes: the record it carries, or when its snapshot was taken. Shared by every client's queue. */
  const carries = new WeakMap<SSEMessage, { readonly record: string } | { readonly takenAt: number }>()
  const clock = deps.clock ?? Date.now
  /** Record id → what was last sent for it: the Redis stream echoes each local revocation, sent once. */
  const lastSent = new Map<string, string>()
  const clients = new Set<Client>()
  let ended = false

  const freshness = () => ({ fresh: revocations.fresh(), lagMs: revocations.lag() })
  const snapshot = (): SSEMessage => {
    const message = { event: FEED_EVENTS.snapshot, id: feedEventId(instance, sequence), data: encodeSnapshot(revocations.records(), freshness()) }
    carries.set(message, { takenAt: clock() })
    return message
  }
  const recordEvent = (sequence: number, data: string, record: string): SSEMessage => {
    const message = { event: FEED_EVENTS.revocation, id: feedEventId(instance, sequence), data }
    carries.set(message, { record })
    return message
  }

  revocations.subscribe(
    (record) => {
      const data = encodeFeedRecord(record)
      if (lastSent.get(record.id) === data) return
      lastSent.delete(record.id)
      lastSent.set(record.id, data)
      if (lastSent.size > Math.max(journalSize, 1024)) lastSent.delete(lastSent.keys().next().value!)
      sequence++
      journal.push({ sequence, data, record: record.id })
      // Trimmed in batches: amortized O(1) per record.
      if (journal.length > journalSize * 2) journal = journalSize === 0 ? [] : journal.slice(-journalSize)
      const message = recordEvent(sequence, data, record.id)
      for (const client of clients) client.push(message)
    },
    {
      onResync() {
        sequence++
        resetAt = sequence
        journal = []
        lastSent.clear()
        if (clients.size === 0) return
        const message = snapshot()
        for (const client of clients) client.resync(message)
      },
      onEnd() {
        ended = true
        for (const client of [...clients]) client.end()
      },
    },
  )

  /** What a (re)connecting client is sent first: the events it missed, or a snapshot. */
  function opening(lastEventId: string | undefined): SSEMessage[] {
    const from = feedSequence(instance, lastEventId)
    if (from === undefined || from < resetAt || from > sequence) return [snapshot()]
    if (from === sequence) return []
    const kept = journal.filter((e) => e.sequence > from)
    const first = kept[0]
    if (first === undefined || first.sequence !== from + 1 || kept.length !== sequence - from) return [snapshot()]
    return kept.map((e) => recordEvent(e.sequence, e.data, e.record))
  }

  async function follow(c: Context, stream: SSEStreamingApi): Promise<void> {
    if (ended) return
    let queue: SSEMessage[] = []
    let finished = false
    let wake: (() => void) | undefined
    let stop = () => {}
    const stopped = new Promise<void>((resolve) => {
      stop = resolve
    })
    const finish = () => {
      finished = true
      stop()
      wake?.()
    }
    const client: Client = {
      push(message) {
        if (finished) return
        if (queue.length >= maxQueue) return finish()
        queue.push(message)
        wake?.()
      },
      resync(message) {
        queue = []
        client.push(message)
      },
      end: finish,
    }
    const heartbeat = () => client.push({ event: FEED_EVENTS.heartbeat, data: encodeHeartbeat(freshness()) })
    const resourceServer = c.get('resourceServer') as string | undefined
    const notes = deps.propagation?.feedOpened(resourceServer ?? `admin:${c.get('adminKey') as string}`)
    const written = (message: SSEMessage) => {
      const carried = carries.get(message)
      if (notes === undefined || carried === undefined) return
      if ('record' in carried) notes.sent(carried.record)
      else notes.snapshot(carried.takenAt)
    }
    clients.add(client)
    // One heartbeat at a time: a client that is not reading does not pile them up.
    const timer = setInterval(() => queue.length === 0 && heartbeat(), heartbeatMs)
    const signal = c.req.raw.signal
    signal.addEventListener('abort', finish, { once: true })
    stream.onAbort(finish)
    let writing = false
    try {
      for (const m of opening(c.req.header('last-event-id'))) client.push(m)
      if (queue.length === 0) heartbeat()
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set by another callback while this awaits; TypeScript keeps the narrowing from before the await
      while (!finished && !signal.aborted) {
        const message = queue.shift()
        if (message === undefined) {
          await new Promise<void>((resolve) => {
            wake = resolve
          })
          wake = undefined
          continue
        }
        // A write waits for the client to read: a client gone or cut off must not hold this loop.
        writing = true
        await Promise.race([
          stream
            .writeSSE(message)
            .then(() => written(message))
            .finally(() => (writing = false)),
          stopped,
        ])
      }
    } finally {
      finish()
      clearInterval(timer)
      clients.delete(client)
      notes?.closed()
      signal.removeEventListener('abort', finish)
      // Ends the response now rather than after a write the client will never read; otherwise streamSSE closes it.
      if (writing) stream.abort()
    }
  }

  const adminGuard = requireAdmin(deps.keys, 'read')
  const maxBodyBytes = deps.maxBodyBytes ?? 64 * 1024

  /**
   * An admin key (`Authorization: Bearer`) through the admin guard; anything
   * else is a resource server's client authentication. Sets `adminKey` or
   * `resourceServer`, which the request log and the audit record name.
   */
  async function authenticateReader(c: Context<AppEnv>): Promise<void> {
    const authorization = c.req.header('authorization')
    const { resourceServers } = deps
    if (resourceServers === undefined || (authorization !== undefined && /^Bearer /i.test(authorization))) {
      // eslint-disable-next-line @typescript-eslint/no-unsafe-argument -- the guard's env has `adminKey` set, AppEnv has it optional until the guard sets it: neither Context fits the other
      await adminGuard(c as Context, async () => {})
      return
    }
    try {
      const form = new FormParams(c.req.method === 'POST' ? await readForm(c, maxBodyBytes) : new URLSearchParams())
      const caller = await resourceServers(clientCredentials(authorization, form))
      if (caller.kind !== 'resource_server') throw new AdminError('unauthorized', 'valid credentials are required', 'not a resource server')
      c.set('resourceServer', caller.server.id)
    } catch (err) {
      if (!(err instanceof OAuthError)) throw err
      switch (err.code) {
        case 'invalid_client':
          throw new AdminError('unauthorized', 'valid credentials are required', err.detail)
        case 'temporarily_unavailable':
          throw new AdminError('temporarily_unavailable', err.description, err.detail)
        default:
          throw new AdminError('invalid_request', err.description, err.detail)
      }
    }
  }

  app.get('/revocations/feed', feedDoc('GET', { security: [{ clientSecretBasic: [] }, { adminKey: [] }] }))
  app.post(
    '/revocations/feed',
    feedDoc('POST', {
      security: [{ clientSecretBasic: [] }, { adminKey: [] }, {}],
      requestBody: {
        required: false,
        description: 'A client assertion (RFC 7521 §4.2 puts it in the body, which a GET lacks): a fresh one per connection.',
        content: { 'application/x-www-form-urlencoded': { schema: resolver(z.object(ClientAuthFields)) } },
      },
    }),
  )
  app.on(['GET', 'POST'], '/revocations/feed', async (c) => {
    await authenticateReader(c)
    await deps.recordOpen?.(c)
    c.header('X-Accel-Buffering', 'no')
    const response = streamSSE(c, (stream) => follow(c, stream))
    // The socket goes with the stream: a feed ended at shutdown must not linger as an idle keep-alive.
    response.headers.set('Connection', 'close')
    return response
  })
}
