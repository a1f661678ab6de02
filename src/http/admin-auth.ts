import { createHash, timingSafeEqual } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { checkQuery } from './admin-input.js'
import type { Approver } from '../core/approval.js'
import { ownsAgent, type ConsoleRole } from '../console/roles.js'
import type { ConsoleSession } from '../console/session.js'
import { AdminError } from './oauth-errors.js'

export type AdminRole = 'responder' | 'auditor' | 'approver' | 'admin'

/** An admin key as configured: its holder's name, the SHA-256 of the key, its roles. */
export interface AdminKey {
  readonly name: string
  readonly sha256: Buffer
  readonly roles: ReadonlySet<AdminRole>
  /** The person holding the key, as an approver of human-approval requests; undefined: the key approves nothing. */
  readonly approver?: Approver | undefined
}

/**
 * What each admin action needs; `admin` may do everything (and alone vouches for an agent, for its owner:
 * `attest`). `approve` also needs the key's person to be one the request's grant names (approvals/decide.ts).
 */
export type AdminPermission = 'revoke' | 'read' | 'attest' | 'approve'
const GRANTS: Record<AdminRole, ReadonlySet<AdminPermission>> = {
  responder: new Set(['revoke']),
  auditor: new Set(['read']),
  approver: new Set(['approve']),
  admin: new Set(['revoke', 'read', 'attest', 'approve']),
}

/**
 * A console role's permissions. Every role may try to approve: whether a person may decide a request is the grant's
 * `approvers` (approvals/decide.ts), not a console role. An owner attests only the agents they own.
 */
const CONSOLE_GRANTS: Record<ConsoleRole, ReadonlySet<AdminPermission>> = {
  viewer: new Set(['read', 'approve']),
  responder: new Set(['read', 'revoke', 'approve']),
  owner: new Set(['read', 'attest', 'approve']),
  admin: new Set(['revoke', 'read', 'attest', 'approve']),
}

/** Who is calling the admin API: an admin key's holder, or a person signed in to the console. */
export interface AdminPrincipal {
  /** For the log and the records (`by`, `created_by`): the key's name, or `console:<email or sub>`. */
  readonly name: string
  readonly permissions: ReadonlySet<AdminPermission>
  /** The person, as an approver of human-approval requests; undefined: approves nothing. */
  readonly approver?: Approver | undefined
  /** Set when `attest` holds only for some agents: whether the principal owns one with this policy `owner`. */
  readonly attestsOnly?: ((owner: string) => boolean) | undefined
}

function keyPrincipal(key: AdminKey): AdminPrincipal {
  return { name: key.name, permissions: new Set([...key.roles].flatMap((r) => [...GRANTS[r]])), approver: key.approver }
}

/** The principal of a console session: its roles' permissions, and an owner's attestation limited to their own agents. */
export function consolePrincipal(session: ConsoleSession): AdminPrincipal {
  const permissions = new Set(session.roles.flatMap((r) => [...CONSOLE_GRANTS[r]]))
  const ownerOnly = !session.roles.includes('admin')
  return {
    name: `console:${session.names[0] ?? `${session.sub} of ${session.iss}`}`,
    permissions,
    approver: session,
    attestsOnly: ownerOnly ? (owner) => ownsAgent(session, owner) : undefined,
  }
}

/** Whether a principal may attest an agent with this policy `owner`. */
export function mayAttest(principal: AdminPrincipal, owner: string): boolean {
  return principal.permissions.has('attest') && (principal.attestsOnly === undefined || principal.attestsOnly(owner))
}

/**
 * Finds the key presented as `Authorization: Bearer <key>`. Every configured
 * key is compared, in constant time, whatever matched: the time taken says
 * nothing about which key (or whether any) matched.
 */
export function findAdminKey(keys: readonly AdminKey[], authorization: string | undefined): AdminKey | undefined {
  const match = authorization === undefined ? null : /^Bearer ([\x21-\x7e]{1,512})$/.exec(authorization)
  const presented = createHash('sha256')
    .update(match?.[1] ?? '')
    .digest()
  let found: AdminKey | undefined
  for (const key of keys) if (timingSafeEqual(presented, key.sha256) && match !== null) found = key
  return found
}

/**
 * Admin route guard: 401 without a valid key (or console session), 403
 * without the permission, 400 when the query string is not well-formed text.
 * A request without `Authorization` is the console's when its session
 * cookie was opened (http/console-auth.ts, which also checked its CSRF
 * token). Sets `adminKey` (the principal's name) and `adminPrincipal` for
 * the handler and the request log.
 */
export function requireAdmin(
  keys: readonly AdminKey[],
  permission: AdminPermission,
): MiddlewareHandler<{ Variables: { adminKey: string; adminPrincipal: AdminPrincipal; consoleSession: ConsoleSession | undefined } }> {
  return async function adminGuard(c, next) {
    const authorization = c.req.header('authorization')
    const session = authorization === undefined ? c.get('consoleSession') : undefined
    const key = session === undefined ? findAdminKey(keys, authorization) : undefined
    const principal = session !== undefined ? consolePrincipal(session) : key !== undefined ? keyPrincipal(key) : undefined
    if (principal === undefined) throw new AdminError('unauthorized', 'a valid admin key is required')
    if (!principal.permissions.has(permission)) {
      throw new AdminError('forbidden', `${session === undefined ? 'this key' : 'your console role'} may not ${permission}`, `key=${principal.name}`)
    }
    c.set('adminKey', principal.name)
    c.set('adminPrincipal', principal)
    // Only an authenticated caller learns that its input is malformed.
    checkQuery(c)
    await next()
  }
}
