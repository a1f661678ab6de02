import { CLIENT_ASSERTION_TYPE_JWT } from '../core/claims.js'
import { CLIENT_AUTH_FAILED, OAuthError } from '../core/errors.js'
import type { ClientCredentials } from '../tokens/port.js'
import type { FormParams } from './form.js'

const fail = (detail: string) => new OAuthError('invalid_client', CLIENT_AUTH_FAILED, { detail })

/** RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding. */
function formDecode(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, ' '))
}

function parseBasic(header: string): { clientId: string; secret: string } {
  const match = /^Basic ([A-Za-z0-9+/]+={0,2})$/i.exec(header.trim())
  if (match === null) throw fail('malformed Authorization header')
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) throw fail('malformed Basic credentials')
  try {
    const clientId = formDecode(decoded.slice(0, colon))
    const secret = formDecode(decoded.slice(colon + 1))
    if (clientId === '' || secret === '') throw fail('empty Basic credentials')
    return { clientId, secret }
  } catch (err) {
    if (err instanceof OAuthError) throw err
    throw fail('malformed Basic credentials encoding')
  }
}

/**
 * Finds how the client authenticates. RFC 6749 §2.3: exactly one method; two
 * at once is refused. `actor_token` is accepted only as a workload identity,
 * i.e. as the agent's whole authentication.
 */
export function clientCredentials(authorization: string | undefined, form: FormParams): ClientCredentials {
  const clientId = form.optional('client_id')
  const assertionType = form.optional('client_assertion_type')
  const assertion = form.optional('client_assertion')
  const actorToken = form.optional('actor_token')
  const actorTokenType = form.optional('actor_token_type')
  if (form.optional('client_secret') !== undefined) throw fail('client_secret_post is not supported')
  if (actorToken !== undefined && actorTokenType === undefined) {
    throw new OAuthError('invalid_request', 'actor_token_type is required with actor_token')
  }
  if (actorToken === undefined && actorTokenType !== undefined) {
    throw new OAuthError('invalid_request', 'actor_token_type given without actor_token')
  }

  const methods = [authorization !== undefined, assertion !== undefined || assertionType !== undefined, actorToken !== undefined]
  if (methods.filter(Boolean).length > 1) {
    throw new OAuthError('invalid_request', 'use exactly one client authentication method')
  }
  if (authorization !== undefined) {
    const basic = parseBasic(authorization)
    if (clientId !== undefined && clientId !== basic.clientId) throw fail('client_id does not match Basic credentials')
    return { method: 'client_secret_basic', ...basic }
  }
  if (assertion !== undefined || assertionType !== undefined) {
    if (assertionType !== CLIENT_ASSERTION_TYPE_JWT || assertion === undefined) throw fail('unsupported client assertion')
    return { method: 'private_key_jwt', assertion, clientId }
  }
  if (actorToken !== undefined && actorTokenType !== undefined) {
    return { method: 'workload_identity', actorToken, actorTokenType, clientId }
  }
  return { method: 'none', clientId }
}

/**
 * The client id an `Authorization: Basic` header claims, before any check;
 * undefined for another scheme or a malformed header. For keying the
 * failed-authentication back-off only: nothing is authenticated by it.
 */
export function claimedBasicClientId(authorization: string | undefined): string | undefined {
  if (authorization === undefined || !/^Basic /i.test(authorization)) return undefined
  try {
    return parseBasic(authorization).clientId
  } catch {
    return undefined
  }
}
