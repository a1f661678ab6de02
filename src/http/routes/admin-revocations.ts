import type { Context, Hono } from 'hono'
import type { AppEnv } from '../env.js'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import type { AuditLog } from '../../audit/port.js'
import { AGENT_ID, AGENT_ID_RULE, INSTANCE_ID, type AgentId, type Jti, type Subject } from '../../core/claims.js'
import type { PolicyStore } from '../../policy/port.js'
import { KILL_KINDS, type Revocation, type RevocationTarget } from '../../revocation/port.js'
import { RevocationError, type RevocationService } from '../../revocation/service.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import { readJsonBody } from '../admin-input.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import { adminErrors, jsonContent, parametersOf, RevocationList, RevocationRecord } from '../openapi.js'
import { recordAdminRead } from './admin-audit.js'

const Identifier = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')
/** An issuer identifier (RFC 8414 §2: a URL), compared exactly. */
const IssuerIdentifier = z
  .string()
  .min(1)
  .max(2048)
  .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces')

/** POST body: exactly one target form, and a reason. */
const RevokeBody = z.strictObject({
  jti: Identifier.optional(),
  chain: Identifier.optional(),
  agent: z.string().regex(AGENT_ID, AGENT_ID_RULE).optional(),
  sub: Identifier.optional(),
  iss: IssuerIdentifier.optional(),
  instance: z
    .string()
    .regex(INSTANCE_ID, 'must be 1-2048 printable ASCII characters without spaces')
    .optional()
    .describe('With `agent`: one running copy of it, as `act.instance` names it (a SPIFFE ID, a workload token’s subject or instance claim).'),
  reason: z.string().trim().min(1).max(500),
  force: z.boolean().optional(),
})
type RevokeBody = z.infer<typeof RevokeBody>

const TARGET_FORMS = '{"jti"}, {"chain"}, {"agent"}, {"sub", "iss"}, {"agent", "sub", "iss"} or {"agent", "instance"}'

/**
 * The target a body names. A user is (issuer, subject) (RFC 9493 §3.2.5): a
 * kill names the issuer, which must be one trusted for user subjects unless
 * forced; left out, it is the only such issuer, when there is exactly one.
 * An agent no policy defines is refused unless forced, so that a misspelt
 * id is not taken for a kill that holds.
 */
function targetOf(body: RevokeBody, known: { readonly policies: PolicyStore; readonly userIssuers: readonly string[] }): RevocationTarget {
  const named = (['jti', 'chain', 'agent', 'instance', 'sub'] as const)
    .filter((k) => body[k] !== undefined)
    .sort()
    .join('+')
  if (body.iss !== undefined && body.sub === undefined) throw new AdminError('invalid_request', 'iss names the issuer of a user: send it with sub')
  const force = body.force === true
  if (force && (named === 'jti' || named === 'chain')) throw new AdminError('invalid_request', 'force applies to agent and user kills only')
  const agent = (): AgentId => {
    const id = body.agent as AgentId
    if (!force && known.policies.snapshot().get(id) === undefined) {
      // Not an existence test for tokens: an agent whose policy was removed may still hold live ones, which `force` kills.
      throw new AdminError(
        'not_found',
        `no policy defines agent ${id}; to kill that id anyway (pre-emptively, or tokens it holds from a removed policy) send "force": true`,
      )
    }
    return id
  }
  const iss = (): string => {
    if (body.iss === undefined) {
      const [only, ...more] = known.userIssuers
      if (only !== undefined && more.length === 0) return only
      throw new AdminError('invalid_request', `iss is required: a sub is unique only within its issuer (trusted: ${trustedList(known.userIssuers)})`)
    }
    if (!force && !known.userIssuers.includes(body.iss)) {
      throw new AdminError(
        'invalid_request',
        `iss is not trusted for user subjects (trusted: ${trustedList(known.userIssuers)}); send "force": true to kill at it pre-emptively`,
      )
    }
    return body.iss
  }
  switch (named) {
    case 'jti':
      return { kind: 'jti', jti: body.jti as Jti }
    case 'chain':
      return { kind: 'chain', jti: body.chain as Jti }
    case 'agent':
      return { kind: 'agent', agent: agent() }
    case 'sub':
      return { kind: 'sub', sub: body.sub as Subject, iss: iss() }
    case 'agent+sub':
      return { kind: 'agent_sub', agent: agent(), sub: body.sub as Subject, iss: iss() }
    case 'agent+instance':
      // The instance is not checked against anything: a copy not yet seen can be killed before it asks.
      return { kind: 'instance', agent: agent(), instance: body.instance as string }
    default:
      throw new AdminError('invalid_request', `name exactly one target: ${TARGET_FORMS}`)
  }
}

