import { refuseInvalid } from '../admin-input.js'
import type { Context, Hono } from 'hono'
import type { AppEnv } from '../env.js'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import { AUDIT_EVENTS, isEventFilter, MAX_INSTANT, MAX_PAGE, type AuditLog } from '../../audit/port.js'
import type { AuditEntry, AuditPage, AuditPageRequest, DelegationTree } from '../../audit/query.js'
import type { ChainVerification } from '../../audit/verification.js'
import { requireAdmin, type AdminKey } from '../admin-auth.js'
import { AdminError, NO_STORE } from '../oauth-errors.js'
import {
  adminErrors,
  AuditPage as AuditPageBody,
  AuditRecordBody,
  AuditVerification,
  DelegationTree as DelegationTreeBody,
  jsonContent,
  parametersOf,
} from '../openapi.js'

/** Reads of the delegation log, as the admin API needs them (src/audit/query.ts over the database). */
export interface AuditQueries {
  page(request: AuditPageRequest): Promise<AuditPage>
  tree(jti: string): Promise<DelegationTree | undefined>
  /** The `token.denied` records of the request answered with this id, oldest first. */
  request(id: string): Promise<readonly AuditEntry[]>
  /** One record by its id. */
  record(id: number): Promise<AuditEntry | undefined>
  /** Each hash chain's verification state, carried forward (audit/verification.ts). */
  verification(): Promise<readonly ChainVerification[]>
}

/**
 * Records an admin read (who looked at what) before answering it. Fails
 * closed: a read that cannot be recorded is not served.
 */
export async function recordAdminRead(
  c: Context,
  audit: AuditLog,
  type: 'admin.revocations.read' | 'admin.audit.read' | 'admin.feed.opened' | 'admin.policy.explained',
  at: number,
): Promise<void> {
  const url = new URL(c.req.url)
  try {
    await audit.append({
      type,
      at,
      // An admin key's name, or a resource server's `rs/` id (the feed): names no key can take.
      by: (c.get('adminKey') ?? c.get('resourceServer')) as string,
      request: `${url.pathname}${url.search}`.slice(0, 2048),
      clientAddress: c.get('clientAddress') as string | undefined,
      traceId: c.get('traceId') as string | undefined,
    })
  } catch {
    throw new AdminError('temporarily_unavailable', 'audit log unavailable; the read was not recorded, so it is not served; try again')
  }
}

// PostgreSQL text holds no NUL; no identifier holds a control character.
const Text = z
  .string()
  .min(1)
  .max(1024)
  // eslint-disable-next-line no-control-regex -- control characters are what it refuses
  .regex(/^[^\u0000-\u001f\u007f]+$/, 'must not contain control characters')
const Instant = z.union([
  z
    .string()
    .regex(/^\d{1,12}$/)
    .transform(Number)
    .refine((n) => n <= MAX_INSTANT, 'must be before the year 10000'),
  z.iso.datetime({ offset: true }).transform((s) => Math.floor(Date.parse(s) / 1000)),
])
const EventFilter = z.string().refine(isEventFilter, {
  error: `must be one of ${AUDIT_EVENTS.join(', ')}, or a family such as token.* or admin.*`,
})

const AuditQuery = z.strictObject({
  agent: Text.optional(),
  sub: Text.optional(),
  iss: Text.optional(),
  jti: Text.optional(),
  event: EventFilter.optional(),
  from: Instant.optional().describe('epoch seconds or an RFC 3339 time, inclusive'),
  to: Instant.optional(),
  limit: z
    .string()
    .regex(/^[1-9]\d{0,3}$/, `must be 1-${MAX_PAGE}`)
    .transform(Number)
    .refine((n) => n <= MAX_PAGE, `must be 1-${MAX_PAGE}`)
    .optional(),
  before: z
    .string()
    .regex(/^[1-9]\d{0,17}$/, 'must be a cursor from a previous page')
    .transform(Number)
    .optional(),
})

