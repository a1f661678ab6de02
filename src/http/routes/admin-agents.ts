import type { Hono } from 'hono'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import type { AuditLog } from '../../audit/port.js'
import type { AgentId } from '../../core/claims.js'
import {
  AGENT_STATES,
  agentKills,
  buildInventory,
  entryOf,
  INVENTORY_SORTS,
  selectInventory,
  type InstanceSeen,
  type InventoryEntry,
  type UsageReads,
} from '../../core/inventory.js'
import type { LifecycleReads } from '../../core/lifecycle.js'
import type { PolicyStore } from '../../policy/port.js'
import { SHARED_SECRET, type CredentialReads, type CredentialSummary } from '../../core/credential-age.js'
import { AgentCredentialsBody, credentialsJson } from './admin-agent-credentials.js'
import type { Revocation } from '../../revocation/port.js'
import type { RevocationService } from '../../revocation/service.js'
import { mayAttest, requireAdmin, type AdminKey } from '../admin-auth.js'
import type { AppEnv } from '../env.js'
import { AdminNote, readJsonBody, refuseInvalid } from '../admin-input.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, parametersOf } from '../openapi.js'
import { recordAdminRead } from './admin-audit.js'

/** Most agents one page holds. */
export const MAX_AGENTS_PAGE = 500
const MAX_OFFSET = 1_000_000

const Duration = z
  .string()
  .regex(/^[1-9]\d{0,3}[dh]$/, 'must be a duration such as 14d or 48h')
  .transform((s) => Number(s.slice(0, -1)) * (s.endsWith('d') ? 86_400 : 3_600))

const AgentsQuery = z.strictObject({
  owner: z
    .string()
    .min(1)
    .max(256)
    // eslint-disable-next-line no-control-regex -- control characters are what it refuses
    .regex(/^[^\u0000-\u001f\u007f]+$/, 'must not contain control characters')
    .optional()
    .describe('Only agents with this owner (exact).'),
  state: z
    .enum([...AGENT_STATES, SHARED_SECRET])
    .optional()
    .describe(`An agent state, or \`${SHARED_SECRET}\`: agents still on client_secret_basic, with the suggested fix in \`credentials\`.`),
  expiring: Duration.optional().describe('Only agents whose policy expires within this long (e.g. 14d), expired ones included.'),
  sort: z.enum(INVENTORY_SORTS).optional().describe('Default `agent`; usage sorts put the busiest first, `last_token` the latest.'),
  limit: z
    .string()
    .regex(/^[1-9]\d{0,2}$/, `must be 1-${MAX_AGENTS_PAGE}`)
    .transform(Number)
    .refine((n) => n <= MAX_AGENTS_PAGE, `must be 1-${MAX_AGENTS_PAGE}`)
    .optional()
    .describe(`Agents per page, 1-${MAX_AGENTS_PAGE} (default 100).`),
  offset: z
    .string()
    .regex(/^(0|[1-9]\d{0,6})$/, `must be 0-${MAX_OFFSET}`)
    .transform(Number)
    .refine((n) => n <= MAX_OFFSET, `must be 0-${MAX_OFFSET}`)
    .optional(),
})

// An agent id as policies spell them (policy/schema.ts), and no longer.
const AgentParam = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII')

const Instant = z.string().describe('RFC 3339, UTC.')
const Usage = z.strictObject({
  tokens_24h: z.int(),
  tokens_by_hour: z.array(z.int()).length(24).describe('Tokens in each hour of the 24 h window, the oldest first.'),
  denials_24h: z.int(),
  users_24h: z.int().describe('Distinct users (issuer, sub) issued a token in the window, exact to the minute.'),
  tokens_30d: z.int(),
  denials_30d: z.int(),
  users_30d: z.int(),
})
const Kill = z.strictObject({ id: z.string(), reason: z.string(), created_by: z.string(), created_at: Instant })
const AgentEntry = z
  .strictObject({
    agent: z.string(),
    state: z.enum(AGENT_STATES),
    owner: z.string().nullable(),
    purpose: z.string().nullable(),
    expires: Instant.nullable(),
    days_left: z.int().nullable(),
    authentication: z.enum(['private_key_jwt', 'client_secret_basic', 'workload_identity']).nullable(),
    last_token_at: Instant.nullable(),
    usage: Usage.describe('24 h: the current hour and the 23 before it; 30 d: the current UTC day and the 29 before it.'),
    grants: z.array(z.strictObject({ audience: z.string(), scopes: z.array(z.string()) })),
    kills: z.array(Kill).describe('Agent kills in force.'),
    attestation: z
      .strictObject({
        last_attested_at: Instant.nullable(),
        by: z.string().nullable().describe('The admin key that recorded the last attestation.'),
        next_due: Instant.nullable().describe('Null when the policy sets no `attest_every`.'),
      })
      .nullable()
      .describe('The owner’s attestations; null for an agent without a policy.'),
    credentials: AgentCredentialsBody.nullable().describe(
      'Its credentials’ kind, age and last use; null for an agent without a policy, or without a database.',
    ),
  })
  .meta({ id: 'AgentEntry' })
