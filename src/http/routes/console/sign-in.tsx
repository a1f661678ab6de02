/**
 * Signing in to the console, and out. With an OpenID Provider (`console.sign_in`):
 * OpenID Connect Core §3.1 authorization code flow with RFC 7636 PKCE S256
 * (approvals/sign-in.ts, oauth4webapi), the state, nonce and verifier kept in
 * a sealed cookie between the redirects; the person's roles come from the
 * config (`console.roles`) by their verified email and groups. Under
 * `--dev`: one button per dev person, no provider.
 */
import type { Context } from 'hono'
import { getCookie, setCookie, deleteCookie } from 'hono/cookie'
import { z } from 'zod'
import { createSealer, InvalidLink } from '../../../approvals/link.js'
import type { ApprovalSignIn } from '../../../approvals/sign-in.js'
import { rolesOf, type ConsolePerson, type ConsoleRoleMembers } from '../../../console/roles.js'
import { describeCause } from '../../../core/errors.js'
import type { AppEnv } from '../../env.js'
import { clearSessionCookie, csrfMatches, setSessionCookie } from '../../console-auth.js'
import { message, render } from './layout.js'
import type { ConsolePages } from './pages.js'

/** How people sign in: the dev people with one click, or an OpenID Provider. */
export type ConsoleSignIn =
  | { readonly kind: 'dev'; readonly people: readonly ConsolePerson[] }
  | { readonly kind: 'oidc'; readonly provider: ApprovalSignIn; readonly issuer: string; readonly roles: ConsoleRoleMembers }

const FLOW_COOKIE = 'mandate_console_sign_in'
/** Seconds a person has to come back from the provider. */
const FLOW_TTL = 600
const FlowCookie = z.object({ state: z.string(), nonce: z.string(), verifier: z.string(), next: z.string() })
const CallbackQuery = z.object({ state: z.string().min(1).max(512) })

/** Where to go after sign-in: a console path only (never another origin: `//host`, `/\host`). */
export function safeNext(next: string | undefined): string {
  return next !== undefined && /^\/console\/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,1024}$/.test(next) && !next.startsWith('/console//') ? next : '/console/agents'
}

