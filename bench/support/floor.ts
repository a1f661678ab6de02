/**
 * FOR BENCHMARKS ONLY. The crypto floor of `npm run bench`, never part of
 * Mandate: nothing under src/ imports it and it is not built into dist/.
 *
 *   tsx bench/support/floor.ts <server.json>     (from bench/support/inputs.ts)
 *
 * A bare Hono endpoint (`POST /oauth2/token` on @hono/node-server) doing only
 * the work no token exchange can avoid: parse the urlencoded form, verify the
 * client assertion (ES256) and the subject token (RS256) with one-shot
 * node:crypto calls in callback form (libuv's thread pool, as
 * src/tokens/jws.ts does) on keys imported at start, check exp/aud/iss
 * minimally, sign one ES256 JWT with a one-shot call, answer RFC 8693's JSON.
 * No policy, no audit, no revocation, no replay check: the limit Mandate
 * approaches, not a server anyone should run. `GET /jwks` serves its public key.
 *
 * Listens on PORT (127.0.0.1); prints `{"ready":true,"port":…,"token_endpoint":…}`
 * once listening; SIGTERM/SIGINT close it and exit 0.
 */
import { createPrivateKey, createPublicKey, randomUUID, sign, verify, type KeyObject } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { ACCESS_TOKEN_TYPE, JWT_BEARER_ASSERTION, settingsFromArgv, TOKEN_EXCHANGE, type ServerSettings } from './inputs.js'

const settings = settingsFromArgv<ServerSettings>('bench/support/floor.ts', 'server.json')
const port = Number(process.env['PORT'] ?? 0)

const idpKeys = new Map(settings.idp.jwks.keys.map((k) => [String(k['kid']), createPublicKey({ key: k, format: 'jwk' })]))
const agentKeys = new Map(settings.agents.map((a) => [a.id, createPublicKey({ key: a.jwks.keys[0]!, format: 'jwk' })]))
const signingKey = createPrivateKey({ key: settings.signing.privateJwk, format: 'jwk' })
const publicJwk = { ...createPublicKey(signingKey).export({ format: 'jwk' }), alg: 'ES256', kid: settings.signing.kid, use: 'sig' }
const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'at+jwt', kid: settings.signing.kid })).toString('base64url')

class Refusal extends Error {
  constructor(readonly code: 'invalid_request' | 'invalid_client') {
    super(code)
  }
}

/** A compact JWS split and decoded; any malformation is `code`. */
function decode(jwt: string | null, code: Refusal['code']) {
  const parts = jwt?.split('.') ?? []
  if (parts.length !== 3) throw new Refusal(code)
  try {
    return {
      header: JSON.parse(Buffer.from(parts[0]!, 'base64url').toString()) as Record<string, unknown>,
      payload: JSON.parse(Buffer.from(parts[1]!, 'base64url').toString()) as Record<string, unknown>,
      input: Buffer.from(`${parts[0]!}.${parts[1]!}`),
      signature: Buffer.from(parts[2]!, 'base64url'),
    }
  } catch {
    throw new Refusal(code)
  }
}

function verifyAsync(key: KeyObject | { key: KeyObject; dsaEncoding: 'ieee-p1363' }, data: Buffer, signature: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      verify('sha256', data, key, signature, (err, ok) => resolve(err === null && ok))
    } catch {
      resolve(false)
    }
  })
}
const signAsync = promisify(sign)

const app = new Hono()
app.get('/jwks', (c) => c.json({ keys: [publicJwk] }))
app.post('/oauth2/token', async (c) => {
  try {
    const form = new URLSearchParams(await c.req.text())
    if (form.get('grant_type') !== TOKEN_EXCHANGE || form.get('subject_token_type') !== ACCESS_TOKEN_TYPE) throw new Refusal('invalid_request')
    if (form.get('client_assertion_type') !== JWT_BEARER_ASSERTION) throw new Refusal('invalid_client')
    const now = Math.floor(Date.now() / 1000)

    const assertion = decode(form.get('client_assertion'), 'invalid_client')
    const agent = assertion.payload['iss']
    const agentKey = typeof agent === 'string' ? agentKeys.get(agent) : undefined
    if (agentKey === undefined || assertion.header['alg'] !== 'ES256' || assertion.payload['sub'] !== agent) throw new Refusal('invalid_client')
    if (assertion.payload['aud'] !== settings.issuer || !((assertion.payload['exp'] as number) > now)) throw new Refusal('invalid_client')

    const subject = decode(form.get('subject_token'), 'invalid_request')
    const idpKey = idpKeys.get(String(subject.header['kid']))
    if (idpKey === undefined || subject.header['alg'] !== 'RS256' || subject.header['typ'] !== 'at+jwt') throw new Refusal('invalid_request')
    const { iss, sub, aud, exp } = subject.payload
    if (iss !== settings.idp.issuer || typeof sub !== 'string' || !(aud === settings.issuer || (Array.isArray(aud) && aud.includes(settings.issuer)))) {
      throw new Refusal('invalid_request')
    }
    if (!((exp as number) > now)) throw new Refusal('invalid_request')

    const [clientOk, subjectOk] = await Promise.all([
      verifyAsync({ key: agentKey, dsaEncoding: 'ieee-p1363' }, assertion.input, assertion.signature),
      verifyAsync(idpKey, subject.input, subject.signature),
    ])
    if (!clientOk) throw new Refusal('invalid_client')
    if (!subjectOk) throw new Refusal('invalid_request')

    const resource = form.get('resource') ?? form.get('audience')
    const scope = form.get('scope') ?? ''
    const ttl = settings.tokenTtl
    const claims = { iss: settings.issuer, sub, aud: resource, client_id: agent, act: { sub: agent }, scope, jti: randomUUID(), iat: now, exp: now + ttl }
    const input = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`
    const signature = await signAsync('sha256', Buffer.from(input), { key: signingKey, dsaEncoding: 'ieee-p1363' })
    c.header('Cache-Control', 'no-store')
    return c.json({
      access_token: `${input}.${signature.toString('base64url')}`,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: ttl,
      scope,
    })
  } catch (err) {
    const code = err instanceof Refusal ? err.code : 'invalid_request'
    c.header('Cache-Control', 'no-store')
    return c.json({ error: code }, code === 'invalid_client' ? 401 : 400)
  }
})

const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info: AddressInfo) => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: info.port, token_endpoint: '/oauth2/token' })}\n`)
})

function shutdown(): void {
  server.close(() => process.exit(0))
  if ('closeAllConnections' in server) server.closeAllConnections()
}
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)
