/**
 * Who calls /oauth2/introspect and /oauth2/revoke, authenticated from the
 * request; what each may then see or revoke is decided in
 * core/token-access.ts.
 */
import type { Introspector } from '../core/token-access.js'
import { CLIENT_AUTH_FAILED, OAuthError } from '../core/errors.js'
import type { MandateClaims } from '../core/claims.js'
import type { PolicyStore } from '../policy/port.js'
import type { RevocationStore } from '../revocation/port.js'
import type { ClientAuthenticator } from '../tokens/port.js'
import { findAdminKey, type AdminKey } from './admin-auth.js'
import { clientCredentials, refuseBodyCredentials } from './client-credentials.js'
import type { AppContext } from './env.js'
import type { FormParams } from './form.js'

export interface TokenRoutesDeps {
  /** Our token's claims, or undefined for any other string (`SubjectVerifier.verifyOwn`). */
  readonly verify: (token: string) => Promise<MandateClaims | undefined>
  readonly clients: ClientAuthenticator
  readonly policies: PolicyStore
  readonly revocations: RevocationStore
  readonly adminKeys: readonly AdminKey[]
  /** Epoch seconds. */
  readonly now: () => number
  /** Called when an audit record could not be written for an action that already took effect. */
  readonly onAuditError: (err: unknown) => void
  /** Largest form body accepted (413 beyond). */
  readonly maxBodyBytes: number
}

/** Authenticates the caller of /oauth2/revoke as an agent (RFC 7009: the holder); returns its id. */
export async function authenticateAgent(c: AppContext, form: FormParams, deps: TokenRoutesDeps): Promise<string> {
  const client = await deps.clients.authenticate(clientCredentials(c.req.header('authorization'), form), deps.policies.snapshot())
  await deps.clients.spend(client)
  c.set('agent', client.agent)
  return client.agent
}

/**
 * Authenticates the caller of /oauth2/introspect: an admin key with read
 * permission (`Authorization: Bearer`), else client authentication as an
 * agent or a resource server. A key without read permission is no
 * introspection credential (401), not a caller who sees nothing.
 */
export async function authenticateIntrospector(c: AppContext, form: FormParams, deps: TokenRoutesDeps): Promise<Introspector> {
  const authorization = c.req.header('authorization')
  if (authorization !== undefined && /^Bearer /i.test(authorization)) {
    const key = findAdminKey(deps.adminKeys, authorization)
    if (key === undefined || ![...key.roles].some((r) => r === 'auditor' || r === 'admin')) {
      throw new OAuthError('invalid_client', CLIENT_AUTH_FAILED, { detail: 'introspection bearer key refused' })
    }
    refuseBodyCredentials(form)
    c.set('adminKey', key.name)
    return { kind: 'auditor' }
  }
  const caller = await deps.clients.authenticateCaller(clientCredentials(authorization, form), deps.policies.snapshot())
  await deps.clients.spend(caller)
  if (caller.kind === 'agent') c.set('agent', caller.agent)
  else c.set('resourceServer', caller.server.id)
  return caller
}
