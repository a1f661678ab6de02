import { tokenTypeOf } from '../../core/exchange.js'
import { introspection, tokenStatus } from '../../core/token-access.js'
import type { AppContext } from '../env.js'
import { FormParams, readForm } from '../form.js'
import { NO_STORE } from '../oauth-errors.js'
import { authenticateIntrospector, type TokenRoutesDeps } from '../token-callers.js'

/**
 * POST /oauth2/introspect (RFC 7662). Only a caller that may see the token
 * (core/token-access.ts `maySee`) gets `active: true` and its claims;
 * everyone else, and anything revoked, expired, altered or unknown, gets
 * `{"active": false}`. When the revocation state is unknown the answer is
 * 503 for a caller that may see the token, never `active: true`.
 */
export function introspectRoute(deps: TokenRoutesDeps) {
  return async function introspect(c: AppContext): Promise<Response> {
    const form = new FormParams(await readForm(c, deps.maxBodyBytes))
    const caller = await authenticateIntrospector(c, form, deps)
    const answer = introspection(caller, await tokenStatus(form.required('token'), deps))
    if (!answer.active) return c.json({ active: false }, 200, NO_STORE)
    c.set('jti', answer.claims.jti)
    // RFC 9449 §6.2: a bound token says so, and its `cnf` names the key.
    return c.json({ active: true, token_type: tokenTypeOf(answer.claims), ...answer.claims }, 200, NO_STORE)
  }
}
