/**
 * GET /openapi.json: a valid OpenAPI 3.1 document (checked by a real
 * validator), covering exactly the routes the app registered; its form
 * fields are the parameters the routes read; and real answers match the
 * bodies it documents (the zod schemas it is generated from).
 */
import { createHash } from 'node:crypto'
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Validator } from '@seriousme/openapi-schema-validator'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import type { z } from 'zod'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { CLIENT_ASSERTION_TYPE_JWT, TOKEN_TYPE } from '../../src/core/claims.js'
import {
  AdminErrorBody,
  AuditPage,
  AuthorizationServerMetadata,
  DelegationTree,
  AuditRecordBody,
  AuditVerification,
  IntrospectionResponse,
  JwkSet,
  OAuthErrorBody,
  RevocationList,
  RevocationRecord,
  TokenResponse,
} from '../../src/http/openapi.js'
import { BearerErrorBody } from '../../src/http/routes/forward-auth.js'
import { Readiness } from '../../src/http/routes/health.js'
import { createLogger } from '../../src/telemetry/log.js'
import { ADMIN_KEYS, AUDIENCE, basic, bearer, encodeForm, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'
import { createTestDatabase, describePostgres, type TestDatabase } from '../support/pg-database.js'

interface Operation {
  parameters?: { name: string; in: string }[]
  requestBody?: { content: Record<string, { schema: Schema }> }
  responses: Record<string, { headers?: Record<string, unknown> }>
}
interface Schema {
  $ref?: string
  properties?: Record<string, unknown>
}
interface Document {
  openapi: string
  paths: Record<string, Record<string, Operation>>
  components: { schemas: Record<string, Schema>; securitySchemes: Record<string, unknown> }
  [key: string]: unknown
}

/** Hono's `/admin/revocations/:id` is OpenAPI's `/admin/revocations/{id}`. */
const openApiPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')

/** The console's HTML pages are a client of the API, not part of it (docs/console.md). */
const isConsolePage = (path: string) => path === '/console' || path.startsWith('/console/')

/** Every (method, path) the app answers; `ALL` entries are middleware (request log, body limit, shedding), not routes. */
function registered(app: Mandate['app']): string[] {
  return [...new Set(app.routes.filter((r) => r.method !== 'ALL' && !isConsolePage(r.path)).map((r) => `${r.method} ${openApiPath(r.path)}`))].sort()
}

function documented(doc: Document): string[] {
  return Object.entries(doc.paths)
    .flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`))
    .sort()
}

async function served(app: Mandate['app']): Promise<Document> {
  const res = await app.request('/openapi.json')
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^application\/json/)
  return (await res.json()) as Document
}

/** The property names of a form body's schema, through its `$ref`. */
function formFields(doc: Document, path: string, method: string): string[] {
  let schema = doc.paths[path]![method]!.requestBody!.content['application/x-www-form-urlencoded']!.schema
  if (schema.$ref !== undefined) schema = doc.components.schemas[schema.$ref.replace('#/components/schemas/', '')]!
  return Object.keys(schema.properties ?? {}).sort()
}

/** The form parameters a request made the route read (every read goes through URLSearchParams.getAll). */
async function fieldsRead(send: () => Promise<Response>): Promise<{ names: string[]; status: number }> {
  const spy = vi.spyOn(URLSearchParams.prototype, 'getAll')
  try {
    const res = await send()
    await res.body?.cancel()
    return { names: [...new Set(spy.mock.calls.map(([name]) => name))].sort(), status: res.status }
  } finally {
    spy.mockRestore()
  }
}

/** `body` parses with `schema` and nothing in it is left unchecked (strict schemas fail on unknown keys). */
async function expectBody(res: Response, status: number, schema: z.ZodType): Promise<unknown> {
  const text = await res.text()
  expect(res.status, text.slice(0, 300)).toBe(status)
  const parsed = schema.safeParse(JSON.parse(text))
  expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true)
  return JSON.parse(text)
}

describePostgres('GET /openapi.json on the test broker (--dev, PostgreSQL)', () => {
  let db: TestDatabase
  let b: TestBroker
  let doc: Document
  beforeAll(async () => {
    db = await createTestDatabase()
    b = await startTestBroker({ dev: true, database: db.url })
    doc = await served(b.mandate.app)
  }, 60_000)
  afterAll(async () => {
    await b?.close()
    await db?.drop()
  })

  it('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator()
    const result = await validator.validate(structuredClone(doc))
    expect(result.errors).toBeUndefined()
    expect(result.valid).toBe(true)
    expect(validator.version).toBe('3.1')
    expect(doc.openapi).toBe('3.1.0')
    // The validator is no rubber stamp: a response without its required description fails.
    const broken = structuredClone(doc)
    broken.paths['/oauth2/token']!['post']!.responses['200'] = {}
    expect((await new Validator().validate(broken)).valid).toBe(false)
  })

  it('documents every route the app registered, and nothing else', () => {
    // HEAD is not listed: Hono answers it with the GET route, and app.routes has no HEAD entry to compare.
    expect(documented(doc)).toEqual(registered(b.mandate.app))
    // What this broker has: the dev routes, /admin/audit (a database), the document itself.
    expect(documented(doc)).toEqual(
      expect.arrayContaining(['POST /dev/users/{sub}/token', 'GET /admin/audit', 'GET /admin/audit/chains/{jti}', 'GET /openapi.json']),
    )
  })

  it("names the security schemes, and the errors' headers", () => {
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(['adminKey', 'clientSecretBasic', 'mandateToken'])
    const token = doc.paths['/oauth2/token']!['post']!
    expect(Object.keys(token.responses['401']!.headers ?? {})).toEqual(['WWW-Authenticate'])
    expect(Object.keys(token.responses['429']!.headers ?? {})).toEqual(['Retry-After'])
    expect(Object.keys(token.responses['503']!.headers ?? {})).toEqual(['Retry-After'])
    expect(Object.keys(doc.paths['/admin/revocations']!['post']!.responses['401']!.headers ?? {})).toEqual(['WWW-Authenticate'])
    expect(JSON.stringify(doc['info'])).toContain('listen.admin_port')
  })

  describe("a form's documented fields are the parameters its route reads", () => {
    // Read only to be refused (client_secret_post is not supported); documented as refused in the body's description.
    const refused = ['client_secret']
    // RFC 7662 §2.1, RFC 7009 §2.1: accepted and ignored.
    const ignored = ['token_type_hint']
    const expectSame = (read: string[], fields: string[]) =>
      expect(read.filter((n) => !refused.includes(n))).toEqual(fields.filter((n) => !ignored.includes(n)))

    it('POST /oauth2/token', async () => {
      const form = b.exchangeForm(await b.userToken(), {
        scope: 'read',
        expires_in: '60',
        requested_token_type: TOKEN_TYPE.accessToken,
      })
      // Every client-authentication field is read whichever method is used (two methods at once are refused).
      const { names, status } = await fieldsRead(() => b.token(form, basic('secret-agent', SECRET)))
      expect(status).toBe(200)
      // `auth_req_id` is the CIBA grant's (test/integration/approvals.test.ts) and `assertion` the JWT bearer grant's
      // (test/integration/id-jag.test.ts), which an exchange does not read.
      expectSame(
        names,
        formFields(doc, '/oauth2/token', 'post').filter((n) => n !== 'auth_req_id' && n !== 'assertion'),
      )
    })

    const post = (path: string, form: Record<string, string>, headers: Record<string, string> = {}) =>
      Promise.resolve(
        b.mandate.app.request(path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: encodeForm(form) }),
      )

    it.each(['/oauth2/introspect', '/oauth2/revoke'])('POST %s', async (path) => {
      const issued = (await (await b.token(b.exchangeForm(await b.userToken()), basic('secret-agent', SECRET))).json()) as { access_token: string }
      const { names, status } = await fieldsRead(() => post(path, { token: issued.access_token }, basic('secret-agent', SECRET)))
      expect(status).toBe(200)
      expectSame(names, formFields(doc, path, 'post'))
    })

    it('GET /forward-auth and /forward-auth/ext-authz: the query parameters they read', async () => {
      const issued = (await (await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))).json()) as {
        access_token: string
      }
      for (const [path, method] of [
        ['/forward-auth', 'get'],
        ['/forward-auth/ext-authz', 'post'],
      ] as const) {
        const { names, status } = await fieldsRead(() =>
          Promise.resolve(
            b.mandate.app.request(`${path}?audience=${encodeURIComponent(AUDIENCE)}&scope=read`, {
              method: method.toUpperCase(),
              headers: bearer(issued.access_token),
            }),
          ),
        )
        expect(status).toBe(200)
        const documented = (doc.paths[path]![method]!.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name)
        expect(names).toEqual(documented.sort())
      }
    })

    it('POST /revocations/feed', async () => {
      const form = { client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: await b.rsAssertion() }
      const { names, status } = await fieldsRead(() => post('/revocations/feed', form))
      expect(status).toBe(200)
      expectSame(names, formFields(doc, '/revocations/feed', 'post'))
    })
  })

  describe('answers match the documented bodies', () => {
    const app = () => b.mandate.app

    it('the token endpoint, its refusals, introspection', async () => {
      const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))
      const { access_token } = (await expectBody(res, 200, TokenResponse)) as { access_token: string }
      await expectBody(await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', 'wrong')), 401, OAuthErrorBody.strict())
      await expectBody(await b.token({ grant_type: 'password' }, basic('secret-agent', SECRET)), 400, OAuthErrorBody.strict())
      const introspect = (token: string) =>
        app().request('/oauth2/introspect', {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('secret-agent', SECRET) },
          body: encodeForm({ token }),
        })
      expect(await expectBody(await introspect(access_token), 200, IntrospectionResponse)).toMatchObject({ active: true })
      expect(await expectBody(await introspect('not-a-token'), 200, IntrospectionResponse)).toEqual({ active: false })
    })

    it('forward auth', async () => {
      const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))
      const { access_token } = (await res.json()) as { access_token: string }
      const ask = (query: string, headers: Record<string, string> = {}) => app().request(`/forward-auth${query}`, { headers })
      const aud = `?audience=${encodeURIComponent(AUDIENCE)}`
      const allowed = await ask(aud, bearer(access_token))
      expect(allowed.status).toBe(200)
      const documentedHeaders = Object.keys(doc.paths['/forward-auth']!['get']!.responses['200']!.headers ?? {}).map((h) => h.toLowerCase())
      expect([...allowed.headers.keys()].filter((h) => h.startsWith('x-mandate-') || h === 'cache-control').sort()).toEqual(documentedHeaders.sort())
      await expectBody(await ask(aud), 401, BearerErrorBody)
      await expectBody(await ask(aud, bearer('not.a.token')), 401, BearerErrorBody)
      await expectBody(await ask(`${aud}&scope=admin`, bearer(access_token)), 403, BearerErrorBody)
      await expectBody(await ask(''), 400, OAuthErrorBody.strict())
    })

    it('discovery and health', async () => {
      await expectBody(await app().request('/.well-known/oauth-authorization-server'), 200, AuthorizationServerMetadata)
      await expectBody(await app().request('/.well-known/jwks.json'), 200, JwkSet)
      await expectBody(await app().request('/dev/jwks.json'), 200, JwkSet)
      await expectBody(await app().request('/readyz'), 200, Readiness)
    })

    it('the kill switch', async () => {
      const json = { 'content-type': 'application/json', ...bearer(ADMIN_KEYS.responder) }
      const created = await app().request('/admin/revocations', {
        method: 'POST',
        headers: json,
        body: JSON.stringify({ agent: 'jwt-agent', reason: 'openapi test' }),
      })
      const { id } = (await expectBody(created, 201, RevocationRecord)) as { id: string }
      await expectBody(await app().request('/admin/revocations?limit=5', { headers: bearer(ADMIN_KEYS.auditor) }), 200, RevocationList)
      await expectBody(await app().request(`/admin/revocations/${id}`, { headers: bearer(ADMIN_KEYS.auditor) }), 200, RevocationRecord)
      await expectBody(await app().request(`/admin/revocations/${id}`, { method: 'DELETE', headers: bearer(ADMIN_KEYS.responder) }), 200, RevocationRecord)
      await expectBody(await app().request('/admin/revocations?limit=0', { headers: bearer(ADMIN_KEYS.auditor) }), 400, AdminErrorBody.strict())
      await expectBody(await app().request('/admin/revocations', { headers: bearer('nope') }), 401, AdminErrorBody.strict())
    })
  })
})

describe('GET /openapi.json on a broker without --dev', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker()
  })
  afterAll(() => b?.close())

  it('documents the routes this broker has: no dev routes, no /admin/audit without a database', async () => {
    const doc = await served(b.mandate.app)
    expect(documented(doc)).toEqual(registered(b.mandate.app))
    expect(documented(doc).filter((r) => r.includes('/dev/') || r.includes('/admin/audit'))).toEqual([])
    expect((await new Validator().validate(doc)).valid).toBe(true)
  })
})

/** The delegation log's bodies need real records: the broker composed as `serve --dev` composes it, on PostgreSQL. */
describePostgres("the delegation log's answers match the documented bodies", () => {
  const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
  const KEY = 'auditor-key-0123456789abcdef'
  let db: TestDatabase
  let dir: string
  let m: Mandate
  beforeAll(async () => {
    db = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'mandate-openapi-'))
    await cp(join(root, 'policies/dev'), join(dir, 'policies'), { recursive: true })
    const config = Config.parse({
      issuer: 'https://mandate.test',
      policies_dir: join(dir, 'policies'),
      data_dir: join(dir, 'data'),
      signing: { generate_if_missing: true },
      log: { level: 'silent' },
      storage: { database_url: db.url },
      admin: { keys: [{ name: 'auditor', sha256: createHash('sha256').update(KEY).digest('hex'), roles: ['auditor'] }] },
    })
    m = await composeMandate(config, { dev: true, logger: createLogger('silent'), loadSignals: { eventLoopLag: () => 0 } })
  }, 60_000)
  afterAll(async () => {
    await m?.close()
    await db?.drop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('a page of records and a delegation tree', async () => {
    const user = (await (await m.app.request('/dev/users/alice/token', { method: 'POST', body: '{"scope":"demo:read"}' })).json()) as { access_token: string }
    const exchange = (auth: Record<string, string>, subjectToken: string) =>
      m.app.request('/oauth2/token', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth },
        body: encodeForm({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: subjectToken,
          subject_token_type: TOKEN_TYPE.accessToken,
          audience: 'https://demo.example',
          scope: 'demo:read',
        }),
      })
    const parent = (await expectBody(await exchange(basic('demo-agent', 'demo-secret'), user.access_token), 200, TokenResponse)) as { access_token: string }
    const child = (await expectBody(await exchange(basic('demo-subagent', 'demo-sub-secret'), parent.access_token), 200, TokenResponse)) as {
      access_token: string
    }
    const page = (await expectBody(await m.app.request('/admin/audit?event=token.*', { headers: bearer(KEY) }), 200, AuditPage)) as { records: unknown[] }
    expect(page.records.length).toBeGreaterThanOrEqual(2)
    const jti = (JSON.parse(Buffer.from(child.access_token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti
    const tree = (await expectBody(await m.app.request(`/admin/audit/chains/${jti}`, { headers: bearer(KEY) }), 200, DelegationTree)) as { tokens: number }
    expect(tree.tokens).toBe(2)
    const first = page.records[0] as { id: number }
    expect(await expectBody(await m.app.request(`/admin/audit/records/${first.id}`, { headers: bearer(KEY) }), 200, AuditRecordBody)).toEqual(first)
    const verification = (await expectBody(await m.app.request('/admin/audit/verification', { headers: bearer(KEY) }), 200, AuditVerification)) as {
      chains: unknown[]
    }
    expect(verification.chains.length).toBeGreaterThan(0)
    expect(documented(await served(m.app))).toEqual(registered(m.app))
  })
})
