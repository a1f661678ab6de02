/**
 * The responder console at /console: server-rendered pages that read and act
 * through the admin API (api.ts) as the signed-in person. Every page but the
 * sign-in ones needs a session; each page renews it (idle timeout).
 */
import type { Hono, MiddlewareHandler } from 'hono'
import { getCookie } from 'hono/cookie'
import type { AppEnv } from '../../env.js'
import { consolePrincipal } from '../../admin-auth.js'
import { setSessionCookie } from '../../console-auth.js'
import { mountAgent } from './agent.js'
import { mountAgentList } from './agents.js'
import { mountApprovalQueue } from './approvals.js'
import { mountConsoleEvents } from './events.js'
import { mountAudit } from './audit.js'
import { mountChains } from './chains.js'
import { CONSOLE_CSS, CONSOLE_JS } from './assets.js'
import { mountKill } from './kill.js'
import { mountKills } from './kills.js'
import { message } from './layout.js'
import type { ConsoleDeps, ConsolePages } from './pages.js'
import { mountSignIn } from './sign-in.js'

export type { ConsoleDeps } from './pages.js'

/** Pages a person may see signed out. */
const PUBLIC = /^\/console\/(sign-in|login|callback|dev\/sign-in|sign-out|assets\/.*)$/

/** Whether a console route answers this method here: a wrong method is the router's 405, signed in or not. */
function routeExists(app: Hono<AppEnv>, method: string, path: string): boolean {
  const m = method === 'HEAD' ? 'GET' : method
  return app.router.match(m, path)[0].some(([[, route]]) => route.method === m)
}

export function mountConsole(app: Hono<AppEnv>, deps: ConsoleDeps): void {
  for (const asset of [CONSOLE_CSS, CONSOLE_JS]) {
    app.get(asset.path, (c) =>
      c.body(asset.body, 200, { 'Content-Type': asset.type, 'Cache-Control': 'public, max-age=31536000, immutable', 'X-Content-Type-Options': 'nosniff' }),
    )
  }

  const session: MiddlewareHandler<AppEnv> = async function consoleSession(c, next) {
    const opened = await deps.sessions.open(getCookie(c, deps.cookie.name))
    if (opened !== undefined) {
      c.set('consoleSession', opened)
      // The request's log line names the person, as the admin API's lines do.
      c.set('adminKey', consolePrincipal(opened).name)
      const renewed = await deps.sessions.renew(opened)
      if (renewed !== undefined) setSessionCookie(c, deps.cookie, renewed, deps.sessions.idleSeconds)
    } else if (!PUBLIC.test(c.req.path) && routeExists(app, c.req.method, c.req.path)) {
      if (c.req.method === 'GET' || c.req.method === 'HEAD') {
        const url = new URL(c.req.url)
        return c.redirect(`/console/sign-in?next=${encodeURIComponent(url.pathname + url.search)}`, 302)
      }
      return message(c, 403, 'Signed out', 'Your session has ended, so nothing was done. Sign in again.')
    }
    await next()
  }
  app.use('/console/*', session)
  app.get('/console', (c) => c.redirect('/console/agents', 302))

  const pages: ConsolePages = { app, deps }
  mountSignIn(pages)
  mountAgentList(pages)
  mountAgent(pages)
  mountKill(pages)
  mountKills(pages)
  mountApprovalQueue(pages)
  mountConsoleEvents(pages)
  mountChains(pages)
  mountAudit(pages)
}
