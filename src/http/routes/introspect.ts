import type { Context } from 'hono'
import type { MandateClaims } from '../../core/claims.js'
import { CLIENT_AUTH_FAILED, OAuthError } from '../../core/errors.js'
import type { PolicyStore } from '../../policy/port.js'
import { tokenFacts, type RevocationStore } from '../../revocation/port.js'
import { decodeJws, JwtError } from '../../tokens/jws.js'
import type { SigningKeys } from '../../tokens/keys.js'
import type { AuthenticatedCaller, ClientAuthenticator } from '../../tokens/port.js'
import { verifyOwnToken } from '../../tokens/subject.js'
import { findAdminKey, type AdminKey } from '../admin-auth.js'
import { clientCredentials, refuseBodyCredentials } from '../client-credentials.js'
import { FormParams, readForm } from '../form.js'
import { NO_STORE } from '../oauth-errors.js'
import type { AppEnv } from '../app.js'

export interface TokenRoutesDeps {
  readonly issuer: string
  readonly keys: SigningKeys
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

export type TokenStatus =
  | { readonly state: 'active'; readonly claims: MandateClaims }
  | { readonly state: 'inactive' }
  /** Revocation state unknown: the caller must not treat the token as active. */
  | { readonly state: 'unknown'; readonly claims: MandateClaims; readonly detail: string }

/** Is this a live Mandate token: ours, unaltered, unexpired (no skew), unrevoked? */
export async function tokenStatus(token: string, deps: TokenRoutesDeps): Promise<TokenStatus> {
  let claims: MandateClaims
  try {
    claims = await verifyOwnToken(decodeJws(token), deps.issuer, deps.keys, deps.now(), 0)
  } catch (err) {
    if (err instanceof JwtError) return { state: 'inactive' }
    throw err
  }
  const verdict = deps.revocations.checkToken(tokenFacts(claims))
  switch (verdict.state) {
    case 'clear':
      return { state: 'active', claims }
    case 'revoked':
      return { state: 'inactive' }
    case 'unknown':
      return { state: 'unknown', claims, detail: verdict.detail }
  }
}

/** Authenticates the caller of /oauth2/revoke as an agent (RFC 7009: the holder); returns its id. */
export async function authenticateAgent(c: Context, form: FormParams, deps: TokenRoutesDeps): Promise<string> {
  const client = await deps.clients.authenticate(clientCredentials(c.req.header('authorization'), form), deps.policies.snapshot())
  await deps.clients.spend(client)
  return client.agent
}

/** Who asked: an introspection caller, authenticated. */
type Introspector = { readonly kind: 'auditor' } | AuthenticatedCaller

/**
 * Whether `caller` may learn anything about a token with these claims: the
 * agent it was minted to, a resource server serving its audience, an
 * auditor. RFC 7662 §2.2 lets the answer depend on who asks; §4: anyone
 * else must not learn the token is live.
 */
function maySee(caller: Introspector, claims: MandateClaims): boolean {
  switch (caller.kind) {
    case 'auditor':
      return true
    case 'agent':
      return claims.client_id === caller.agent
    case 'resource_server':
      return caller.server.audiences.has(claims.aud)
  }
}

/**
 * Authenticates the caller of /oauth2/introspect: an admin key with read
 * permission (`Authorization: Bearer`), else client authentication as an
 * agent or a resource server. A key without read permission is no
 * introspection credential (401), not a caller who sees nothing.
 */
async function authenticateIntrospector(c: Context<AppEnv>, form: FormParams, deps: TokenRoutesDeps): Promise<Introspector> {
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

/**
 * POST /oauth2/introspect (RFC 7662). Only a caller that may see the token
 * (see `maySee`) gets `active: true` and its claims; everyone else, and
 * anything revoked, expired, altered or unknown, gets `{"active": false}`.
 * When the revocation state is unknown the answer is 503 for a caller that
 * may see the token, never `active: true`.
 */
export function introspectRoute(deps: TokenRoutesDeps) {
  return async function introspect(c: Context<AppEnv>): Promise<Response> {
    const form = new FormParams(await readForm(c, deps.maxBodyBytes))
    const caller = await authenticateIntrospector(c, form, deps)
    const token = form.required('token')
    const status = await tokenStatus(token, deps)
    // Decided before the revocation state: a 503 would tell someone else the token is genuine.
    if (status.state === 'inactive' || !maySee(caller, status.claims)) return c.json({ active: false }, 200, NO_STORE)
    switch (status.state) {
      case 'unknown':
        throw new OAuthError('temporarily_unavailable', 'revocation state is unknown; try again', { detail: status.detail, retryAfter: 1 })
      case 'active':
        c.set('jti', status.claims.jti)
        return c.json({ active: true, token_type: 'Bearer', ...status.claims }, 200, NO_STORE)
    }
  }
}