export const AgentListBody = z
  .strictObject({
    agents: z.array(AgentEntry),
    total: z.int().describe('Agents matching the filters.'),
    next_offset: z.int().nullable().describe('Pass as `offset` for the next page; null on the last one.'),
    revocations_fresh: z.boolean().describe('False while the revocation mirror is stale: a kill may be missing.'),
  })
  .meta({ id: 'AgentList' })
export const AgentDetailBody = z
  .strictObject({
    ...AgentEntry.shape,
    grant_usage: z.array(z.strictObject({ audience: z.string(), scope: z.string(), tokens_30d: z.int(), last_token_at: Instant })),
    recent_denials: z
      .array(z.strictObject({ at: Instant, error: z.string(), reason: z.string(), sub: z.string().nullable() }))
      .describe('Newest first, at most 20.'),
    chains: z
      .array(z.strictObject({ jti: z.string(), root_jti: z.string(), at: Instant, actors: z.array(z.string()) }))
      .describe('Delegated tokens (two or more actors) the agent is in, newest first, at most 20.'),
    recent_anomalies: z
      .array(
        z.strictObject({
          at: Instant,
          rule: z.string(),
          action: z.enum(['alert', 'quarantine']),
          detail: z.string(),
          revocation_id: z.string().nullable().describe('The kill a quarantine made.'),
        }),
      )
      .describe('Anomaly rules that tripped on its traffic (docs/anomalies.md), newest first, at most 20.'),
    instances: z
      .array(
        z.strictObject({
          instance: z.string().describe('As `act.instance` names it: a SPIFFE ID, or a workload token’s subject or instance claim.'),
          tokens: z.int().describe('Tokens issued to it in the last hour.'),
          first_seen: Instant.describe('Its first token in the last hour.'),
          last_seen: Instant,
          killed: z.boolean().describe('An instance kill of it is in force.'),
        }),
      )
      .describe('The running copies of the agent issued a token in the last hour, the latest first, at most 100.'),
    revocations_fresh: z.boolean(),
  })
  .meta({ id: 'AgentDetail' })

const AttestBody = z.strictObject({
  note: AdminNote.optional().describe('What the owner said, kept in the `agent.attested` record.'),
})
export const AttestedBody = z
  .strictObject({
    agent: z.string(),
    attested_at: Instant,
    by: z.string().describe('The admin key that recorded it.'),
    next_due: Instant.describe('When the next attestation is due: `attest_every` from now, or, without it, when the agent would turn dormant unused.'),
  })
  .meta({ id: 'AgentAttested' })

