import { randomBytes } from 'node:crypto'
import type { Context } from 'hono'
import type { ApprovalStore } from '../../approvals/port.js'
import { requestApproval, type CibaDeps } from '../../core/ciba.js'
import { OAuthError } from '../../core/errors.js'
import type { ExchangeDeps, ExchangeFailureContext } from '../../core/exchange.js'
import { clientCredentials } from '../client-credentials.js'
import { FormParams, readForm } from '../form.js'
import { NO_STORE } from '../oauth-errors.js'
import { denialUri, ResourceUri, Scope } from './token.js'
import type { AppEnv } from '../env.js'

/** Human approval as the app is given it: where requests live, and the config's bounds. */
export interface ApprovalSettings {
  readonly store: ApprovalStore
  readonly maxPending: number
  readonly pollInterval: number
}

/** The exchange's dependencies, and what CIBA adds to them. */
export function cibaDeps(exchange: ExchangeDeps, approvals: ApprovalSettings): CibaDeps {
  return {
    ...exchange,
    approvals: approvals.store,
    maxPending: approvals.maxPending,
    pollInterval: approvals.pollInterval,
    // The public id names the request to approvers; the handle (CIBA `auth_req_id`) is the agent's secret.
    newApprovalId: () => `apr_${randomBytes(16).toString('base64url')}`,
    newHandle: () => randomBytes(32).toString('base64url'),
  }
}

/** CIBA Core §7.1 `binding_message`: short, printable, one line (it is shown on a phone and in a console). */
const BINDING_MESSAGE = /^[\x20-\x7e\u00a0-\uffff]{1,64}$/u

/**
 * POST /oauth2/bc-authorize (OpenID CIBA Core 1.0 §7): an agent asks for a
 * token that needs a person's approval. The user is named by their token
 * (`login_hint_token`); the action by `audience`/`resource`, `scope` and
 * RFC 9396 `authorization_details`. Answers `auth_req_id`, `expires_in` and
 * `interval` (§7.3); the agent then polls the token endpoint.
 */
export function bcAuthorizeRoute(deps: CibaDeps, maxBodyBytes: number) {
  return async function bcAuthorize(c: Context<AppEnv>): Promise<Response> {
    const context: ExchangeFailureContext = { agent: undefined }
    try {
      const form = new FormParams(await readForm(c, maxBodyBytes))
      // §7.1: exactly one hint. Mandate needs the user's own token (as an exchange does); `id_token_hint` is
      // verified the same way, so a plain ID token, made for another client, is refused like any unacceptable token.
      const hints = [form.optional('login_hint_token'), form.optional('id_token_hint')].filter((h) => h !== undefined)
      if (form.optional('login_hint') !== undefined)
        throw new OAuthError('invalid_request', 'login_hint is not supported: send the user’s token as login_hint_token')
      if (hints.length !== 1) throw new OAuthError('invalid_request', 'exactly one of login_hint_token and id_token_hint is required')
      const resources = form.all('resource')
      for (const r of resources)
        if (!ResourceUri.safeParse(r).success) throw new OAuthError('invalid_target', 'resource must be an absolute URI without a fragment')
      const scope = form.optional('scope')
      let scopes: string[] | undefined
      if (scope !== undefined) {
        const parsed = Scope.safeParse(scope)
        if (!parsed.success) throw new OAuthError('invalid_scope', 'scope is malformed')
        // CIBA requires `openid`, an OpenID Provider's scope: Mandate issues no ID token and ignores it.
        scopes = parsed.data.filter((s) => s !== 'openid')
        if (scopes.length === 0) scopes = undefined
      }
      const bindingMessage = form.optional('binding_message')
      if (bindingMessage !== undefined && !BINDING_MESSAGE.test(bindingMessage)) {
        throw new OAuthError('invalid_request', 'binding_message must be 1-64 printable characters', { detail: 'invalid_binding_message' })
      }
      const expiry = form.optional('requested_expiry')
      if (expiry !== undefined && !/^[1-9][0-9]{0,5}$/.test(expiry)) throw new OAuthError('invalid_request', 'requested_expiry must be a positive integer')
      if (form.optional('user_code') !== undefined) throw new OAuthError('invalid_request', 'user_code is not supported')
      const result = await requestApproval(
        {
          client: clientCredentials(c.req.header('authorization'), form),
          loginHintToken: hints[0]!,
          audiences: [...resources, ...form.all('audience')],
          scopes,
          authorizationDetails: form.optional('authorization_details'),
          bindingMessage,
          requestedExpiry: expiry === undefined ? undefined : Number(expiry),
          clientAddress: c.get('clientAddress'),
          traceId: c.get('traceId'),
          requestId: c.get('requestId'),
        },
        deps,
        context,
      )
      return c.json({ auth_req_id: result.authReqId, expires_in: result.expiresIn, interval: result.interval }, 200, NO_STORE)
    } catch (err) {
      if (context.denialRecorded === true) c.set('errorUri', denialUri(c.get('requestId')))
      throw err
    } finally {
      if (context.agent !== undefined) c.set('agent', context.agent)
    }
  }
}
