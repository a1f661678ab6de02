/**
 * GET /admin/revocations/{id}/propagation: where one revocation has reached
 * (the responder console shows it after a kill). Read from the notes every
 * broker instance keeps (revocation/propagation.ts) and from the SET outbox.
 */
import type { Hono } from 'hono'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import type { AuditLog } from '../../audit/port.js'
import type { Revocation } from '../../revocation/port.js'
import { isLive, sentAtOf, type PropagationTracker, type StoredPropagation } from '../../revocation/propagation.js'
import type { RevocationService } from '../../revocation/service.js'
import type { SetDelivery } from '../../ssf/delivery-of.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import type { AppEnv } from '../env.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, parametersOf } from '../openapi.js'
import { recordAdminRead } from './admin-audit.js'

const Instant = z.iso.datetime({ offset: true })

export const RevocationPropagation = z
  .strictObject({
    revocation_id: z.uuid(),
    kind: z.enum(['jti', 'chain', 'agent', 'sub', 'agent_sub', 'instance']),
    created_at: Instant,
    checked_at: Instant.describe('When this answer was put together (the answering instance’s clock).'),
    complete: z
      .boolean()
      .describe(
        'True when every live instance’s mirror applied the record, the record was written to every feed stream open on a live instance, ' +
          'and every SSF receiver has its SETs delivered (or its stream began after the revocation).',
      ),
    instances: z
      .array(
        z.strictObject({
          instance: z.string().describe('The instance’s `instance_id` (per worker with `serve --workers`; `<id>/admin` for the admin thread).'),
          live: z.boolean().describe('Heard from within the last three heartbeats (6 s); an instance that is not live does not count against `complete`.'),
          applied_at: Instant.nullable().describe('When its revocation mirror applied the record; null: not (yet).'),
          last_seen: Instant.nullable().describe('Its last heartbeat; null when no longer known.'),
        }),
      )
      .describe('Live instances, and instances that applied the record and have stopped since.'),
    feed_subscribers: z
      .array(
        z.strictObject({
          subscriber: z.string().describe('The resource server’s id, or `admin:<key name>` for an admin key.'),
          connection: z.string().describe('One open stream of /revocations/feed (a subscriber may hold several).'),
          instance: z.string().describe('The instance serving the stream.'),
          connected_at: Instant,
          sent_at: Instant.nullable().describe(
            'When the record was written to the stream (its own event, or a snapshot holding it): written to the open connection, not acknowledged by the subscriber. Null: not yet.',
          ),
        }),
      )
      .describe('Every revocation-feed stream open on a live instance, now.'),
    ssf_receivers: z
      .array(
        z.strictObject({
          receiver: z.string(),
          method: z.enum(['push', 'poll']),
          state: z
            .enum(['delivered', 'pending', 'failed', 'not_queued', 'before_stream'])
            .describe(
              '`delivered`: every SET of the revocation pushed (202) or acknowledged by a poll; `pending`: queued; `failed`: given up; ' +
                '`not_queued`: not yet picked up from the log; `before_stream`: made before the receiver’s stream began, never sent to it.',
            ),
          attempts: z.number().int().describe('Push attempts so far.'),
          last_error: z.string().nullable(),
          enqueued_at: Instant.nullable(),
        }),
      )
      .describe('Shared Signals receivers (`ssf.receivers`); empty when none is configured.'),
  })
  .meta({ id: 'RevocationPropagation' })
export type RevocationPropagation = z.infer<typeof RevocationPropagation>

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString())