const adminKey = [{ adminKey: [] }]
const listDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'listAgents',
  summary: 'The agent inventory (auditor, admin)',
  description:
    'Every agent a policy names and every agent id the delegation log holds (without a policy: state `unknown`), with its state and usage, ' +
    'read from usage summaries kept with the log. The read is itself recorded. Exists only when the broker has a database.',
  security: adminKey,
  parameters: parametersOf('query', AgentsQuery),
  responses: { 200: { description: 'A page of agents.', content: jsonContent(AgentListBody) }, ...adminErrors(400, 401, 403, 503) },
})
const showDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'showAgent',
  summary: 'One agent: usage per grant, recent denials, kills, delegation chains, anomalies, live instances (auditor, admin)',
  security: adminKey,
  parameters: parametersOf('path', z.object({ id: AgentParam.describe('The agent id.') })),
  responses: { 200: { description: 'The agent.', content: jsonContent(AgentDetailBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})

const attestDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'attestAgent',
  summary: 'Record that the agent’s owner vouches for it (admin)',
  description:
    'Writes an `agent.attested` record naming the admin key, then lifts an overdue attestation or a dormancy suspension: at once on this ' +
    'instance, on the others within `governance.lifecycle_sweep_seconds`. The body is optional. Kills, expiry and orphaning are not lifted.',
  security: adminKey,
  parameters: parametersOf('path', z.object({ id: AgentParam.describe('The agent id.') })),
  requestBody: { content: jsonContent(AttestBody) },
  responses: { 200: { description: 'Recorded.', content: jsonContent(AttestedBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})

/** Records attestations (src/audit/lifecycle-service.ts). */
export interface AgentAttestations {
  attest(a: {
    readonly agent: AgentId
    readonly by: string
    readonly note: string | undefined
    readonly clientAddress?: string | undefined
    readonly traceId?: string | undefined
  }): Promise<{ readonly at: number; readonly nextDue: number }>
}

export interface AdminAgentsDeps {
  readonly keys: readonly AdminKey[]
  readonly audit: AuditLog
  readonly usage: UsageReads
  readonly policies: PolicyStore
  readonly revocations: Pick<RevocationService, 'records' | 'fresh'>
  readonly now: () => number
  /** Attestation and lifecycle states; absent: neither is shown and POST …/attest does not exist. */
  readonly lifecycle?: (LifecycleReads & AgentAttestations) | undefined
  /** The credential ledger's reads; without them `credentials` is null. */
  readonly credentials?: CredentialReads | undefined
}

const iso = (t: number | undefined) => (t === undefined ? null : new Date(t * 1000).toISOString())

function killJson(r: Revocation) {
  return { id: r.id, reason: r.reason, created_by: r.createdBy, created_at: iso(r.createdAt) }
}

export function entryJson(e: InventoryEntry) {
  return {
    agent: e.agent,
    state: e.state,
    owner: e.owner ?? null,
    purpose: e.purpose ?? null,
    expires: iso(e.expires),
    days_left: e.daysLeft ?? null,
    authentication: e.authentication ?? null,
    last_token_at: iso(e.usage.lastTokenAt),
    usage: {
      tokens_24h: e.usage.tokens24h,
      tokens_by_hour: e.usage.tokensByHour,
      denials_24h: e.usage.denials24h,
      users_24h: e.usage.users24h,
      tokens_30d: e.usage.tokens30d,
      denials_30d: e.usage.denials30d,
      users_30d: e.usage.users30d,
    },
    grants: e.grants,
    kills: e.kills.map(killJson),
    attestation:
      e.attestation === undefined
        ? null
        : { last_attested_at: iso(e.attestation.lastAttestedAt), by: e.attestation.by ?? null, next_due: iso(e.attestation.nextDue) },
  }
}

/** The instances seen, each with whether an instance kill of it is in force (from the local mirror). */
function instancesJson(agent: string, seen: readonly InstanceSeen[], records: readonly Revocation[]) {
  const killed = new Set(
    records.flatMap((r) => (r.target.kind === 'instance' && r.target.agent === agent && r.liftedAt === undefined ? [r.target.instance] : [])),
  )
  return seen.map((i) => ({ instance: i.instance, tokens: i.tokens, first_seen: iso(i.firstAt), last_seen: iso(i.lastAt), killed: killed.has(i.instance) }))
}

function invalid(error: z.ZodError): never {
  return refuseInvalid(error, 'query')
}

const unavailable = (): never => {
  throw new AdminError('temporarily_unavailable', 'usage summaries unavailable; try again')
}

const credentialsOf = (s: CredentialSummary | undefined) => (s === undefined ? null : credentialsJson(s))

/** /admin/agents: the inventory, for auditors (read permission). */
export function mountAdminAgents(app: Hono<AppEnv>, deps: AdminAgentsDeps): void {
  app.get('/admin/agents', listDoc, requireAdmin(deps.keys, 'read'), async function listAgents(c) {
    const parsed = AgentsQuery.safeParse(c.req.query())
    if (!parsed.success) invalid(parsed.error)
    const q = parsed.data
    const now = deps.now()
    await recordAdminRead(c, deps.audit, 'admin.audit.read', now)
    const usage = await deps.usage.usage(now).catch(unavailable)
    const policies = deps.policies.snapshot().agents()
    const credentials = await deps.credentials?.summaries(policies, now).catch(unavailable)
    const sharedOnly = q.state === SHARED_SECRET
    const all = buildInventory(policies, usage, agentKills(deps.revocations.records()), now, deps.lifecycle).filter(
      (e) => !sharedOnly || e.authentication === 'client_secret_basic',
    )
    const state = q.state === SHARED_SECRET ? undefined : q.state
    const selected = selectInventory(all, { owner: q.owner, state, expiringWithin: q.expiring }, q.sort ?? 'agent', now)
    const offset = q.offset ?? 0
    const limit = q.limit ?? 100
    const page = selected.slice(offset, offset + limit)
    return c.json(
      {
        agents: page.map((e) => ({ ...entryJson(e), credentials: credentialsOf(credentials?.get(e.agent)) })),
        total: selected.length,
        next_offset: offset + limit < selected.length ? offset + limit : null,
        // Kills come from the local revocation mirror: when it is stale, `killed` may be missing.
        revocations_fresh: deps.revocations.fresh(),
      },
      200,
      NO_STORE,
    )
  })

  app.get('/admin/agents/:id', showDoc, requireAdmin(deps.keys, 'read'), async function showAgent(c) {
    const id = AgentParam.safeParse(c.req.param('id'))
    if (!id.success) throw new AdminError('invalid_request', 'invalid id')
    const agent = id.data as AgentId
    const now = deps.now()
    await recordAdminRead(c, deps.audit, 'admin.audit.read', now)
    const detail = await deps.usage.detail(agent, now).catch(unavailable)
    const policy = deps.policies.snapshot().get(agent)
    if (policy === undefined && detail.usage.lastTokenAt === undefined && detail.usage.denials30d === 0 && detail.denials.length === 0) {
      throw new AdminError('not_found', 'no policy names that agent and the log holds no usage of it')
    }
    const entry = entryOf(agent, policy, detail.usage, agentKills(deps.revocations.records()).get(agent) ?? [], now, deps.lifecycle)
    const credentials = await deps.credentials?.summary(policy, now).catch(unavailable)
    return c.json(
      {
        ...entryJson(entry),
        credentials: credentialsOf(credentials),
        grant_usage: detail.grants.map((g) => ({ audience: g.audience, scope: g.scope, tokens_30d: g.tokens30d, last_token_at: iso(g.lastTokenAt) })),
        recent_denials: detail.denials.map((d) => ({ at: iso(d.at), error: d.error, reason: d.reason, sub: d.sub ?? null })),
        chains: detail.chains.map((ch) => ({ jti: ch.jti, root_jti: ch.rootJti, at: iso(ch.at), actors: ch.actors })),
        recent_anomalies: (detail.anomalies ?? []).map((a) => ({
          at: iso(a.at),
          rule: a.rule,
          action: a.action,
          detail: a.detail,
          revocation_id: a.revocationId ?? null,
        })),
        instances: instancesJson(agent, detail.instances ?? [], deps.revocations.records()),
        revocations_fresh: deps.revocations.fresh(),
      },
      200,
      NO_STORE,
    )
  })
  const lifecycle = deps.lifecycle
  if (lifecycle === undefined) return
  app.post('/admin/agents/:id/attest', attestDoc, requireAdmin(deps.keys, 'attest'), async function attestAgent(c) {
    const id = AgentParam.safeParse(c.req.param('id'))
    if (!id.success) throw new AdminError('invalid_request', 'invalid id')
    const agent = id.data as AgentId
    // The body is optional: none, or a JSON object with a note.
    const empty = (await c.req.raw.clone().arrayBuffer()).byteLength === 0
    const body = AttestBody.safeParse(empty ? {} : await readJsonBody(c))
    if (!body.success) {
      refuseInvalid(body.error, 'body')
    }
    const policy = deps.policies.snapshot().get(agent)
    if (policy === undefined) throw new AdminError('not_found', 'no policy names that agent')
    const by = c.get('adminKey')
    if (!mayAttest(c.get('adminPrincipal'), policy.owner)) throw new AdminError('forbidden', 'you may attest only the agents you own', `key=${by}`)
    const done = await lifecycle.attest({ agent, by, note: body.data.note, clientAddress: c.get('clientAddress'), traceId: c.get('traceId') }).catch(() => {
      throw new AdminError('temporarily_unavailable', 'the attestation could not be recorded; try again')
    })
    return c.json({ agent, attested_at: iso(done.at), by, next_due: iso(done.nextDue) }, 200, NO_STORE)
  })
}
