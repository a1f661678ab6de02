/**
 * GET /admin/policy/unused: per agent, what its policy grants that it did
 * not use in a window (audiences, scopes, delegation depth) and what it
 * asked for and was only ever denied, from the usage summaries
 * (src/core/least-privilege.ts decides). `mandate policy unused` prints it
 * and `mandate policy shrink` turns it into a diff of the policy file.
 */
import { refuseInvalid } from '../admin-input.js'
import type { Hono } from 'hono'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import type { AuditLog } from '../../audit/port.js'
import type { AgentId } from '../../core/claims.js'
import type { UsageReads } from '../../core/inventory.js'
import { DAY_SECONDS, NO_WINDOW_USAGE, unusedGrants, type UnusedReport } from '../../core/least-privilege.js'
import type { PolicyStore } from '../../policy/port.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import type { AppEnv } from '../env.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, parametersOf } from '../openapi.js'
import { recordAdminRead } from './admin-audit.js'

/** Longest window: the summaries keep every day, but a decade says nothing about today's needs. */
export const MAX_WINDOW_DAYS = 3650

const UnusedQuery = z.strictObject({
  agent: z
    .string()
    .min(1)
    .max(256)
    .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII')
    .optional()
    .describe('One agent (default: every agent a policy names).'),
  since: z
    .string()
    .regex(/^[1-9]\d{0,3}d$/, 'must be a number of days such as 30d')
    .transform((s) => Number(s.slice(0, -1)))
    .refine((n) => n <= MAX_WINDOW_DAYS, `must be at most ${MAX_WINDOW_DAYS}d`)
    .optional()
    .describe('The window, in whole days ending now (default 30d). The day it starts in counts in full.'),
})

const Instant = z.string().describe('RFC 3339, UTC.')
export const UnusedAgentBody = z
  .strictObject({
    agent: z.string(),
    owner: z.string(),
    tokens: z.int().describe('Tokens issued to the agent in the window.'),
    first_token_at: Instant.nullable().describe('The agent’s first token ever.'),
    suggest: z.boolean().describe('Whether removals are suggested: false while the agent is younger than the window or had too few tokens in it.'),
    reason: z.string().nullable().describe('Why nothing is suggested, when `suggest` is false.'),
    unused_audiences: z.array(z.string()).describe('Granted audiences no token in the window was issued for.'),
    unused_scopes: z.array(z.strictObject({ audience: z.string(), scope: z.string() })).describe('Granted scopes of audiences in use that no token carried.'),
    depth: z.strictObject({
      granted: z.int().describe('`delegation.max_depth`.'),
      used: z.int().describe('Longest delegation chain the agent was part of in the window.'),
      unused: z.boolean(),
    }),
    only_denied: z
      .array(z.strictObject({ audience: z.string(), scope: z.string().nullable().describe('Null: requests naming no scope.'), denials: z.int() }))
      .describe('Granted audiences and scopes requests asked for in the window that were only ever denied.'),
  })
  .meta({ id: 'UnusedGrants' })
export const UnusedBody = z
  .strictObject({ since_days: z.int(), min_tokens: z.int().describe('`governance.shrink_min_tokens`.'), agents: z.array(UnusedAgentBody) })
  .meta({ id: 'UnusedGrantsReport' })

const unusedDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'unusedGrants',
  summary: 'What agents are granted but did not use, and what they were only ever denied (auditor, admin)',
  description:
    'Per agent a policy names: granted audiences, scopes and delegation depth unused in the window, read from the usage summaries (never the log). ' +
    'Removals are suggested only for an agent first issued a token at least the window ago and issued at least `governance.shrink_min_tokens` tokens in it; ' +
    'otherwise `suggest` is false and `reason` says why. The read is recorded before it is answered. Exists only when the broker has a database.',
  security: [{ adminKey: [] }],
  parameters: parametersOf('query', UnusedQuery),
  responses: { 200: { description: 'The report.', content: jsonContent(UnusedBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})

export interface AdminPolicyUnusedDeps {
  readonly keys: readonly AdminKey[]
  readonly audit: AuditLog
  readonly usage: UsageReads
  readonly policies: PolicyStore
  readonly now: () => number
  readonly minTokens: number
}

const iso = (t: number | undefined) => (t === undefined ? null : new Date(t * 1000).toISOString())

export function unusedJson(owner: string, r: UnusedReport): z.input<typeof UnusedAgentBody> {
  return {
    agent: r.agent,
    owner,
    tokens: r.tokens,
    first_token_at: iso(r.firstTokenAt),
    suggest: r.noSuggestion === undefined,
    reason: r.noSuggestionReason ?? null,
    unused_audiences: [...r.unusedAudiences],
    unused_scopes: r.unusedScopes.map((s) => ({ audience: s.audience, scope: s.scope })),
    depth: { ...r.depth },
    only_denied: r.onlyDenied.map((d) => ({ audience: d.audience, scope: d.scope === '' ? null : d.scope, denials: d.denials })),
  }
}

/** GET /admin/policy/unused, for auditors (read permission). */
export function mountAdminPolicyUnused(app: Hono<AppEnv>, deps: AdminPolicyUnusedDeps): void {
  app.get('/admin/policy/unused', unusedDoc, requireAdmin(deps.keys, 'read'), async function unusedPolicyGrants(c) {
    const parsed = UnusedQuery.safeParse(c.req.query())
    if (!parsed.success) {
      refuseInvalid(parsed.error, 'query')
    }
    const q = parsed.data
    const snapshot = deps.policies.snapshot()
    const policies = q.agent === undefined ? [...snapshot.agents()] : [snapshot.get(q.agent as AgentId)].filter((p) => p !== undefined)
    if (q.agent !== undefined && policies.length === 0) throw new AdminError('not_found', 'no policy names that agent')
    const now = deps.now()
    const windowDays = q.since ?? 30
    await recordAdminRead(c, deps.audit, 'admin.audit.read', now)
    const usage = await deps.usage
      .windowUsage(
        policies.map((p) => p.agent),
        now - windowDays * DAY_SECONDS,
      )
      .catch(() => {
        throw new AdminError('temporarily_unavailable', 'usage summaries unavailable; try again')
      })
    const agents = policies
      .sort((a, b) => (a.agent < b.agent ? -1 : a.agent > b.agent ? 1 : 0))
      .map((p) => unusedJson(p.owner, unusedGrants(p, usage.get(p.agent) ?? NO_WINDOW_USAGE, { now, windowDays, minTokens: deps.minTokens })))
    return c.json({ since_days: windowDays, min_tokens: deps.minTokens, agents }, 200, NO_STORE)
  })
}
