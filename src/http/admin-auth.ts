import { createHash, timingSafeEqual } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { checkQuery } from './admin-input.js'
import type { Approver } from '../core/approval.js'
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
 * Admin route guard: 401 without a valid key, 403 without the permission,
 * 400 when the query string is not well-formed text.
 * Sets `adminKey` (the holder's name) for the handler and the request log.
 */
export function requireAdmin(keys: readonly AdminKey[], permission: AdminPermission): MiddlewareHandler<{ Variables: { adminKey: string } }> {
  return async function adminGuard(c, next) {
    const key = findAdminKey(keys, c.req.header('authorization'))
    if (key === undefined) throw new AdminError('unauthorized', 'a valid admin key is required')
    if (![...key.roles].some((r) => GRANTS[r].has(permission))) {
      throw new AdminError('forbidden', `this key may not ${permission}`, `key=${key.name}`)
    }
    c.set('adminKey', key.name)
    // Only an authenticated caller learns that its input is malformed.
    checkQuery(c)
    await next()
  }
}
