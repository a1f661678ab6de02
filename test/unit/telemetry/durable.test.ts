/**
 * Telemetry across the broker's own I/O, composed with the durable
 * delegation log (PGlite under a temporary data_dir) and a user issuer whose
 * keys are fetched (global fetch stubbed: no network): the JWKS fetch made
 * while verifying the subject (a refetch for a key rotated in after the
 * fetch at start) carries the exchange's `traceparent`; the
 * committed `token.issued` record holds the request span's trace id; and the
 * audit writer's group size and commit latency are recorded.
 */
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SpanKind } from '@opentelemetry/api'
import { exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { composeMandate, type Mandate } from '../../../src/compose.js'
import { Config } from '../../../src/config/schema.js'
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../../src/core/claims.js'
import { createLogger } from '../../../src/telemetry/log.js'
import { basic, encodeForm, secretAgentPolicy } from '../../support/broker.js'
import { captureLogs } from '../../support/log-sink.js'
import { CALLER, points, recorder, telemetryStrings, type Recorder } from './support.js'
import { userAccessToken } from '../../support/tokens.js'

const BROKER = 'https://mandate.durable.test'
const IDP = 'https://idp.remote.test'
const JWKS_URI = `${IDP}/keys`
const AUDIENCE = 'https://api.durable.test'
const SECRET = 'durable-secret-5b1d9e0c7a3f46e2b8'
const ADMIN_KEY = 'durable-admin-key-0c9d8e7f6a5b'

let dir: string
let rec: Recorder
let mandate: Mandate
let userKey: CryptoKey
let jwk: JWK
/** Added to the broker's clock: moves it past the JWKS refetch cooldown without waiting. */
let offsetMs = 0
const lines: string[] = []
const upstream: { url: string; traceparent: string | null }[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-otel-'))
  await mkdir(join(dir, 'policies'))
  await writeFile(join(dir, 'policies', 'remote-agent.yaml'), secretAgentPolicy('remote-agent', IDP, { secret: SECRET, audience: AUDIENCE }))
  const keys = await generateKeyPair('RS256', { extractable: true })
  userKey = keys.privateKey
  jwk = { ...(await exportJWK(keys.publicKey)), kid: 'idp-1', alg: 'RS256', use: 'sig' }

  const realFetch = globalThis.fetch
  vi.stubGlobal('fetch', async (input: string | URL | Request, init?: RequestInit) => {
    const url = input instanceof Request ? input.url : String(input)
    if (!url.startsWith(IDP)) return realFetch(input, init)
    upstream.push({ url, traceparent: new Headers(init?.headers).get('traceparent') })
    return new Response(JSON.stringify({ keys: [jwk] }), { status: 200, headers: { 'content-type': 'application/json' } })
  })

  rec = recorder()
  const sink = captureLogs('telemetry durable broker', lines).stream
  const config = Config.parse({
    issuer: BROKER,
    policies_dir: join(dir, 'policies'),
    data_dir: join(dir, 'data'),
    signing: { generate_if_missing: true },
    trust: { subjects: [{ issuer: IDP, jwks_uri: JWKS_URI, algorithms: ['RS256'] }] },
    admin: { keys: [{ name: 'auditor', sha256: createHash('sha256').update(ADMIN_KEY).digest('hex'), roles: ['auditor'] }] },
  })
  // A busy test machine must not shed these requests (PGlite runs on the event loop).
  mandate = await composeMandate(config, {
    dev: false,
    logger: createLogger('info', sink),
    telemetry: rec.exporters,
    clock: () => Date.now() + offsetMs,
    loadSignals: { eventLoopLag: () => 0 },
  })
}, 60_000)

afterAll(async () => {
  await mandate?.close()
  vi.unstubAllGlobals()
  await rm(dir, { recursive: true, force: true })
})

async function userToken(): Promise<string> {
  return userAccessToken({ privateKey: userKey, alg: 'RS256', kid: jwk.kid! }, { iss: IDP, sub: 'carol', aud: BROKER, jti: `u-${Date.now()}-${Math.random()}` })
}