/** The answer, from what the store holds, the SET outbox's state and the time `now` (epoch ms). Pure. */
export function propagationOf(record: Revocation, stored: StoredPropagation, ssf: readonly SetDelivery[], now: number): RevocationPropagation {
  const names = new Set([...stored.instances].filter(([, seen]) => isLive(seen, now)).map(([name]) => name))
  for (const name of stored.applied.keys()) names.add(name)
  const instances = [...names].sort().map((instance) => {
    const seen = stored.instances.get(instance)
    return { instance, live: isLive(seen, now), applied_at: iso(stored.applied.get(instance)), last_seen: iso(seen) }
  })
  const live = instances.filter((i) => i.live)
  const feeds = stored.feeds
    .filter((f) => isLive(stored.instances.get(f.instance), now))
    .map((f) => ({
      subscriber: f.subscriber,
      connection: f.connection,
      instance: f.instance,
      connected_at: iso(f.connectedAt)!,
      sent_at: iso(sentAtOf(f, stored)),
    }))
    .sort((a, b) => a.subscriber.localeCompare(b.subscriber) || a.connected_at.localeCompare(b.connected_at))
  const complete =
    live.length > 0 &&
    live.every((i) => i.applied_at !== null) &&
    feeds.every((f) => f.sent_at !== null) &&
    ssf.every((d) => d.state === 'delivered' || d.state === 'before_stream')
  return {
    revocation_id: record.id,
    kind: record.target.kind,
    created_at: iso(record.createdAt * 1000)!,
    checked_at: iso(now)!,
    complete,
    instances,
    feed_subscribers: feeds,
    ssf_receivers: ssf.map((d) => ({
      receiver: d.receiver,
      method: d.method,
      state: d.state,
      attempts: d.attempts,
      last_error: d.lastError ?? null,
      enqueued_at: iso(d.enqueuedAtMs),
    })),
  }
}

export interface PropagationRouteDeps {
  readonly keys: readonly AdminKey[]
  readonly revocations: Pick<RevocationService, 'get'>
  readonly propagation: Pick<PropagationTracker, 'read' | 'clock'>
  /** Where the revocation's SETs stand; absent when no SSF receiver is configured. */
  readonly ssfDelivery: ((r: Revocation) => Promise<readonly SetDelivery[]>) | undefined
  readonly audit: AuditLog
  /** Epoch seconds (the audit record's time). */
  readonly now: () => number
}

const RevocationId = z
  .string()
  .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  .describe("The revocation's id.")

export function mountRevocationPropagation(app: Hono<AppEnv>, deps: PropagationRouteDeps): void {
  const doc = describeRoute({
    tags: ['Admin'],
    operationId: 'getRevocationPropagation',
    summary: 'Where a revocation has reached: instances, feed subscribers, SSF receivers (auditor, admin)',
    description:
      'Each broker instance notes when its revocation mirror applied a record and when it wrote it to each open /revocations/feed stream ' +
      '(in Redis with `storage.redis_url`, kept 24 h; otherwise this process is the only instance). "Sent" means written to the open ' +
      'stream, not acknowledged by the subscriber. SSF receivers are read from the SET outbox. The read is recorded in the delegation log.',
    security: [{ adminKey: [] }],
    parameters: parametersOf('path', z.object({ id: RevocationId })),
    responses: { 200: { description: 'Where it stands now.', content: jsonContent(RevocationPropagation) }, ...adminErrors(401, 403, 404, 503) },
  })
  app.get('/admin/revocations/:id/propagation', doc, requireAdmin(deps.keys, 'read'), async function getRevocationPropagation(c) {
    const id = c.req.param('id')
    await recordAdminRead(c, deps.audit, 'admin.revocations.read', deps.now())
    const unavailable = () => {
      throw new AdminError('temporarily_unavailable', 'revocation store unavailable')
    }
    const record = RevocationId.safeParse(id).success ? await deps.revocations.get(id).catch(unavailable) : undefined
    if (record === undefined) throw new AdminError('not_found', 'no revocation has that id')
    const [stored, ssf] = await Promise.all([
      deps.propagation.read(record.id).catch(() => {
        throw new AdminError('temporarily_unavailable', 'propagation notes unavailable (Redis unreachable)')
      }),
      (deps.ssfDelivery?.(record) ?? Promise.resolve([])).catch(() => {
        throw new AdminError('temporarily_unavailable', 'SET outbox unavailable')
      }),
    ])
    return c.json(propagationOf(record, stored, ssf, deps.propagation.clock()), 200, NO_STORE)
  })
}
