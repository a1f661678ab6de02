import type { Context } from 'hono'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import { OAuthError } from '../../core/errors.js'
import type { DevUserIssuer } from '../../tokens/dev-issuer.js'
import { JwkSet, jsonContent, oauthErrors, parametersOf } from '../openapi.js'
import { NO_STORE } from '../oauth-errors.js'

const DevTokenBody = z.strictObject({
  scope: z
    .string()
    .regex(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/)
    .optional(),
  groups: z.array(z.string().min(1).max(128)).max(32).optional(),
})
const DevSubject = z.string().regex(/^[A-Za-z0-9._@-]{1,128}$/)

export const devUserTokenDoc = describeRoute({
  tags: ['Dev'],
  operationId: 'devUserToken',
  summary: 'A user token from the built-in dev issuer',
  description: 'Only under `mandate serve --dev`: a user access token to exchange, signed by the dev issuer (trusted for user subjects in dev mode).',
  security: [],
  parameters: parametersOf('path', z.object({ sub: DevSubject.describe('The user (`sub` of the token).') })),
  requestBody: { required: false, description: 'Optional; an empty body asks for the defaults.', content: jsonContent(DevTokenBody) },
  responses: {
    200: { description: 'The token.', content: jsonContent(z.strictObject({ access_token: z.string() })) },
    ...oauthErrors(400, 413),
  },
})

export const devJwksDoc = describeRoute({
  tags: ['Dev'],
  operationId: 'devJwks',
  summary: "The dev issuer's public keys",
  security: [],
  responses: { 200: { description: "The dev issuer's JWK Set.", content: jsonContent(JwkSet) } },
})

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
