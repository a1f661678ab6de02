/**
 * Shared Signals: POST /ssf/poll (RFC 8936) for poll receivers, and the
 * transmitter's metadata at GET /.well-known/ssf-configuration (SSF 1.0 §7.1).
 * Errors here use the SET delivery shape (RFC 8935 §2.3, which RFC 8936
 * §2.4.4 reuses): `{"err", "description"}`, never cached.
 */
import type { Context, Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { describeRoute, resolver } from 'hono-openapi'
import { z } from 'zod'
import { OAuthError } from '../../core/errors.js'
import { decodeUtf8, holdsOnlyStorableText } from '../../core/text.js'
import type { PollRequest, SetPoller } from '../../ssf/port.js'
import type { AuthenticatedCaller, ClientCredentials } from '../../tokens/port.js'
import { clientCredentials } from '../client-credentials.js'
import type { ClientAuthAttempt } from '../auth-throttle.js'
import type { AppEnv } from '../env.js'
import { FormParams } from '../form.js'
import { jsonContent } from '../openapi.js'
import { NO_STORE } from '../oauth-errors.js'

export interface SsfRoutesDeps {
  readonly issuer: string
  readonly poller: SetPoller
  /** Authenticates a configured resource server (client_secret_basic) and spends its assertion, if any. */
  readonly authenticate: (credentials: ClientCredentials) => Promise<AuthenticatedCaller>
  /** The failed-authentication back-off, as at /oauth2/token (`clientAuthAttempt`); none without it. */
  readonly throttle?: (c: Context<AppEnv>) => ClientAuthAttempt
  readonly maxBodyBytes: number
  /** Told why a poll could not be answered (the database failed); the answer is a 503. */
  readonly onFailure: (err: unknown) => void
}

/** RFC 8935 §2.3 / §7.1 error codes used here, and `temporarily_unavailable` (RFC 6749's) for an outage. */
type SetErrCode = 'invalid_request' | 'authentication_failed' | 'access_denied' | 'temporarily_unavailable' | 'rate_limited'

const STATUS: Record<SetErrCode, 400 | 401 | 403 | 429 | 503> = {
  invalid_request: 400,
  authentication_failed: 401,
  access_denied: 403,
  // RFC 6585 §4; sent as `temporarily_unavailable`, as the OAuth endpoints send their back-off.
  rate_limited: 429,
  temporarily_unavailable: 503,
}

/** Bounds of one poll: the cap on `maxEvents` and on what a request may acknowledge or report at once. */
const MAX_EVENTS = 1000
const DEFAULT_EVENTS = 100
const MAX_LISTED = 1000
/** A SET's `jti` as Mandate makes them is 22 characters; anything a receiver echoes is bounded well above that. */
const JtiString = z.string().min(1).max(128)

export const PollBody = z
  .strictObject({
    maxEvents: z.number().int().min(0).max(MAX_EVENTS).optional().describe(`most SETs to return (default ${DEFAULT_EVENTS}); 0: only acknowledge`),
    returnImmediately: z.boolean().optional().describe('false (default): wait up to ssf.long_poll_max_seconds for a SET when none is pending'),
    ack: z.array(JtiString).max(MAX_LISTED).optional().describe('jti of each SET received and processed'),
    setErrs: z
      .record(JtiString, z.strictObject({ err: z.string().min(1).max(64), description: z.string().max(256) }))
      .optional()
      .describe('jti → error of each SET received that could not be processed (RFC 8935 §2.3)'),
  })
  .meta({ id: 'SetPollRequest' })

export const PollResponse = z
  .object({
    sets: z.record(z.string(), z.string()).describe('jti → SET (compact JWS, `typ: secevent+jwt`)'),
    moreAvailable: z.boolean(),
  })
  .meta({ id: 'SetPollResponse' })

const SetError = z.object({ err: z.string(), description: z.string() }).meta({ id: 'SetError' })

const errorResponses = Object.fromEntries(
  (
    [
      [400, 'Malformed body (not UTF-8 JSON, a NUL or lone surrogate, unknown member, out of bounds), or not `application/json`.'],
      [401, 'Client authentication failed (client_secret_basic of a configured resource server).'],
      [403, 'The resource server polls for no receiver.'],
      [413, 'Body too large.'],
      [429, 'Too many failed client authentications from this address or for this client: `temporarily_unavailable` with Retry-After.'],
      [503, 'The database did not answer; retry.'],
    ] as const
  ).map(([status, description]) => [status, { description, content: jsonContent(SetError) }]),
)

const pollDoc = describeRoute({
  tags: ['Shared Signals'],
  operationId: 'pollSecurityEvents',
  summary: 'Poll for revocation Security Event Tokens (RFC 8936)',
  description:
    'For a receiver configured with `delivery: { method: poll, resource_server }`. Returns pending SETs oldest first; a SET stays pending, ' +
    'and is returned again, until acknowledged (`ack`) or reported (`setErrs`). docs/events.md describes the events.',
  security: [{ clientSecretBasic: [] }],
  requestBody: { required: true, content: jsonContent(PollBody) },
  responses: { 200: { description: 'Pending SETs.', content: jsonContent(PollResponse) }, ...errorResponses },
})

const configurationDoc = describeRoute({
  tags: ['Shared Signals'],
  operationId: 'ssfConfiguration',
  summary: 'Shared Signals transmitter metadata (SSF 1.0 §7.1)',
  security: [],
  responses: { 200: { description: 'The metadata.', content: { 'application/json': { schema: resolver(z.record(z.string(), z.unknown())) } } } },
})

function setError(c: Context<AppEnv>, code: SetErrCode, description: string, retryAfter = 1): Response {
  c.set('error', code)
  const headers: Record<string, string> = { ...NO_STORE }
  if (code === 'authentication_failed') headers['WWW-Authenticate'] = 'Basic realm="mandate", charset="UTF-8"'
  if (code === 'temporarily_unavailable' || code === 'rate_limited') headers['Retry-After'] = String(retryAfter)
  return c.json({ err: code === 'rate_limited' ? 'temporarily_unavailable' : code, description }, STATUS[code], headers)
}

/** Mounts the SSF routes; only called when receivers are configured. */
export function mountSsf(app: Hono<AppEnv>, deps: SsfRoutesDeps): void {
  const metadata = {
    spec_version: '1_0',
    issuer: deps.issuer,
    jwks_uri: `${deps.issuer}/.well-known/jwks.json`,
    // RFC 8935 and RFC 8936 by their SSF 1.0 §6 URNs. Streams are configured on the broker, so there is no configuration endpoint.
    delivery_methods_supported: ['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936'],
    authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:7617' }],
    // Not an SSF member: where poll receivers poll (SSF puts it in a stream's configuration, which has no endpoint here).
    mandate_poll_endpoint: `${deps.issuer}/ssf/poll`,
  }
  app.get('/.well-known/ssf-configuration', configurationDoc, (c) => c.json(metadata, 200, { 'Cache-Control': 'public, max-age=300' }))

  const limit = bodyLimit({
    maxSize: deps.maxBodyBytes,
    onError: (c) => {
      c.set('error', 'invalid_request')
      return c.json({ err: 'invalid_request', description: 'request body too large' }, 413, NO_STORE)
    },
  })

  app.post('/ssf/poll', pollDoc, limit, async (c) => {
    const attempt = deps.throttle?.(c)
    // Backing off: nothing is checked, as at the token endpoint.
    if (attempt?.retryAfter !== undefined) return setError(c, 'rate_limited', 'too many failed client authentications; try again later', attempt.retryAfter)
    let caller: AuthenticatedCaller
    try {
      // RFC 8936's body is JSON, so credentials come in the Authorization header only (no form to carry an assertion).
      caller = await deps.authenticate(clientCredentials(c.req.header('authorization'), new FormParams(new URLSearchParams())))
    } catch (err) {
      if (err instanceof OAuthError && err.code === 'temporarily_unavailable') return setError(c, 'temporarily_unavailable', err.description)
      if (err instanceof OAuthError) {
        // invalid_request too (malformed Basic credentials): each is a guess the back-off must count.
        attempt?.failed()
        return setError(c, 'authentication_failed', 'client authentication failed')
      }
      throw err
    }
    if (caller.kind !== 'resource_server') {
      attempt?.failed()
      return setError(c, 'authentication_failed', 'client authentication failed')
    }
    attempt?.succeeded(caller.server.id)
    c.set('resourceServer', caller.server.id)

    const type = c.req.header('content-type')?.split(';')[0]?.trim().toLowerCase()
    if (type !== 'application/json') return setError(c, 'invalid_request', 'the body must be application/json')
    // Strict UTF-8 (RFC 8259 §8.1), never replaced; and no NUL or lone surrogate spelled as a JSON escape: the jtis
    // and errors a receiver echoes reach PostgreSQL, which would refuse them and turn hostile input into a 503.
    const text = decodeUtf8(new Uint8Array(await c.req.arrayBuffer()))
    if (text === undefined) return setError(c, 'invalid_request', 'the body is not UTF-8')
    let raw: unknown
    try {
      raw = JSON.parse(text)
    } catch {
      return setError(c, 'invalid_request', 'the body is not JSON')
    }
    if (!holdsOnlyStorableText(raw, text)) return setError(c, 'invalid_request', 'the body holds a NUL or a lone surrogate')
    const parsed = PollBody.safeParse(raw)
    if (!parsed.success) {
      const where = parsed.error.issues[0]?.path[0]
      return setError(c, 'invalid_request', typeof where === 'string' ? `${where} is invalid` : 'the body must be a JSON object of poll members')
    }
    const body = parsed.data
    const request: PollRequest = {
      maxEvents: body.maxEvents ?? DEFAULT_EVENTS,
      returnImmediately: body.returnImmediately ?? false,
      ack: body.ack ?? [],
      setErrs: new Map(Object.entries(body.setErrs ?? {})),
    }
    let answer
    try {
      answer = await deps.poller.poll(caller.server.id, request, c.req.raw.signal)
    } catch (err) {
      // The database failed: the SETs stay pending, nothing was lost.
      deps.onFailure(err)
      return setError(c, 'temporarily_unavailable', 'SET queue unavailable; retry')
    }
    if (answer === undefined) return setError(c, 'access_denied', 'this client polls for no receiver')
    return c.json(answer, 200, NO_STORE)
  })
}
