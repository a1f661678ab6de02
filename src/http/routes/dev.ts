import type { Context } from 'hono'
import { z } from 'zod'
import { OAuthError } from '../../core/errors.js'
import type { DevUserIssuer } from '../../tokens/dev-issuer.js'
import { NO_STORE } from '../oauth-errors.js'

const DevTokenBody = z.strictObject({
  scope: z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/).optional(),
  groups: z.array(z.string().min(1).max(128)).max(32).optional(),
})
const DevSubject = z.string().regex(/^[A-Za-z0-9._@-]{1,128}$/)

/** POST /dev/users/{sub}/token: a user token from the built-in dev issuer (`--dev` only). */
export function devUserTokenRoute(issuer: DevUserIssuer, now: () => number) {
  return async function devUserToken(c: Context): Promise<Response> {
    const sub = DevSubject.safeParse(c.req.param('sub'))
    if (!sub.success) throw new OAuthError('invalid_request', 'sub must be 1-128 of A-Z a-z 0-9 . _ @ -')
    const text = await c.req.text()
    let body: unknown = {}
    if (text.trim() !== '') {
      try {
        body = JSON.parse(text)
      } catch {
        throw new OAuthError('invalid_request', 'body must be JSON')
      }
    }
    const parsed = DevTokenBody.safeParse(body)
    if (!parsed.success) throw new OAuthError('invalid_request', 'body accepts only "scope" (string) and "groups" (array of strings)')
    const { scope, groups } = parsed.data
    return c.json({ access_token: await issuer.issue(sub.data, { ...(scope ? { scope } : {}), ...(groups ? { groups } : {}) }, now()) }, 200, NO_STORE)
  }
}

export function devJwksRoute(issuer: DevUserIssuer) {
  return (c: Context) => c.json(issuer.jwks)
}
