import { isIP } from 'node:net'
import type { Context } from 'hono'
import type { AuthFailureThrottle } from '../admission/auth-failures.js'
import type { AgentId } from '../core/claims.js'
import { OAuthError, retryAfterSeconds } from '../core/errors.js'
import type { PolicyStore } from '../policy/port.js'
import type { ThrottledEndpoint } from '../telemetry/metrics.js'
import type { AppEnv } from './env.js'
import { claimedBasicClientId } from './client-credentials.js'

export interface ClientAuthThrottle {
  readonly failures: AuthFailureThrottle
  /** Only an id that names an agent keys a counter, so that made-up ids cannot grow the maps. */
  readonly policies: PolicyStore
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
  const claimedAgent = (c: Context<AppEnv>): string | undefined => {
    const id = claimedBasicClientId(c.req.header('authorization'))
    return id !== undefined && throttle.policies.get(id as AgentId) !== undefined ? id : undefined
  }
  return async function throttled(c: Context<AppEnv>): Promise<Response> {
    const address = throttleKey(c.get('clientAddress'))
    // With no failure anywhere lately (the usual case) the header is not even parsed.
    const claimed = throttle.failures.quiet() ? undefined : claimedAgent(c)
    const wait = throttle.failures.check(address, claimed)
    if (wait !== undefined) {
      throttle.onThrottled(endpoint)
      throw new OAuthError('rate_limited', 'too many failed client authentications; try again later', {
        detail: 'client authentication back-off',
        retryAfter: retryAfterSeconds(wait),
      })
    }
    try {
      const response = await handler(c)
      const agent = c.get('agent')
      if (agent !== undefined) throttle.failures.succeeded(address, agent)
      return response
    } catch (err) {
      if (err instanceof OAuthError && err.code === 'invalid_client') throttle.failures.failed(address, claimed ?? claimedAgent(c))
      else {
        const agent = c.get('agent')
        if (agent !== undefined) throttle.failures.succeeded(address, agent)
      }
      throw err
    }
  }
}
