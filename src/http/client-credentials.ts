import { CLIENT_ASSERTION_TYPE_JWT, CLIENT_ASSERTION_TYPE_SPIFFE } from '../core/claims.js'
import { CLIENT_AUTH_FAILED, OAuthError } from '../core/errors.js'
import { decodeUtf8, isStorableText } from '../core/text.js'
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
  // RFC 7617 §2.1: UTF-8. Bytes that are not, a NUL, a lone surrogate or a broken escape are refused
  // as a malformed request (400), as anywhere else a caller controls; they must not pass as U+FFFD.
  const malformed = () => new OAuthError('invalid_request', 'malformed Basic credentials', { detail: 'Basic credentials are not well-formed text' })
  const decoded = decodeUtf8(Buffer.from(match[1]!, 'base64'))
  if (decoded === undefined) throw malformed()
  const colon = decoded.indexOf(':')
  if (colon < 0) throw fail('malformed Basic credentials')
  let clientId: string
  let secret: string
  try {
    clientId = formDecode(decoded.slice(0, colon))
    secret = formDecode(decoded.slice(colon + 1))
  } catch {
    throw malformed()
  }
  if (!isStorableText(clientId) || !isStorableText(secret)) throw malformed()
  if (clientId === '' || secret === '') throw fail('empty Basic credentials')
  return { clientId, secret }
}

const twoMethods = () => new OAuthError('invalid_request', 'use exactly one client authentication method')

/** The client credentials a form body carries, and how many methods they are. */
function bodyCredentials(form: FormParams) {
  const secret = form.optional('client_secret')
  const assertionType = form.optional('client_assertion_type')
  const assertion = form.optional('client_assertion')
  const actorToken = form.optional('actor_token')
  const actorTokenType = form.optional('actor_token_type')
  if (actorToken !== undefined && actorTokenType === undefined) {
    throw new OAuthError('invalid_request', 'actor_token_type is required with actor_token')
  }
  if (actorToken === undefined && actorTokenType !== undefined) {
    throw new OAuthError('invalid_request', 'actor_token_type given without actor_token')
  }
  const present = [secret !== undefined, assertion !== undefined || assertionType !== undefined, actorToken !== undefined]
  return { secret, assertionType, assertion, actorToken, actorTokenType, methods: present.filter(Boolean).length }
}

/**
 * For a request authenticated some other way (an admin key in
 * `Authorization: Bearer`): client credentials in the body as well are two
 * methods at once, `invalid_request` (RFC 6749 §2.3).
 */
export function refuseBodyCredentials(form: FormParams): void {
  if (bodyCredentials(form).methods > 0) throw twoMethods()
}

/**
 * Finds how the client authenticates. RFC 6749 §2.3: exactly one method per
 * request; credentials in two places (Basic and a body `client_secret`, or
 * any two of Basic, `client_secret`, `client_assertion`, `actor_token`) are
 * `invalid_request`. A body `client_id` only identifies (RFC 6749 §3.2.1):
 * beside Basic it must name the same client, else the request is ambiguous
 * (`invalid_request`). A `client_assertion` of type `jwt-spiffe` is a SPIFFE
 * JWT-SVID (draft-ietf-oauth-spiffe-client-auth). `actor_token` is accepted only as a workload identity,
 * i.e. as the agent's whole authentication.
 */
export function clientCredentials(authorization: string | undefined, form: FormParams): ClientCredentials {
  const clientId = form.optional('client_id')
  const { secret, assertionType, assertion, actorToken, actorTokenType, methods } = bodyCredentials(form)
  if (methods + (authorization === undefined ? 0 : 1) > 1) throw twoMethods()
  if (secret !== undefined) throw fail('client_secret_post is not supported')
  if (authorization !== undefined) {
    const basic = parseBasic(authorization)
    if (clientId !== undefined && clientId !== basic.clientId) {
      throw new OAuthError('invalid_request', 'client_id does not match the Authorization header', { detail: 'client_id differs from the Basic id' })
    }
    return { method: 'client_secret_basic', ...basic }
  }
  if (assertion !== undefined || assertionType !== undefined) {
    if (assertion === undefined) throw fail('client_assertion missing')
    if (assertionType === CLIENT_ASSERTION_TYPE_SPIFFE) return { method: 'spiffe_jwt', assertion, clientId }
    if (assertionType !== CLIENT_ASSERTION_TYPE_JWT) throw fail('unsupported client assertion')
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
