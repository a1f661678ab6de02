import type { Context } from 'hono'
import type { AuditLog } from '../../audit/port.js'
import { OAuthError } from '../../core/errors.js'
import { RevocationError, type RevocationService } from '../../revocation/service.js'
import { FormParams, readForm } from '../form.js'
import { NO_STORE } from '../oauth-errors.js'
import type { AppEnv } from '../app.js'
import { authenticateAgent, tokenStatus, type TokenRoutesDeps } from './introspect.js'

/**
 * POST /oauth2/revoke (RFC 7009): an agent drops a token it holds when its
 * task is done. The token and every token delegated from it are revoked
 * (kind `chain`). An invalid or unknown token is answered 200, as §2.2 says;
 * a token issued to another agent is refused.
 */
export function revokeRoute(deps: TokenRoutesDeps & { readonly service: RevocationService; readonly audit: AuditLog }) {
  return async function revoke(c: Context<AppEnv>): Promise<Response> {
    const form = new FormParams(await readForm(c, deps.maxBodyBytes))
    const agent = await authenticateAgent(c, form, deps)
    c.set('agent', agent)
    const status = await tokenStatus(form.required('token'), deps)
    // An expired or invalid token needs no revocation (RFC 7009 §2.2: still 200); an unknown
    // revocation state does not stop one.
    if (status.state === 'inactive') return c.body(null, 200, NO_STORE)
    const { claims } = status
    if (claims.client_id !== agent) {
      throw new OAuthError('unauthorized_client', 'the token was not issued to this client', { detail: `jti=${claims.jti}` })
    }
    c.set('jti', claims.jti)
    try {
      const r = await deps.service.revoke({
        target: { kind: 'chain', jti: claims.jti },
        reason: 'revoked by its holder (RFC 7009)',
        createdBy: `agent:${agent}`,
        tokenExpiresAt: claims.exp,
      })
      await deps.audit
        .append({ type: 'revocation.created', at: deps.now(), by: `agent:${agent}`, revocation: r, clientAddress: c.get('clientAddress'), traceId: c.get('traceId') })
        .catch(deps.onAuditError)
    } catch (err) {
      if (err instanceof RevocationError) {
        throw new OAuthError('temporarily_unavailable', 'revocation could not be recorded; try again', { detail: err.message, retryAfter: 1 })
      }
      throw err
    }
    return c.body(null, 200, NO_STORE)
  }
}
