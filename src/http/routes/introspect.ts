import type { Context } from 'hono'
import { actorsOf, type MandateClaims } from '../../core/claims.js'
import { OAuthError } from '../../core/errors.js'
import type { PolicyStore } from '../../policy/port.js'
import type { RevocationStore } from '../../revocation/port.js'
import { decodeJws, JwtError } from '../../tokens/jws.js'
import type { SigningKeys } from '../../tokens/keys.js'
import type { ClientAuthenticator } from '../../tokens/port.js'
import { verifyOwnToken } from '../../tokens/subject.js'
import { findAdminKey, type AdminKey } from '../admin-auth.js'
import { clientCredentials } from '../client-credentials.js'
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
  const verdict = deps.revocations.checkToken({
    jti: claims.jti,
    sub: claims.sub,
    actors: actorsOf(claims.act),
    chain: claims.chain ?? [],
    iat: claims.iat,
  })
  switch (verdict.state) {
    case 'clear':
      return { state: 'active', claims }
    case 'revoked':
      return { state: 'inactive' }
    case 'unknown':
      return { state: 'unknown', claims, detail: verdict.detail }
  }
}

/** Authenticates the caller of /oauth2/introspect and /oauth2/revoke as an agent; returns its id. */
export async function authenticateAgent(c: Context, form: FormParams, deps: TokenRoutesDeps): Promise<string> {
  const client = await deps.clients.authenticate(clientCredentials(c.req.header('authorization'), form), deps.policies.snapshot())
  await deps.clients.spend(client)
  return client.agent
}

/**
 * POST /oauth2/introspect (RFC 7662), for agents (client authentication as
 * at the token endpoint) and resource servers holding an admin key with
 * read permission (`Authorization: Bearer`). Anything revoked, expired,
 * altered or unknown is `{"active": false}`; when the revocation state is
 * unknown the answer is 503, never `active: true`.
 */
export function introspectRoute(deps: TokenRoutesDeps) {
  return async function introspect(c: Context<AppEnv>): Promise<Response> {
    const form = new FormParams(await readForm(c, deps.maxBodyBytes))
    const authorization = c.req.header('authorization')
    if (authorization !== undefined && /^Bearer /i.test(authorization)) {
      const key = findAdminKey(deps.adminKeys, authorization)
      if (key === undefined || ![...key.roles].some((r) => r === 'auditor' || r === 'admin')) {
        throw new OAuthError('invalid_client', 'client authentication failed', { detail: 'introspection bearer key refused' })
      }
    } else {
      c.set('agent', await authenticateAgent(c, form, deps))
    }
    const token = form.required('token')
    const status = await tokenStatus(token, deps)
    switch (status.state) {
      case 'inactive':
        return c.json({ active: false }, 200, NO_STORE)
      case 'unknown':
        throw new OAuthError('temporarily_unavailable', 'revocation state is unknown; try again', { detail: status.detail, retryAfter: 1 })
      case 'active':
        c.set('jti', status.claims.jti)
        return c.json({ active: true, token_type: 'Bearer', ...status.claims }, 200, NO_STORE)
    }
  }
}