describe('telemetry with the durable log and a remote issuer', () => {
  let token: string
  let subject: string

  it('an exchange fetches the issuer keys with its traceparent, and commits its record with its trace id', async () => {
    // Fetched once at start, outside any request. The IdP then rotates to a key the broker has not seen.
    await vi.waitFor(() => expect(upstream).toHaveLength(1))
    expect(upstream[0]!.traceparent).toBeNull()
    const rotated = await generateKeyPair('RS256', { extractable: true })
    userKey = rotated.privateKey
    jwk = { ...(await exportJWK(rotated.publicKey)), kid: 'idp-2', alg: 'RS256', use: 'sig' }
    offsetMs = 31_000
    subject = await userToken()
    const res = await mandate.app.request('/oauth2/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', traceparent: CALLER.traceparent, ...basic('remote-agent', SECRET) },
      body: encodeForm({ grant_type: GRANT_TYPE_TOKEN_EXCHANGE, subject_token: subject, subject_token_type: TOKEN_TYPE.accessToken, audience: AUDIENCE }),
    })
    const text = await res.text()
    expect(res.status, text).toBe(200)
    token = (JSON.parse(text) as { access_token: string }).access_token

    // The key fetch ran inside the subject verification step, and says so.
    const verify = rec.spans().find((s) => s.name === 'mandate.subject.verify')!
    expect(verify.spanContext().traceId).toBe(CALLER.traceId)
    expect(upstream.map((u) => u.url)).toEqual([JWKS_URI, JWKS_URI])
    expect(upstream[1]!.traceparent).toBe(`00-${CALLER.traceId}-${verify.spanContext().spanId}-01`)

    // The committed record, read back through the admin API, carries the trace id.
    const audit = await mandate.app.request('/admin/audit?event=token.issued', { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
    expect(audit.status).toBe(200)
    const { records } = (await audit.json()) as { records: { record: Record<string, unknown> }[] }
    expect(records).toHaveLength(1)
    expect(records[0]!.record['trace_id']).toBe(CALLER.traceId)
    const line = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'request' && l['path'] === '/oauth2/token')
    expect(line?.['trace_id']).toBe(CALLER.traceId)
    const server = rec.spans().find((s) => s.kind === SpanKind.SERVER && s.name === 'POST /oauth2/token')
    expect(server?.spanContext().traceId).toBe(CALLER.traceId)
  })

  it('records audit group sizes and commit latencies', async () => {
    // A burst: requests read in one loop turn share a group.
    await Promise.all(
      Array.from({ length: 8 }, async () =>
        mandate.app.request('/oauth2/token', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('remote-agent', SECRET) },
          body: encodeForm({
            grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
            subject_token: await userToken(),
            subject_token_type: TOKEN_TYPE.accessToken,
            audience: AUDIENCE,
          }),
        }),
      ),
    )
    const m = await rec.metrics()
    const sizes = points(m, 'mandate.audit.group.size')
    const commits = points(m, 'mandate.audit.commit.duration')
    expect(sizes.map((p) => p.attributes)).toEqual([{ outcome: 'committed' }])
    expect(commits.map((p) => p.attributes)).toEqual([{ outcome: 'committed' }])
    const size = sizes[0]!.value as { count: number; sum: number; max: number }
    const commit = commits[0]!.value as { count: number; sum: number }
    // At start: policy.loaded and key.rotated; then 1 + 8 issuances and an admin read.
    expect(size.sum).toBeGreaterThanOrEqual(12)
    expect(size.count).toBeLessThan(size.sum) // some groups held several records
    expect(size.max).toBeGreaterThan(1)
    expect(commit.count).toBe(size.count)
    expect(commit.sum).toBeGreaterThan(0)
    expect(commit.sum / commit.count).toBeLessThan(2) // seconds
    expect(m.find((x) => x.descriptor.name === 'mandate.audit.commit.duration')?.descriptor.unit).toBe('s')
  })

  it('no span or metric holds the tokens or secrets used here', async () => {
    const text = telemetryStrings(rec.spans(), await rec.metrics()).join('\n')
    const secrets = [SECRET, ADMIN_KEY, subject, subject.split('.')[2]!, token, token.split('.')[2]!, Buffer.from(`remote-agent:${SECRET}`).toString('base64')]
    expect(secrets.filter((s) => text.includes(s))).toEqual([])
  })
})
