/**
 * Every route of the broker, OAuth, admin, well-known, health, dev, the
 * approver's pages and the revocation feed, against one table: a method the route does not answer is
 * 405 with an `Allow` header naming exactly the methods it does (HEAD with
 * GET, which Hono serves), and the table is exactly the routes the app
 * registered, so a new route cannot go untested. Composed as `serve --dev`
 * composes it, on PGlite, so that every route (the /admin/audit reads too)
 * exists.
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { CONSOLE_CSS, CONSOLE_JS } from '../../src/http/routes/console/assets.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')

/** Route pattern → the methods it answers. */
const ROUTES: Record<string, readonly string[]> = {
  '/oauth2/token': ['POST'],
  '/oauth2/introspect': ['POST'],
  '/oauth2/revoke': ['POST'],
  '/oauth2/bc-authorize': ['POST'],
  '/admin/revocations': ['GET', 'POST'],
  '/admin/revocations/:id': ['GET', 'DELETE'],
  '/admin/revocations/:id/propagation': ['GET'],
  '/admin/webhooks': ['GET'],
  '/admin/policy/explain': ['POST'],
  '/admin/agents': ['GET'],
  '/admin/agents/:id': ['GET'],
  '/admin/agents/:id/attest': ['POST'],
  '/admin/agents/:id/policy': ['GET'],
  '/admin/audit': ['GET'],
  '/admin/audit/chains/:jti': ['GET'],
  '/admin/audit/requests/:id': ['GET'],
  '/admin/audit/records/:id': ['GET'],
  '/admin/audit/verification': ['GET'],
  '/admin/policy/unused': ['GET'],
  '/admin/approvals': ['GET'],
  '/admin/approvals/:id': ['GET', 'POST'],
  '/approvals/link': ['GET'],
  '/approvals/callback': ['GET'],
  '/approvals/confirm': ['POST'],
  '/revocations/feed': ['GET', 'POST'],
  '/forward-auth': ['GET'],
  // Envoy's ext_authz asks with the client's own method.
  '/forward-auth/ext-authz': ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
  '/.well-known/oauth-authorization-server': ['GET'],
  '/.well-known/jwks.json': ['GET'],
  '/healthz': ['GET'],
  '/readyz': ['GET'],
  '/dev/users/:sub/token': ['POST'],
  '/dev/jwks.json': ['GET'],
  '/openapi.json': ['GET'],
  // The console (on under --dev): HTML pages; its assets' paths carry their content's hash.
  '/console': ['GET'],
  [CONSOLE_CSS.path]: ['GET'],
  [CONSOLE_JS.path]: ['GET'],
  '/console/sign-in': ['GET'],
  '/console/dev/sign-in': ['POST'],
  '/console/sign-out': ['POST'],
  '/console/agents': ['GET'],
  '/console/agents/:id': ['GET'],
  '/console/agents/:id/attest': ['POST'],
  '/console/kill': ['GET', 'POST'],
  '/console/kills': ['GET'],
  '/console/kills/:id': ['GET'],
  '/console/kills/:id/lift': ['GET', 'POST'],
  '/console/approvals': ['GET'],
  '/console/approvals/:id': ['POST'],
  '/console/events': ['GET'],
  '/console/chains': ['GET'],
  '/console/chains/:jti': ['GET'],
  '/console/audit': ['GET'],
  '/console/audit/records/:id': ['GET'],
}
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

/** A concrete path for a route pattern. */
const pathOf = (pattern: string) => pattern.replace(':id', '00000000-0000-4000-8000-000000000000').replace(':jti', 'some-jti').replace(':sub', 'alice')
const allowedAt = (pattern: string) => {
  const methods = ROUTES[pattern]!
  return new Set(methods.includes('GET') ? [...methods, 'HEAD'] : methods)
}

describe('wrong method on any route: 405 with Allow', () => {
  let dir: string
  let m: Mandate
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-methods-'))
    await cp(join(root, 'policies/dev'), join(dir, 'policies'), { recursive: true })
    await writeFile(join(dir, 'idp-secret'), 'not-a-real-secret')
    const config = Config.parse({
      issuer: 'https://mandate.test',
      policies_dir: join(dir, 'policies'),
      data_dir: join(dir, 'data'),
      signing: { generate_if_missing: true },
      log: { level: 'silent' },
      // The approver's pages exist only with a provider to sign in with; it is asked nothing until a link is followed.
      approvals: { sign_in: { issuer: 'https://idp.invalid', client_id: 'mandate', client_secret_file: join(dir, 'idp-secret') } },
    })
    m = await composeMandate(config, { dev: true, logger: createLogger('silent') })
  }, 120_000) // PGlite's first start, on a busy machine
  afterAll(async () => {
    await m?.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('the table is every route the app registered, no more, no less', () => {
    const registered = new Map<string, Set<string>>()
    for (const r of m.app.routes) {
      if (r.method === 'ALL') continue // middleware
      registered.set(r.path, (registered.get(r.path) ?? new Set()).add(r.method))
    }
    expect(Object.fromEntries([...registered].map(([path, methods]) => [path, [...methods].sort()]))).toEqual(
      Object.fromEntries(Object.entries(ROUTES).map(([path, methods]) => [path, [...methods].sort()])),
    )
  })

  const cases = Object.keys(ROUTES).flatMap((pattern) =>
    METHODS.filter((method) => !allowedAt(pattern).has(method)).map((method) => [method, pattern] as const),
  )
  it.each(cases)('%s %s → 405', async (method, pattern) => {
    const res = await m.app.request(pathOf(pattern), { method, ...(method === 'GET' || method === 'HEAD' ? {} : { body: 'x=1' }) })
    expect(res.status).toBe(405)
    expect(new Set((res.headers.get('allow') ?? '').split(/,\s*/))).toEqual(allowedAt(pattern))
    expect(res.headers.get('cache-control')).toBe('no-store')
    if (method !== 'HEAD') expect(await res.json()).toEqual({ error: 'method_not_allowed', error_description: 'method not allowed on this route' })
  })

  it.each(Object.keys(ROUTES).flatMap((pattern) => [...allowedAt(pattern)].map((method) => [method, pattern] as const)))(
    '%s %s is answered by its route (neither 404 nor 405)',
    async (method, pattern) => {
      // No credentials and no body: the route itself refuses (or answers), the router does not.
      const res = await m.app.request(pathOf(pattern), { method })
      expect([404, 405]).not.toContain(res.status)
      await res.body?.cancel()
    },
  )

  it('an unknown path is still 404, without Allow', async () => {
    const res = await m.app.request('/oauth2/authorize', { method: 'POST' })
    expect(res.status).toBe(404)
    expect(res.headers.get('allow')).toBeNull()
    // Rendered like every other error: never cached.
    expect(res.headers.get('cache-control')).toBe('no-store')
    expect(res.headers.get('pragma')).toBe('no-cache')
    expect(await res.json()).toEqual({ error: 'not_found', error_description: 'no such route' })
  })
})
