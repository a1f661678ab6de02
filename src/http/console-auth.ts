/**
 * The console's session cookie as a credential of the admin API: a request
 * without `Authorization` that carries a console session is that person's
 * (http/admin-auth.ts gives it their roles' permissions). A cookie rides on
 * any request the browser sends, forged ones included, so every request
 * that may change state must also carry the session's CSRF token, in
 * `X-CSRF-Token`, which another site cannot read nor set (the synchronizer
 * token pattern); and a request the browser says came from another site is
 * refused outright.
 */
import { timingSafeEqual } from 'node:crypto'
import type { Context, MiddlewareHandler } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import type { ConsoleSession, ConsoleSessions } from '../console/session.js'
import type { AppEnv } from './env.js'
import { AdminError } from './oauth-errors.js'

/** RFC 9110 §9.2.1: the methods that change nothing. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

export const CSRF_HEADER = 'x-csrf-token'

export interface ConsoleCookie {
  /** `__Host-` (RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain) over https; a plain name on http (dev, loopback). */
  readonly name: string
  readonly secure: boolean
}

export function consoleCookieOf(issuer: string): ConsoleCookie {
  const secure = issuer.startsWith('https:')
  return { name: secure ? '__Host-mandate_console' : 'mandate_console', secure }
}

const sameText = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b))

/** Whether `presented` is the session's CSRF token. */
export function csrfMatches(session: ConsoleSession, presented: string | undefined): boolean {
  return presented !== undefined && sameText(presented, session.csrf)
}

/** Sets (or renews) the session cookie: HttpOnly, SameSite=Lax, Secure outside http. */
export function setSessionCookie(c: Context, cookie: ConsoleCookie, value: string, maxAge: number): void {
  setCookie(c, cookie.name, value, { httpOnly: true, sameSite: 'Lax', secure: cookie.secure, path: '/', maxAge })
}

export function clearSessionCookie(c: Context, cookie: ConsoleCookie): void {
  deleteCookie(c, cookie.name, { httpOnly: true, sameSite: 'Lax', secure: cookie.secure, path: '/' })
}

/**
 * For `/admin/*`: opens the console session of a request without
 * `Authorization`, refusing (403) a state-changing one without its CSRF token
 * or from another site. A request with no cookie, or one that opens no
 * session, goes on unauthenticated: requireAdmin answers it.
 */
export function consoleSessionAuth(sessions: ConsoleSessions, cookie: ConsoleCookie): MiddlewareHandler<AppEnv> {
  return async function consoleSession(c, next) {
    if (c.req.header('authorization') === undefined) {
      const session = await sessions.open(getCookie(c, cookie.name))
      if (session !== undefined) {
        if (c.req.header('sec-fetch-site') === 'cross-site') throw new AdminError('forbidden', 'a console session is not accepted from another site')
        if (!SAFE_METHODS.has(c.req.method) && !csrfMatches(session, c.req.header(CSRF_HEADER))) {
          throw new AdminError('forbidden', 'a console request that changes state must carry its CSRF token in X-CSRF-Token')
        }
        c.set('consoleSession', session)
      }
    }
    await next()
  }
}
