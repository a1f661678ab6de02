import { isIP } from 'node:net'
import type { Context } from 'hono'
import type { AuthFailureThrottle } from '../admission/auth-failures.js'
import { OAuthError, retryAfterSeconds } from '../core/errors.js'
import type { ThrottledEndpoint } from '../telemetry/metrics.js'
import type { AppEnv } from './env.js'
import { claimedBasicClientId } from './client-credentials.js'

export interface ClientAuthThrottle {
  readonly failures: AuthFailureThrottle
  /** Whether a client id names a client that authenticates (an agent, a resource server): only those key a counter, so that made-up ids cannot grow the maps. */
  readonly known: (clientId: string) => boolean
  /** Each request refused by the back-off (metrics, the aggregated log line). */
  readonly onThrottled: (endpoint: ThrottledEndpoint) => void
}

/**
 * The back-off's key for an address: an IPv6 address by its /64 (what one
 * subscriber or host is usually given, so rotating through it gains
 * nothing), an IPv4 address whole.
 */
export function throttleKey(address: string | undefined): string | undefined {
  if (address === undefined || isIP(address) !== 6) return address
  const [head = '', tail = ''] = address.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === '' ? [] : tail.split(':')
  const groups = address.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`
}

/** One request's passage through the back-off, for a route that authenticates its client. */
export interface ClientAuthAttempt {
  /** Seconds the caller must wait (429 with Retry-After, nothing checked), or undefined: authenticate it now. */
  readonly retryAfter: number | undefined
  /** Its client authentication failed. */
  failed(): void
  /** It authenticated as `clientId` (or was answered after naming it): clears that client at that address. */
  succeeded(clientId: string): void
}

/**
 * Starts a request's passage through the failed-authentication back-off
 * (AuthFailureThrottle): keyed by the caller's address and by the client id
 * its Basic credentials name, when that id is a known client. The one home
 * of the back-off for every route that authenticates clients.
 */
export function clientAuthAttempt(throttle: ClientAuthThrottle, endpoint: ThrottledEndpoint, c: Context<AppEnv>): ClientAuthAttempt {
  const address = throttleKey(c.get('clientAddress'))
  const claimedClient = (): string | undefined => {
    const id = claimedBasicClientId(c.req.header('authorization'))
    return id !== undefined && throttle.known(id) ? id : undefined
  }
  // With no failure anywhere lately (the usual case) the header is not even parsed.
  const claimed = throttle.failures.quiet() ? undefined : claimedClient()
  const wait = throttle.failures.check(address, claimed)
  if (wait !== undefined) throttle.onThrottled(endpoint)
  return {
    retryAfter: wait === undefined ? undefined : retryAfterSeconds(wait),
    failed: () => throttle.failures.failed(address, claimed ?? claimedClient()),
    succeeded: (clientId) => throttle.failures.succeeded(address, clientId),
  }
}

/**
 * Wraps a route that authenticates its client (/oauth2/token, /introspect,
 * /revoke) in the failed-authentication back-off (AuthFailureThrottle):
 * while the caller's address, or the agent its Basic credentials name, is
 * backing off, the answer is 429 (`rate_limited`, sent as
 * `temporarily_unavailable`, RFC 6585 §4) with Retry-After, and nothing is
 * checked. An `invalid_client` answer counts as a failure; any other answer
 * after the route named its agent clears that agent at that address.
 */
export function throttleClientAuth(
  throttle: ClientAuthThrottle,
  endpoint: ThrottledEndpoint,
  handler: (c: Context<AppEnv>) => Promise<Response>,
): (c: Context<AppEnv>) => Promise<Response> {
  return async function throttled(c: Context<AppEnv>): Promise<Response> {
    const attempt = clientAuthAttempt(throttle, endpoint, c)
    if (attempt.retryAfter !== undefined) {
      throw new OAuthError('rate_limited', 'too many failed client authentications; try again later', {
        detail: 'client authentication back-off',
        retryAfter: attempt.retryAfter,
      })
    }
    try {
      const response = await handler(c)
      const agent = c.get('agent')
      if (agent !== undefined) attempt.succeeded(agent)
      return response
    } catch (err) {
      if (err instanceof OAuthError && err.code === 'invalid_client') attempt.failed()
      else {
        const agent = c.get('agent')
        if (agent !== undefined) attempt.succeeded(agent)
      }
      throw err
    }
  }
}
