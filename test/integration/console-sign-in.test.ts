/**
 * Signing in to the console with a real OpenID Provider (oidc-provider,
 * authorization code + PKCE), headlessly as a browser would, and the
 * session that follows as a credential of the admin API: roles from the
 * config by email and group, the CSRF token on every change, another site
 * refused, a tampered or expired cookie worth nothing, an owner attesting
 * only what they own. The broker is composed as `mandate serve` composes it
 * (PGlite), served on a port.
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { serve, type ServerType } from '@hono/node-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { composeMandate, type Mandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/telemetry/log.js'
import { captureLogs } from '../support/log-sink.js'
import { CookieJar, startUpstreamIdp, type UpstreamIdp } from '../support/oidc-provider.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '../..')
const CLIENT_ID = 'mandate-console'
const CLIENT_SECRET = 'mandate-console-secret-0123456789abcdef'
const COOKIE = 'mandate_console'
const IDLE = 900

describe('console sign-in with an OpenID Provider, and its session at the admin API', () => {
  let dir: string
  let server: ServerType
  let broker: string
  let idp: UpstreamIdp
  let m: Mandate
  let offset = 0
  const logs: string[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-console-'))
    let app: Mandate['app'] | undefined
    server = serve({ fetch: (req, env) => (app === undefined ? new Response(null, { status: 503 }) : app.fetch(req, env)), hostname: '127.0.0.1', port: 0 })
    await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())))
    broker = `http://localhost:${(server.address() as AddressInfo).port}`
    idp = await startUpstreamIdp({
      resourceServers: { [broker]: broker },
      scope: 'demo:read',
      clients: [{ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, redirect_uris: [`${broker}/console/callback`] }],
      claims: (sub) =>
        sub === 'typist'
          ? // Typed the responder's address in; the provider never verified it.
            { email: 'rachel@example.com', email_verified: false }
          : {
              email: `${sub}@example.com`,
              email_verified: true,
              groups: sub === 'rachel' ? ['sec-oncall'] : sub === 'pat' ? ['platform-team@example.com'] : [],
            },
    })
    const policies = join(dir, 'policies')
    await cp(join(root, 'policies/dev'), policies, { recursive: true })
    const secretFile = join(dir, 'console-client-secret')
    await writeFile(secretFile, `${CLIENT_SECRET}\n`, { mode: 0o600 })
    const config = Config.parse({
      issuer: broker,
      policies_dir: policies,
      data_dir: join(dir, 'data'),
      signing: { generate_if_missing: true },
      console: {
        sign_in: { issuer: idp.issuer, client_id: CLIENT_ID, client_secret_file: secretFile, groups_scope: 'groups' },
        roles: { responder: ['group:sec-oncall'], viewer: ['vic@example.com'], owner: ['group:platform-team@example.com'] },
        idle_timeout_seconds: IDLE,
        max_session_seconds: 3600,
      },
      log: { level: 'warn' },
    })
    m = await composeMandate(config, { dev: false, logger: createLogger('info', captureLogs('console broker', logs).stream), clock: () => Date.now() + offset })
    app = m.app
  }, 120_000)

  afterAll(async () => {
    if (server !== undefined) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      ;(server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
      await closed
    }
    await idp?.stop()
    await m?.close().catch(() => {})
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  /** Signs `login` in from the console's own link, as a browser: the page it lands on and its cookies. */
  const signIn = async (login: string) => {
    const jar = new CookieJar()
    const page = await idp.browse(`${broker}/console/login?next=${encodeURIComponent('/console/agents?q=demo')}`, login, jar)
    return { page, jar, csrf: /name="csrf-token" content="([^"]+)"/.exec(page.html)?.[1] }
  }
  const revoke = (jar: CookieJar, headers: Record<string, string>, body: object) =>
    fetch(`${broker}/admin/revocations`, {
      method: 'POST',
      headers: { cookie: jar.header(), 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    })

  it('signs a responder in through the provider (code + PKCE) onto the page asked for, with an HttpOnly SameSite=Lax cookie', async () => {
    const jar = new CookieJar()
    const login = await fetch(`${broker}/console/login`, { redirect: 'manual' })
    expect(login.status).toBe(302)
    const authorize = new URL(login.headers.get('location')!)
    expect(authorize.origin).toBe(idp.issuer)
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256')
    expect(authorize.searchParams.get('redirect_uri')).toBe(`${broker}/console/callback`)
    const { page, jar: signedIn, csrf } = await signIn('rachel')
    expect(page.status).toBe(200)
    expect(page.url).toBe(`${broker}/console/agents?q=demo`)
    expect(page.html).toContain('rachel@example.com · responder')
    expect(page.html).toContain('demo-agent')
    expect(csrf).toBeDefined()
    expect(signedIn.get(COOKIE)).toBeDefined()
    expect(jar.get(COOKIE)).toBeUndefined()
    // The cookie's attributes, as a fresh sign-in sets them.
    const again = await signIn('rachel')
    const res = await fetch(`${broker}/console/agents`, { headers: { cookie: again.jar.header() } })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'")
    expect(res.headers.get('content-security-policy')).not.toContain('unsafe-inline')
    expect(res.headers.get('x-frame-options')).toBe('DENY')
  })

  it('sets the session cookie HttpOnly, SameSite=Lax, with the idle timeout as its Max-Age (not Secure on http)', async () => {
    // A page renews a session once it is a minute old, with the attributes sign-in set it with.
    const { jar: signed } = await signIn('rachel')
    offset += 61_000
    try {
      const res = await fetch(`${broker}/console/agents`, { headers: { cookie: signed.header() } })
      const cookie = res.headers.getSetCookie().find((c) => c.startsWith(`${COOKIE}=`))
      expect(cookie).toBeDefined()
      expect(cookie).toMatch(/; HttpOnly/i)
      expect(cookie).toMatch(/; SameSite=Lax/i)
      expect(cookie).toMatch(new RegExp(`; Max-Age=${IDLE}`))
      expect(cookie).toMatch(/; Path=\//)
      expect(cookie).not.toMatch(/; Secure/i)
    } finally {
      offset -= 61_000
    }
  })

  it('refuses a person the config gives no role, and one whose email the provider did not verify', async () => {
    for (const login of ['nobody', 'typist']) {
      const { page, jar } = await signIn(login)
      expect(page.status, login).toBe(403)
      expect(page.html).toContain('no console role is given to you')
      expect(jar.get(COOKIE)).toBeUndefined()
    }
  })

  it('a responder kills through the admin API with the session and its CSRF token; without the token, or from another site, nothing happens', async () => {
    const { jar, csrf } = await signIn('rachel')
    const body = { agent: 'demo-subagent', reason: 'console sign-in test' }
    const before = await m.app.request('/admin/revocations', { headers: { cookie: jar.header() } })
    const count = ((await before.json()) as { revocations: unknown[] }).revocations.length

    const noToken = await revoke(jar, {}, body)
    expect(noToken.status).toBe(403)
    expect(((await noToken.json()) as { error_description: string }).error_description).toContain('CSRF')
    const wrongToken = await revoke(jar, { 'x-csrf-token': 'A'.repeat(43) }, body)
    expect(wrongToken.status).toBe(403)
    const crossSite = await revoke(jar, { 'x-csrf-token': csrf!, 'sec-fetch-site': 'cross-site' }, body)
    expect(crossSite.status).toBe(403)
    const list = await m.app.request('/admin/revocations', { headers: { cookie: jar.header() } })
    expect(((await list.json()) as { revocations: unknown[] }).revocations).toHaveLength(count)

    const done = await revoke(jar, { 'x-csrf-token': csrf! }, body)
    expect(done.status, await done.clone().text()).toBe(201)
    const kill = (await done.json()) as { id: string; created_by: string }
    expect(kill.created_by).toBe('console:rachel@example.com')
    const lifted = await fetch(`${broker}/admin/revocations/${kill.id}`, { method: 'DELETE', headers: { cookie: jar.header(), 'x-csrf-token': csrf! } })
    expect(lifted.status).toBe(200)
    expect(((await lifted.json()) as { lifted_by: string }).lifted_by).toBe('console:rachel@example.com')
  })

  it('a viewer reads but may not kill; a session from one person is no token for another (tampered cookie)', async () => {
    const { page, jar, csrf } = await signIn('vic')
    expect(page.status).toBe(200)
    expect(page.html).toContain('vic@example.com · viewer')
    const refused = await revoke(jar, { 'x-csrf-token': csrf! }, { agent: 'demo-agent', reason: 'viewer tries' })
    expect(refused.status).toBe(403)
    expect(((await refused.json()) as { error_description: string }).error_description).toBe('your console role may not revoke')

    const value = jar.get(COOKIE)!
    const tampered = `${value.slice(0, -6)}${value.slice(-6) === 'AAAAAA' ? 'BBBBBB' : 'AAAAAA'}`
    const read = await fetch(`${broker}/admin/revocations`, { headers: { cookie: `${COOKIE}=${tampered}` } })
    expect(read.status).toBe(401)
    const pageRes = await fetch(`${broker}/console/agents`, { redirect: 'manual', headers: { cookie: `${COOKIE}=${tampered}` } })
    expect(pageRes.status).toBe(302)
    expect(pageRes.headers.get('location')).toBe('/console/sign-in?next=%2Fconsole%2Fagents')
  })

  it('ends a session left idle past the idle timeout, and one past the absolute limit even when kept busy', async () => {
    const { jar } = await signIn('vic')
    offset += (IDLE + 1) * 1000
    try {
      const res = await fetch(`${broker}/admin/revocations`, { headers: { cookie: jar.header() } })
      expect(res.status).toBe(401)
    } finally {
      offset -= (IDLE + 1) * 1000
    }
    // Busy: renewed every 10 minutes for an hour and more; the session still ends at max_session_seconds (3600).
    const busy = (await signIn('vic')).jar
    const start = offset
    try {
      let status = 200
      for (let t = 600; t <= 3600 && status === 200; t += 600) {
        offset = start + t * 1000
        const res = await fetch(`${broker}/console/agents`, { redirect: 'manual', headers: { cookie: busy.header() } })
        busy.store(res)
        status = res.status
        if (t < 3600) expect(status, `at ${t} s`).toBe(200)
      }
      expect(status).toBe(302)
    } finally {
      offset = start
    }
  })

  it('lets an owner attest the agents they own and no other; signs out with the CSRF token only', async () => {
    const { page, jar, csrf } = await signIn('pat')
    expect(page.html).toContain('pat@example.com · owner')
    const attest = (agent: string) =>
      fetch(`${broker}/admin/agents/${agent}/attest`, {
        method: 'POST',
        headers: { cookie: jar.header(), 'x-csrf-token': csrf!, 'content-type': 'application/json' },
        body: '{}',
      })
    const own = await attest('demo-agent')
    expect(own.status, await own.clone().text()).toBe(200)
    expect(((await own.json()) as { by: string }).by).toBe('console:pat@example.com')
    const rachel = await signIn('rachel')
    const notOwner = await fetch(`${broker}/admin/agents/demo-agent/attest`, {
      method: 'POST',
      headers: { cookie: rachel.jar.header(), 'x-csrf-token': rachel.csrf!, 'content-type': 'application/json' },
      body: '{}',
    })
    expect(notOwner.status).toBe(403)

    const noCsrf = await fetch(`${broker}/console/sign-out`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
    })
    expect(noCsrf.status).toBe(403)
    const out = await fetch(`${broker}/console/sign-out`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
      body: `csrf=${csrf!}`,
    })
    expect(out.status).toBe(303)
    expect(out.headers.getSetCookie().some((c) => c.startsWith(`${COOKIE}=;`) && /Max-Age=0/i.test(c))).toBe(true)
  })

  it('logs sign-ins by person, never the cookie', () => {
    const lines = logs.join('\n')
    expect(lines).toContain('console sign-in')
    expect(lines).not.toMatch(/mandate_console=/)
  })
})

describe('console configuration', () => {
  it('is off in production without an OpenID Provider, and refused when asked for without one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mandate-console-off-'))
    try {
      const base = {
        issuer: 'http://localhost:1',
        policies_dir: join(root, 'policies/dev'),
        data_dir: join(dir, 'data'),
        signing: { generate_if_missing: true },
      }
      const off = await composeMandate(Config.parse(base), { dev: false, logger: createLogger('silent') })
      try {
        const res = await off.app.request('/console/agents')
        expect(res.status).toBe(404)
      } finally {
        await off.close()
      }
      await expect(composeMandate(Config.parse({ ...base, console: { enabled: true } }), { dev: false, logger: createLogger('silent') })).rejects.toThrow(
        /console needs console.sign_in/,
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
