/**
 * Hostile text against a broker on the durable delegation log (PGlite, and
 * PostgreSQL in a database of its own), with concurrent requests: subject
 * tokens whose claims hold a NUL or a lone surrogate, and forms holding
 * them, sent at once with many good exchanges so that they would share
 * their group commits. Each hostile request gets its 400; every good one
 * gets its token and its `token.issued` record; no answer is a 5xx; the
 * log verifies.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { eq } from 'drizzle-orm'
import { exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { verifyAuditLog } from '../../src/audit/verify.js'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE } from '../../src/core/claims.js'
import { openDatabase } from '../../src/storage/database.js'
import { auditLog } from '../../src/storage/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { hashClientSecret } from '../../src/tokens/client-auth.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'
import { jtiOf, userAccessToken } from '../support/tokens.js'

const ISSUER = 'https://mandate.test'
const IDP = 'https://idp.test'
const AUDIENCE = 'https://api.test'
const SECRET = 'hostile-bytes-secret-0123456789'
const BASIC = { authorization: `Basic ${Buffer.from(`bytes-agent:${SECRET}`).toString('base64')}` }
const POLICY = `agent: bytes-agent
owner: security@example.com
purpose: hostile bytes test
expires: 2099-01-01
authentication: { method: client_secret_basic, secret_sha256: ${hashClientSecret(SECRET).toString('hex')} }
users: [{ issuer: ${IDP} }]
grants: [{ audience: ${AUDIENCE}, scopes: [read], default_scopes: [read] }]
token_ttl: { default: 300, max: 300 }
`

function describeHostileBytes(
  name: string,
  storage: () => Promise<{ url: string | undefined; drop(): Promise<void> }>,
  options: { describe?: typeof describe } = {},
): void {
  ;(options.describe ?? describe)(`hostile bytes, concurrent exchanges, durable log: ${name}`, () => {
    let dir: string
    let url: string | undefined
    let drop = async () => {}
    let m: Mandate | undefined
    let key: CryptoKey
    let jwk: JWK

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'mandate-hostile-'))
      ;({ url, drop } = await storage())
      await mkdir(join(dir, 'policies'))
      await writeFile(join(dir, 'policies', 'bytes-agent.yaml'), POLICY)
      const pair = await generateKeyPair('ES256', { extractable: true })
      key = pair.privateKey
      jwk = { ...(await exportJWK(pair.publicKey)), kid: 'idp-1', alg: 'ES256' }
      const config = Config.parse({
        issuer: ISSUER,
        policies_dir: join(dir, 'policies'),
        data_dir: join(dir, 'data'),
        signing: { generate_if_missing: true },
        log: { level: 'silent' },
        ...(url === undefined ? {} : { storage: { database_url: url } }),
      })
      m = await composeMandate(config, {
        dev: false,
        logger: createLogger('silent'),
        localSubjectIssuers: [
          { trusted: { issuer: IDP, jwksUri: undefined, algorithms: ['ES256'], audience: ISSUER, typ: ['at+jwt'] }, jwks: { keys: [jwk] } },
        ],
      })
    }, 120_000)

    afterAll(async () => {
      await m?.close()
      await drop()
      await rm(dir, { recursive: true, force: true })
    })

    const userToken = (claims: Record<string, unknown>) =>
      userAccessToken({ privateKey: key, alg: 'ES256', kid: 'idp-1' }, { sub: 'alice', ...claims, iss: IDP, aud: ISSUER })
    const post = (body: string | Uint8Array) =>
      Promise.resolve(m!.app.request('/oauth2/token', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...BASIC }, body }))
    const form = (subjectToken: string, extra: Record<string, string> = {}) =>
      new URLSearchParams({
        grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
        subject_token: subjectToken,
        subject_token_type: TOKEN_TYPE.accessToken,
        audience: AUDIENCE,
        ...extra,
      }).toString()

    it('every good exchange gets its token and its record; each hostile one gets 400 invalid_request; none gets a 5xx', async () => {
      const good = await Promise.all(Array.from({ length: 60 }, (_, i) => userToken({ sub: `user-${i}` })))
      const hostile: (string | Uint8Array)[] = [
        form(await userToken({ sub: 'ali\u0000ce' })),
        form(await userToken({ sub: 'ali\ud800ce' })),
        form(await userToken({ groups: ['x', 'y\u0000'] })),
        form(await userToken({}), { note: '\u0000' }),
        Buffer.concat([Buffer.from(form(await userToken({}))), Buffer.from([0x26, 0x78, 0x3d, 0xff])]),
      ]
      // Interleaved and all sent in one turn, so that they share the log's groups.
      const started: { kind: 'good' | 'hostile'; res: Promise<Response> }[] = []
      good.forEach((token, i) => {
        started.push({ kind: 'good', res: post(form(token)) })
        if (i % 12 === 5) started.push({ kind: 'hostile', res: post(hostile[Math.floor(i / 12)]!) })
      })
      expect(started.filter((s) => s.kind === 'hostile')).toHaveLength(hostile.length)
      const answers = await Promise.all(
        started.map(async (s) => ({ kind: s.kind, res: await s.res, body: (await (await s.res).clone().json()) as Record<string, unknown> })),
      )
      for (const a of answers) expect(a.res.status, JSON.stringify(a.body)).toBeLessThan(500)
      const issued = answers
        .filter((a) => a.kind === 'good')
        .map((a) => {
          expect(a.res.status, JSON.stringify(a.body)).toBe(200)
          return jtiOf(a.body['access_token'] as string)
        })
      for (const a of answers.filter((x) => x.kind === 'hostile')) {
        expect({ status: a.res.status, error: a.body['error'] }).toEqual({ status: 400, error: 'invalid_request' })
      }

      await m!.close()
      m = undefined
      const database = await openDatabase(url, { dataDir: join(dir, 'data') })
      try {
        const rows = await database.db.select({ jti: auditLog.jti }).from(auditLog).where(eq(auditLog.event, 'token.issued'))
        expect(rows.map((r) => r.jti).sort()).toEqual([...issued].sort())
        expect(await verifyAuditLog(database.db)).toMatchObject({ ok: true, findings: [] })
      } finally {
        await database.close()
      }
    })
  })
}

describeHostileBytes('pglite', async () => ({ url: undefined, drop: async () => {} }))

describeHostileBytes(
  'postgres',
  async () => {
    const test: TestDatabase = await createTestDatabase()
    return { url: test.url, drop: () => test.drop() }
  },
  { describe: describePostgres },
)
