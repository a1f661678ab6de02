import type { Hono } from 'hono'
import type { AppEnv } from '../env.js'
import { describeRoute } from 'hono-openapi'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, WebhookList } from '../openapi.js'

/** One webhook's delivery state. Times are epoch ms. */
export interface WebhookStatus {
  readonly id: string
  /** Origin and a shortened path: never a whole incoming-webhook URL, whose path is a credential. */
  readonly url: string
  readonly events: readonly string[]
  readonly format: 'standard' | 'slack'
  readonly lastSuccessAt: number | undefined
  readonly lastFailureAt: number | undefined
  readonly lastFailure: string | undefined
  readonly pending: number
  readonly nextAttemptAt: number | undefined
}

/** The configured webhooks' delivery state (src/compose/notifications.ts). */
export interface WebhookStatuses {
  /** In config order. Rejects when the database fails. */
  list(): Promise<readonly WebhookStatus[]>
}

const adminKey = [{ adminKey: [] }]
const instant = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString())

/** GET /admin/webhooks: every configured webhook's delivery state (auditor, admin); an empty list when none is configured. */
export function mountAdminWebhooks(app: Hono<AppEnv>, deps: { readonly keys: readonly AdminKey[]; readonly webhooks: WebhookStatuses | undefined }): void {
  const listDoc = describeRoute({
    tags: ['Admin'],
    operationId: 'listWebhooks',
    summary: 'Webhooks and their delivery state (auditor, admin)',
    description: 'Per configured webhook: last delivery accepted, last failure and why, events waiting, and when the head of its queue is tried again.',
    security: adminKey,
    responses: { 200: { description: 'Every configured webhook.', content: jsonContent(WebhookList) }, ...adminErrors(401, 403, 503) },
  })
  app.get('/admin/webhooks', listDoc, requireAdmin(deps.keys, 'read'), async function listWebhooks(c) {
    const hooks: readonly WebhookStatus[] = await (deps.webhooks?.list() ?? Promise.resolve([])).catch(() => {
      throw new AdminError('temporarily_unavailable', 'the database did not answer; try again')
    })
    const body = hooks.map((h) => ({
      id: h.id,
      url: h.url,
      events: h.events,
      format: h.format,
      last_success_at: instant(h.lastSuccessAt),
      last_failure_at: instant(h.lastFailureAt),
      last_failure: h.lastFailure ?? null,
      pending: h.pending,
      next_attempt_at: instant(h.nextAttemptAt),
    }))
    return c.json({ webhooks: body }, 200, NO_STORE)
  })
}