const trustedList = (issuers: readonly string[]) => (issuers.length === 0 ? 'none' : issuers.join(', '))

/** The wire form of a revocation record (snake_case, ISO times). */
export function revocationJson(r: Revocation) {
  const iso = (t: number | undefined) => (t === undefined ? null : new Date(t * 1000).toISOString())
  const { kind, ...target } = r.target
  return {
    id: r.id,
    kind,
    target,
    reason: r.reason,
    created_by: r.createdBy,
    created_at: iso(r.createdAt),
    expires_at: iso(r.expiresAt),
    in_force: KILL_KINDS.has(kind) ? r.liftedAt === undefined : null,
    lifted_at: iso(r.liftedAt),
    lifted_by: r.liftedBy ?? null,
  }
}

function unavailable(err: unknown): never {
  if (err instanceof RevocationError) {
    switch (err.code) {
      case 'not_found':
        throw new AdminError('not_found', err.message)
      case 'not_liftable':
      case 'already_lifted':
        throw new AdminError('conflict', err.message)
      case 'unavailable':
        throw new AdminError('temporarily_unavailable', err.message)
    }
  }
  throw new AdminError('temporarily_unavailable', 'revocation store unavailable')
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
/** A revocation's id: anything else names no revocation (404, not 400). */
const RevocationId = z.string().regex(UUID).describe("The revocation's id.")
const LIMIT = 'limit must be 1-1000'
/** GET's query; other parameters are ignored. */
const RevocationListQuery = z.object({
  limit: z
    .string()
    .regex(/^[1-9][0-9]{0,3}$/, LIMIT)
    .transform(Number)
    .refine((n) => n <= 1000, LIMIT)
    .optional()
    .describe('Page size, 1-1000; default 100.'),
  before: z.string().regex(UUID, 'before must be a revocation id').optional().describe('The `next` of the previous page.'),
})

const byId = parametersOf('path', z.object({ id: RevocationId }))
const adminKey = [{ adminKey: [] }]

export interface AdminRevocationDeps {
  readonly keys: readonly AdminKey[]
  readonly revocations: RevocationService
  /** Which agents exist: a kill of an undefined one needs `force`. */
  readonly policies: PolicyStore
  /** Issuers trusted for user subjects: a user kill names one of them. */
  readonly userIssuers: readonly string[]
  readonly audit: AuditLog
  readonly now: () => number
  readonly clientAddress: (c: Context) => string | undefined
  /** Called when an audit record could not be written for an action that already took effect. */
  readonly onAuditError: (err: unknown) => void
}

/** /admin/revocations: the kill switch's API (responder: revoke and lift; auditor: read). */
export function mountAdminRevocations(app: Hono<AppEnv>, deps: AdminRevocationDeps): void {
  const { revocations, audit } = deps
  const record = async (c: Context, type: 'revocation.created' | 'revocation.lifted', r: Revocation) => {
    // The revocation itself is durable and in force: a failed audit line is reported, and must not undo it.
    await audit
      .append({
        type,
        at: deps.now(),
        by: c.get('adminKey') as string,
        revocation: r,
        clientAddress: deps.clientAddress(c),
        traceId: c.get('traceId') as string | undefined,
      })
      .catch(deps.onAuditError)
  }

  const createDoc = describeRoute({
    tags: ['Admin'],
    operationId: 'createRevocation',
    summary: 'Revoke a token or a chain, or kill an agent or a user (responder, admin)',
    description:
      `Names exactly one target: ${TARGET_FORMS}. A kill (agent, user, or an agent acting for a user) holds until lifted; ` +
      'an undefined agent, or a user at an issuer not trusted for user subjects, needs `"force": true`. An instance kill stops one running copy of ' +
      'the agent (its `act.instance`) and leaves its other copies working. In force at every broker instance within the revocation lag.',
    security: adminKey,
    requestBody: { required: true, content: jsonContent(RevokeBody) },
    responses: {
      201: {
        description: 'Recorded and in force.',
        headers: { Location: { description: '/admin/revocations/{id}', schema: { type: 'string' } } },
        content: jsonContent(RevocationRecord),
      },
      ...adminErrors(400, 401, 403, 404, 413, 503),
    },
  })
  app.post('/admin/revocations', createDoc, requireAdmin(deps.keys, 'revoke'), async function createRevocation(c) {
    const raw = await readJsonBody(c)
    const parsed = RevokeBody.safeParse(raw)
    if (!parsed.success) {
      const field = parsed.error.issues[0]?.path.join('.') || 'body'
      throw new AdminError('invalid_request', `invalid ${field}: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
    }
    const target = targetOf(parsed.data, deps)
    const r = await revocations.revoke({ target, reason: parsed.data.reason, createdBy: c.get('adminKey') }).catch(unavailable)
    await record(c, 'revocation.created', r)
    return c.json(revocationJson(r), 201, { ...NO_STORE, Location: `/admin/revocations/${r.id}` })
  })

  const listDoc = describeRoute({
    tags: ['Admin'],
    operationId: 'listRevocations',
    summary: 'List revocations, newest first (auditor, admin)',
    description: 'The read is recorded in the delegation log before it is answered.',
    security: adminKey,
    parameters: parametersOf('query', RevocationListQuery),
    responses: { 200: { description: 'A page.', content: jsonContent(RevocationList) }, ...adminErrors(400, 401, 403, 404, 503) },
  })
  app.get('/admin/revocations', listDoc, requireAdmin(deps.keys, 'read'), async function listRevocations(c) {
    const query = RevocationListQuery.safeParse(c.req.query())
    if (!query.success) throw new AdminError('invalid_request', query.error.issues[0]?.message ?? 'malformed query string')
    const { limit = 100, before } = query.data
    await recordAdminRead(c, audit, 'admin.revocations.read', deps.now())
    const page = await revocations.list({ limit, ...(before === undefined ? {} : { before }) }).catch(unavailable)
    const last = page.at(-1)
    return c.json({ revocations: page.map(revocationJson), next: page.length === limit && last !== undefined ? last.id : null }, 200, NO_STORE)
  })

  const getDoc = describeRoute({
    tags: ['Admin'],
    operationId: 'getRevocation',
    summary: 'One revocation (auditor, admin)',
    security: adminKey,
    parameters: byId,
    responses: { 200: { description: 'The record.', content: jsonContent(RevocationRecord) }, ...adminErrors(400, 401, 403, 404, 503) },
  })
  app.get('/admin/revocations/:id', getDoc, requireAdmin(deps.keys, 'read'), async function getRevocation(c) {
    const id = c.req.param('id')
    await recordAdminRead(c, audit, 'admin.revocations.read', deps.now())
    const r = RevocationId.safeParse(id).success ? await revocations.get(id).catch(unavailable) : undefined
    if (r === undefined) throw new AdminError('not_found', 'no revocation has that id')
    return c.json(revocationJson(r), 200, NO_STORE)
  })

  const liftDoc = describeRoute({
    tags: ['Admin'],
    operationId: 'liftRevocation',
    summary: 'Lift a kill (responder, admin)',
    description: 'Only kills (agent, user, agent for a user, instance) can be lifted; a revoked token stays revoked.',
    security: adminKey,
    parameters: byId,
    responses: { 200: { description: 'The record, lifted.', content: jsonContent(RevocationRecord) }, ...adminErrors(400, 401, 403, 404, 409, 503) },
  })
  app.delete('/admin/revocations/:id', liftDoc, requireAdmin(deps.keys, 'revoke'), async function liftRevocation(c) {
    const id = c.req.param('id')
    if (!RevocationId.safeParse(id).success) throw new AdminError('not_found', 'no revocation has that id')
    const r = await revocations.lift(id, c.get('adminKey')).catch(unavailable)
    await record(c, 'revocation.lifted', r)
    return c.json(revocationJson(r), 200, NO_STORE)
  })
}
