/**
 * Requests to resource servers with a Mandate token: `Authorization: Bearer`
 * (RFC 6750 §2.1) for a Bearer token, `Authorization: DPoP` and a proof of
 * the client's key (RFC 9449 §7.1) for a DPoP-bound one. Each function
 * takes the client's `ClientState`.
 */
import type { ClientState, FetchOptions, GetTokenRequest, MandateToken } from './client.js'
import { obtain, parse } from './client.js'
import { rememberNonce, signProof, useDpopNonceChallenge } from './dpop.js'

/**
 * `MandateClient.fetchWithToken`: one request with `token`; a DPoP token's
 * request is sent again, once, when the server answers `use_dpop_nonce`
 * with a nonce (RFC 9449 §9).
 */
export async function fetchWithToken(c: ClientState, token: MandateToken, input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const given = token as Partial<MandateToken> | undefined
  if (typeof given?.accessToken !== 'string' || !['Bearer', 'DPoP'].includes(given.tokenType as string))
    throw new TypeError('fetchWithToken takes a MandateToken')
  const request = new Request(input, init)
  if (token.tokenType === 'Bearer') return sendWith(c, request, token)
  // Kept for the one retry: a body can be sent only once.
  const spare = request.clone()
  const response = await sendWith(c, request, token)
  if (!useDpopNonceChallenge(response)) {
    await spare.body?.cancel()
    return response
  }
  await response.body?.cancel()
  return sendWith(c, spare, token)
}

/** `MandateClient.fetch`. */
export function authorizedFetch(c: ClientState, subjectToken: string, fetchOptions: FetchOptions) {
  return async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init)
    const target = fetchOptions.audienceFor(new URL(request.url))
    if (target === undefined) return c.fetch(request)
    const tokenRequest: GetTokenRequest = {
      subjectToken,
      audience: target.audience,
      signal: request.signal,
      ...(target.scope === undefined ? {} : { scope: target.scope }),
    }
    // Kept for the one retry: a body can be sent only once.
    const spare = request.clone()
    const token = await obtain(c, subjectToken, tokenRequest, c.self)
    const response = await sendWith(c, request, token)
    if (token.tokenType === 'DPoP' && useDpopNonceChallenge(response)) {
      // The nonce is learned: the same token again, with a proof that carries it.
      await response.body?.cancel()
      return sendWith(c, spare, token)
    }
    if (response.status !== 401 || !invalidTokenChallenge(response.headers.get('www-authenticate'))) {
      await spare.body?.cancel()
      return response
    }
    await response.body?.cancel()
    c.cache.delete(parse(c, subjectToken, tokenRequest, c.self).key, token)
    return sendWith(c, spare, await obtain(c, subjectToken, tokenRequest, c.self))
  }
}

/**
 * `request` with the token: `Authorization: Bearer` (RFC 6750 §2.1), or for
 * a DPoP token `Authorization: DPoP` and a `DPoP` proof for the request's
 * method and URI with the token's `ath` and the server's last nonce
 * (RFC 9449 §7.1); a nonce the answer carries is remembered.
 */
async function sendWith(c: ClientState, request: Request, token: MandateToken): Promise<Response> {
  const headers = new Headers(request.headers)
  if (token.tokenType === 'DPoP' && c.dpop === undefined) throw new TypeError('a DPoP token needs the client holding its key (ClientOptions.dpop)')
  if (token.tokenType !== 'DPoP' || c.dpop === undefined) {
    headers.set('authorization', `Bearer ${token.accessToken}`)
    return c.fetch(new Request(request, { headers }))
  }
  const nonce = c.dpop.nonces.get(new URL(request.url).origin)
  const proof = await signProof(
    await c.dpop.key,
    { htm: request.method, url: request.url, accessToken: token.accessToken, ...(nonce === undefined ? {} : { nonce }) },
    c.clock,
  )
  headers.set('authorization', `DPoP ${token.accessToken}`)
  headers.set('dpop', proof)
  const response = await c.fetch(new Request(request, { headers }))
  rememberNonce(c.dpop, request.url, response)
  return response
}

/** RFC 6750 §3 (and RFC 9449 §7.1 for DPoP): a challenge with `error="invalid_token"` (the token is expired, revoked or otherwise not accepted). */
function invalidTokenChallenge(header: string | null): boolean {
  if (header === null) return false
  return /(^|,)\s*(Bearer|DPoP)\b[^]*?\berror\s*=\s*"?invalid_token"?/i.test(header)
}