export function mountSignIn({ app, deps }: ConsolePages): void {
  const log = deps.logger.child({ module: 'console' })
  const flowSealer = createSealer(deps.keys, 'console-sign-in', deps.now)
  const flowCookieOptions = { httpOnly: true, sameSite: 'Lax', secure: deps.cookie.secure, path: '/console' } as const

  const signedIn = async (c: Context<AppEnv>, person: ConsolePerson, next: string) => {
    const { cookie, session } = await deps.sessions.start(person)
    setSessionCookie(c, deps.cookie, cookie, deps.sessions.idleSeconds)
    log.info({ person: person.label, iss: person.iss, sub: person.sub, roles: session.roles }, 'console sign-in')
    return c.redirect(safeNext(next), 303)
  }

  app.get('/console/sign-in', async function consoleSignInPage(c) {
    const next = safeNext(c.req.query('next'))
    const signIn = deps.signIn
    return render(
      c,
      { title: 'Sign in' },
      <div class="signin">
        <h1>Sign in to the Mandate console</h1>
        {signIn.kind === 'dev' ? (
          <>
            <p class="notice warn">Dev mode: these people of the dev issuer sign in with one click. Never run --dev in production.</p>
            <ul>
              {signIn.people.map((p) => (
                <li>
                  <form method="post" action="/console/dev/sign-in">
                    <input type="hidden" name="next" value={next} />
                    <button type="submit" name="person" value={p.sub}>
                      {`Sign in as ${p.sub} (${p.roles.join(', ')})`}
                    </button>
                  </form>
                </li>
              ))}
            </ul>
          </>
        ) : (
          <form method="get" action="/console/login">
            <input type="hidden" name="next" value={next} />
            <p>Sign in with your organisation’s identity provider ({signIn.issuer}).</p>
            <button type="submit" class="primary">
              Sign in
            </button>
          </form>
        )}
      </div>,
    )
  })

  const signIn = deps.signIn
  if (signIn.kind === 'dev') {
    const DevForm = z.strictObject({ person: z.string().max(64), next: z.string().max(1100).optional() })
    app.post('/console/dev/sign-in', async function consoleDevSignIn(c) {
      // Login CSRF: another site must not sign a browser in as someone else.
      if (c.req.header('sec-fetch-site') === 'cross-site') return message(c, 403, 'Not accepted', 'Sign in from the console’s own page.')
      const form = DevForm.safeParse(Object.fromEntries(new URLSearchParams((await c.req.text()).slice(0, 4096))))
      const person = form.success ? signIn.people.find((p) => p.sub === form.data.person) : undefined
      if (person === undefined) return message(c, 400, 'Unknown person', 'There is no such dev person.')
      return signedIn(c, person, form.data?.next ?? '')
    })
  } else {
    app.get('/console/login', async function consoleLogin(c) {
      let started: Awaited<ReturnType<ApprovalSignIn['start']>>
      try {
        started = await signIn.provider.start()
      } catch (err) {
        log.warn({ cause: describeCause(err) }, 'console sign-in: provider unavailable')
        return message(c, 503, 'Try again later', 'The identity provider cannot be reached right now.')
      }
      const sealed = await flowSealer.seal({ ...started.state, next: safeNext(c.req.query('next')) }, FLOW_TTL)
      setCookie(c, FLOW_COOKIE, sealed, { ...flowCookieOptions, maxAge: FLOW_TTL })
      c.header('Cache-Control', 'no-store')
      return c.redirect(started.url.href, 302)
    })

    app.get('/console/callback', async function consoleCallback(c) {
      let flow: z.infer<typeof FlowCookie> | undefined
      try {
        const value = getCookie(c, FLOW_COOKIE)
        const parsed = value === undefined ? undefined : FlowCookie.safeParse(await flowSealer.open(value))
        flow = parsed?.success === true ? parsed.data : undefined
      } catch (err) {
        if (!(err instanceof InvalidLink)) throw err
      }
      const q = CallbackQuery.safeParse(c.req.query())
      if (flow === undefined || !q.success || q.data.state !== flow.state) {
        return message(c, 400, 'Sign-in failed', 'No sign-in is under way here, or it took too long. Sign in again.')
      }
      deleteCookie(c, FLOW_COOKIE, flowCookieOptions)
      let who: Awaited<ReturnType<ApprovalSignIn['finish']>>
      try {
        who = await signIn.provider.finish(new URL(c.req.url), flow)
      } catch (err) {
        log.warn({ cause: describeCause(err) }, 'console sign-in failed')
        return message(c, 400, 'Sign-in failed', 'The sign-in did not complete. Sign in again.')
      }
      const roles = rolesOf(signIn.roles, who)
      if (roles.length === 0 || who.iss === undefined || who.sub === undefined) {
        log.warn({ person: who.label }, 'console sign-in refused: no console role')
        return message(c, 403, 'No access', 'You signed in, but no console role is given to you. Ask an administrator (console.roles).')
      }
      return signedIn(c, { ...who, iss: who.iss, sub: who.sub, roles }, flow.next)
    })
  }

  app.post('/console/sign-out', async function consoleSignOut(c) {
    const session = c.get('consoleSession')
    const csrf = new URLSearchParams((await c.req.text()).slice(0, 4096)).get('csrf') ?? undefined
    if (session !== undefined && !csrfMatches(session, csrf)) return message(c, 403, 'Not accepted', 'This form does not belong to your session.')
    clearSessionCookie(c, deps.cookie)
    if (session !== undefined) log.info({ person: session.label }, 'console sign-out')
    return c.redirect('/console/sign-in', 303)
  })
}