const adminKey = [{ adminKey: [] }]
const queryDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'queryAudit',
  summary: 'Query the delegation log, newest first (auditor, admin)',
  description:
    'Filters combine with AND; `iss` only with `sub` (a user is unique within its issuer). Unknown parameters are refused. ' +
    'The read is itself recorded before it is answered. Exists only when the broker has a database.',
  security: adminKey,
  parameters: parametersOf('query', AuditQuery),
  responses: { 200: { description: 'A page.', content: jsonContent(AuditPageBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})
const treeDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'delegationTree',
  summary: 'The delegation tree holding a token (auditor, admin)',
  description: 'From the root token down, every token delegated from it, with the revocations that touch the tree.',
  security: adminKey,
  parameters: parametersOf('path', z.object({ jti: Text.describe('The `jti` of any token in the tree.') })),
  responses: { 200: { description: 'The tree.', content: jsonContent(DelegationTreeBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})

/** A request id as the broker hands them out or accepts them (`X-Request-Id`, app.ts). */
export const RequestIdParam = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 letters, digits, `.`, `_` or `-`')
export const RequestRecordsBody = z
  .strictObject({ request_id: z.string(), records: AuditPageBody.shape.records.describe('Oldest first.') })
  .meta({ id: 'RequestRecords' })
const requestDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'requestRecords',
  summary: 'The denial record of one token request, by its request id (auditor, admin)',
  description:
    'Every answer of the token endpoint carries `X-Request-Id`; a denial also names it in `error_uri` (`urn:mandate:request:<id>`). ' +
    'The denied caller sees only the standard error; this returns the full records: the reason, the agent, the user, the audiences and scopes asked for, the time. ' +
    'A caller may choose its request id, so one id can name several records. A granted request’s `token.issued` record carries its request id too ' +
    'but is found by the token’s `jti` (`GET /admin/audit?jti=`). The read is recorded before it is answered.',
  security: adminKey,
  parameters: parametersOf('path', z.object({ id: RequestIdParam.describe('The request id (`X-Request-Id`).') })),
  responses: { 200: { description: 'The records.', content: jsonContent(RequestRecordsBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})

/** A record's id as `GET /admin/audit` shows it. */
const RecordId = z
  .string()
  .regex(/^[1-9]\d{0,17}$/, 'must be a record id')
  .transform(Number)
const recordDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'auditRecord',
  summary: 'One record of the delegation log, by its id (auditor, admin)',
  description: 'The record as written, with its chain, its seq and its hash. The read is recorded before it is answered.',
  security: adminKey,
  parameters: parametersOf('path', z.object({ id: z.string().describe('The record’s `id`, as `GET /admin/audit` shows it.') })),
  responses: { 200: { description: 'The record.', content: jsonContent(AuditRecordBody) }, ...adminErrors(400, 401, 403, 404, 503) },
})

/** What the verification state says was checked of each record. */
export const VERIFICATION_CHECKS =
  'each record’s columns against its hashed record, its SHA-256 hash over the previous hash and its content, its link to the record before it, and that no seq is skipped; ' +
  'a chain verified before must still exist; records verified by an earlier call are not read again except the last one; signed checkpoints are not read (`mandate audit verify --checkpoints` does a full pass)'
const verificationDoc = describeRoute({
  tags: ['Admin'],
  operationId: 'auditVerification',
  summary: 'Each hash chain of the delegation log: verified up to which record, when (auditor, admin)',
  description:
    'Each call carries every chain forward from where this broker process last stopped, at most 20 000 records and about 400 ms of reading per call ' +
    '(a long log is caught up over several calls: `complete` says when it is). A chain in which a record fails a check stays flagged, naming the record. ' +
    'The state is this process’s: another instance answers with its own. The read is recorded before it is answered.',
  security: adminKey,
  responses: { 200: { description: 'The state of each chain.', content: jsonContent(AuditVerification) }, ...adminErrors(401, 403, 404, 503) },
})

export interface AdminAuditDeps {
  readonly keys: readonly AdminKey[]
  readonly audit: AuditLog
  readonly queries: AuditQueries
  readonly now: () => number
}

function treeJson(tree: DelegationTree) {
  const iso = (t: number) => new Date(t * 1000).toISOString()
  type Node = DelegationTree['root']
  const node = (n: Node): object => ({
    jti: n.jti,
    parent: n.parent,
    agent: n.agent,
    actors: n.actors,
    sub: n.sub,
    sub_iss: n.subIssuer,
    aud: n.audience,
    scopes: n.scopes,
    issued_at: iso(n.issuedAt),
    expires_at: iso(n.expiresAt),
    policy_hash: n.policyHash,
    instance: n.instance,
    agent_instance: n.agentInstance,
    withheld: n.withheld,
    children: n.children.map(node),
  })
  return { jti: tree.jti, tokens: tree.tokens, root: node(tree.root), revocations: tree.revocations }
}

const unavailable = (): never => {
  throw new AdminError('temporarily_unavailable', 'audit log unavailable; try again')
}

/** /admin/audit: the delegation log, for auditors (read permission). */
export function mountAdminAudit(app: Hono<AppEnv>, deps: AdminAuditDeps): void {
  app.get('/admin/audit', queryDoc, requireAdmin(deps.keys, 'read'), async function queryAudit(c) {
    const parsed = AuditQuery.safeParse(c.req.query())
    if (!parsed.success) {
      refuseInvalid(parsed.error, 'query')
    }
    const q = parsed.data
    if (q.from !== undefined && q.to !== undefined && q.from > q.to) throw new AdminError('invalid_request', 'from is after to')
    if (q.iss !== undefined && q.sub === undefined) throw new AdminError('invalid_request', 'iss names the issuer of a user: send it with sub')
    await recordAdminRead(c, deps.audit, 'admin.audit.read', deps.now())
    const page = await deps.queries.page(q).catch(unavailable)
    return c.json({ records: page.records, next: page.next === undefined ? null : String(page.next) }, 200, NO_STORE)
  })

  app.get('/admin/audit/chains/:jti', treeDoc, requireAdmin(deps.keys, 'read'), async function delegationTree(c) {
    const jti = c.req.param('jti')
    if (!Text.safeParse(jti).success) throw new AdminError('invalid_request', 'invalid jti')
    await recordAdminRead(c, deps.audit, 'admin.audit.read', deps.now())
    const tree = await deps.queries.tree(jti).catch(unavailable)
    if (tree === undefined) throw new AdminError('not_found', 'no token.issued record has that jti')
    return c.json(treeJson(tree), 200, NO_STORE)
  })

  app.get('/admin/audit/requests/:id', requestDoc, requireAdmin(deps.keys, 'read'), async function requestRecords(c) {
    const id = RequestIdParam.safeParse(c.req.param('id'))
    if (!id.success) throw new AdminError('invalid_request', 'invalid id: must be 1-64 letters, digits, `.`, `_` or `-`')
    await recordAdminRead(c, deps.audit, 'admin.audit.read', deps.now())
    const records = await deps.queries.request(id.data).catch(unavailable)
    if (records.length === 0) throw new AdminError('not_found', 'no token.denied record names that request id')
    return c.json({ request_id: id.data, records }, 200, NO_STORE)
  })

  app.get('/admin/audit/records/:id', recordDoc, requireAdmin(deps.keys, 'read'), async function auditRecord(c) {
    const id = RecordId.safeParse(c.req.param('id'))
    if (!id.success) throw new AdminError('invalid_request', 'invalid id: must be a record id, as GET /admin/audit shows it')
    await recordAdminRead(c, deps.audit, 'admin.audit.read', deps.now())
    const record = await deps.queries.record(id.data).catch(unavailable)
    if (record === undefined) throw new AdminError('not_found', 'no record has that id')
    return c.json(record, 200, NO_STORE)
  })

  app.get('/admin/audit/verification', verificationDoc, requireAdmin(deps.keys, 'read'), async function auditVerification(c) {
    await recordAdminRead(c, deps.audit, 'admin.audit.read', deps.now())
    const chains = await deps.queries.verification().catch(unavailable)
    const iso = (t: number) => (t === 0 ? null : new Date(t * 1000).toISOString())
    return c.json(
      {
        checked: VERIFICATION_CHECKS,
        complete: chains.every((v) => !v.ok || v.verifiedThroughSeq === v.lastSeq),
        chains: chains.map((v) => ({
          chain: v.chain,
          instance: v.instance,
          verified_through_seq: v.verifiedThroughSeq,
          last_seq: v.lastSeq,
          at: iso(v.at),
          ok: v.ok,
          problem: v.problem === undefined ? null : { seq: v.problem.seq, id: v.problem.id ?? null, message: v.problem.message },
        })),
      },
      200,
      NO_STORE,
    )
  })
}
