import type { AuditLog } from '../../audit/port.js'
import { OAuthError } from '../../core/errors.js'
import { holderRevocation, tokenStatus } from '../../core/token-access.js'
import { RevocationError, type RevocationService } from '../../revocation/service.js'
import type { AppContext } from '../env.js'
import { FormParams, readForm } from '../form.js'
import { NO_STORE } from '../oauth-errors.js'
import { authenticateAgent, type TokenRoutesDeps } from '../token-callers.js'

/**
 * POST /oauth2/revoke (RFC 7009): an agent drops a token it holds when its
 * task is done. The token and every token delegated from it are revoked
 * (kind `chain`). An invalid or unknown token is answered 200, as §2.2 says;
 * a token issued to another agent is refused (core/token-access.ts
 * `holderRevocation`).
 */
export function revokeRoute(deps: TokenRoutesDeps & { readonly service: RevocationService; readonly audit: AuditLog }) {
  return async function revoke(c: AppContext): Promise<Response> {
    const form = new FormParams(await readForm(c, deps.maxBodyBytes))
    const agent = await authenticateAgent(c, form, deps)
    const decision = holderRevocation(agent, await tokenStatus(form.required('token'), deps))
    if (!decision.revoke) return c.body(null, 200, NO_STORE)
    const { claims } = decision
    c.set('jti', claims.jti)
    try {
      const r = await deps.service.revoke({
        target: { kind: 'chain', jti: claims.jti },
        reason: 'revoked by its holder (RFC 7009)',
        createdBy: `agent:${agent}`,
        tokenExpiresAt: claims.exp,
      })
      await deps.audit
        .append({
          type: 'revocation.created',
          at: deps.now(),
          by: `agent:${agent}`,
          revocation: r,
          clientAddress: c.get('clientAddress'),
          traceId: c.get('traceId'),
        })
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
