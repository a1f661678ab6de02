/**
 * The approver's pages (human approval, OpenID CIBA): a signed one-time link
 * (approvals/link.ts) → sign-in with the upstream OpenID Provider
 * (approvals/sign-in.ts, code + PKCE) → a confirm page → the decision, made
 * by decideApproval as for the admin API. State between the redirects lives
 * in sealed cookies; the link's `jti` is spent once, at the decision.
 */
import { timingSafeEqual, randomBytes } from 'node:crypto'
import type { Context, Hono } from 'hono'
import { deleteCookie, getCookie, setCookie } from 'hono/cookie'
import { html } from 'hono/html'
import type { HtmlEscapedString } from 'hono/utils/html'
import { describeRoute } from 'hono-openapi'
import { z } from 'zod'
import { isEntitled, parseApprovers, type Approver } from '../../core/approval.js'
import type { AgentId } from '../../core/claims.js'
import { describeCause } from '../../core/errors.js'
import { decideApproval, type DecideDeps } from '../../approvals/decide.js'
import { createSealer, InvalidLink, type ApprovalLinks } from '../../approvals/link.js'
import type { ApprovalRow } from '../../approvals/port.js'
import type { ApprovalSignIn, SignInState } from '../../approvals/sign-in.js'
import type { SigningKeys } from '../../tokens/keys.js'
import type { Logger } from '../../telemetry/log.js'
import type { Refusals } from '../../telemetry/refusal-log.js'
import type { AppEnv } from '../env.js'
import { parametersOf } from '../openapi.js'

export interface ApprovalPagesDeps extends DecideDeps {
  /** Mandate's public URL: `https` there makes the cookies `Secure`. */
  readonly issuer: string
  readonly keys: SigningKeys
  readonly links: ApprovalLinks
  readonly signIn: ApprovalSignIn
  readonly logger: Logger
  /** Outages are counted there, a line per interval, never a line per page. */
  readonly refusals: Refusals
  readonly maxBodyBytes: number
}

const LINK_COOKIE = 'mandate_approval_link'
const SESSION_COOKIE = 'mandate_approval_session'
/** Seconds a person has to sign in, and then to confirm. */
const SIGN_IN_TTL = 600
const CONFIRM_TTL = 600

// Every page: never cached, never framed (clickjacking of the approve button), no script, forms only to this origin; the
// link's token is in the page's URL, so no Referer leaves it (not even to the provider the 302 goes to).
const PAGE_HEADERS = {
  'Cache-Control': 'no-store',
  Pragma: 'no-cache',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
} as const

const LinkQuery = z.object({ t: z.string().min(1).max(4096) })
const CallbackQuery = z.object({ state: z.string().min(1).max(512) })
const ConfirmForm = z.strictObject({
  approval: z.string().min(1).max(128),
  csrf: z.string().min(1).max(128),
  decision: z.enum(['approve', 'deny']),
})

const LinkCookie = z.object({ approval: z.string(), jti: z.string(), state: z.string(), nonce: z.string(), verifier: z.string() })
const SessionCookie = z.object({
  approval: z.string(),
  jti: z.string(),
  csrf: z.string(),
  approver: z.object({ iss: z.string(), sub: z.string(), names: z.array(z.string()), groups: z.array(z.string()), label: z.string() }),
})

const htmlPage = { 'text/html': { schema: { type: 'string' as const } } }
const linkDoc = describeRoute({
  tags: ['Approvals'],
  operationId: 'openApprovalLink',
  summary: 'Follow an approval link: on to sign-in with the OpenID Provider',
  description: 'A signed one-time link (`typ: mandate-approval-link+jwt`) from the approval notification. Sets a sealed sign-in cookie.',
  parameters: parametersOf('query', LinkQuery),
  responses: {
    302: { description: 'To the provider’s authorization endpoint (code, PKCE S256).' },
    400: { description: 'Not a valid or unexpired link.', content: htmlPage },
    404: { description: 'No such request.', content: htmlPage },
    409: { description: 'The request is no longer pending.', content: htmlPage },
    503: { description: 'The provider or the store is unavailable.', content: htmlPage },
  },
})
const callbackDoc = describeRoute({
  tags: ['Approvals'],
  operationId: 'approvalSignInCallback',
  summary: 'The provider’s redirect back: the confirm page',
  description: 'The code exchanged, the ID token validated; the person must be one the grant names (else 403, logged).',
  responses: {
    200: { description: 'What is asked, and approve and deny buttons.', content: htmlPage },
    400: { description: 'No sign-in under way, or it failed.', content: htmlPage },
    403: { description: 'Not an approver of this request.', content: htmlPage },
    409: { description: 'The request is no longer pending.', content: htmlPage },
    503: { description: 'The provider or the store is unavailable.', content: htmlPage },
  },
})
const confirmDoc = describeRoute({
  tags: ['Approvals'],
  operationId: 'confirmApproval',
  summary: 'Approve or deny, as the person signed in',
  responses: {
    200: { description: 'Decided.', content: htmlPage },
    400: { description: 'No confirm session, or a malformed form.', content: htmlPage },
    403: { description: 'CSRF token wrong, or not an approver.', content: htmlPage },
    409: { description: 'The link was used already, or the request is no longer pending.', content: htmlPage },
    503: { description: 'The store is unavailable.', content: htmlPage },
  },
})

function page(c: Context<AppEnv>, status: 200 | 400 | 403 | 404 | 409 | 503, title: string, body: HtmlEscapedString | Promise<HtmlEscapedString> | string) {
  const doc = html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title} · Mandate</title>
        <style>
          body {
            font:
              16px/1.5 system-ui,
              sans-serif;
            max-width: 40rem;
            margin: 2rem auto;
            padding: 0 1rem;
          }
          .binding {
            font-size: 1.5rem;
            font-weight: bold;
            border: 2px solid #333;
            padding: 0.5rem 1rem;
          }
          pre {
            background: #f4f4f4;
            padding: 0.5rem;
            overflow-x: auto;
          }
          button {
            font-size: 1rem;
            padding: 0.5rem 1.5rem;
            margin-right: 1rem;
          }
        </style>
      </head>
      <body>
        <h1>${title}</h1>
        ${body}
      </body>
    </html>`
  return c.html(doc, status, PAGE_HEADERS)
}

const message = (c: Context<AppEnv>, status: 400 | 403 | 404 | 409 | 503, title: string, text: string) => page(c, status, title, html`<p>${text}</p>`)

/** Why a request that is not pending cannot be decided, in words. */
function notPending(c: Context<AppEnv>, row: ApprovalRow, now: number) {
  const status = row.status === 'pending' && row.expiresAt <= now ? 'expired' : row.status
  const said = status === 'issued' ? 'approved (and its token issued)' : status
  return message(c, 409, 'Already settled', `This request is ${said}; there is nothing left to decide.`)
}

const sameText = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b))

export function mountApprovalPages(app: Hono<AppEnv>, deps: ApprovalPagesDeps): void {
  // Long, not split: the three steps of one flow, each reading the cookie the one before it set.
  const log = deps.logger.child({ module: 'approval-pages' })
  const linkCookie = createSealer(deps.keys, 'approval-link', deps.now)
  const sessionCookie = createSealer(deps.keys, 'approval-session', deps.now)
  const cookieOptions = { httpOnly: true, sameSite: 'Lax', secure: deps.issuer.startsWith('https:'), path: '/approvals' } as const
  const unavailable = (c: Context<AppEnv>, err: unknown, what: string) => {
    deps.refusals.unavailable.count(`approval page: ${what} unavailable`)
    log.debug({ error: 'temporarily_unavailable', cause: describeCause(err) }, `approval page: ${what} unavailable`)
    return message(c, 503, 'Try again later', `The ${what} is unavailable right now; follow the link again in a moment.`)
  }
  const opened = async <T>(sealer: typeof linkCookie, schema: z.ZodType<T>, value: string | undefined): Promise<T | undefined> => {
    if (value === undefined) return undefined
    try {
      const claims = schema.safeParse(await sealer.open(value))
      return claims.success ? claims.data : undefined
    } catch (err) {
      if (err instanceof InvalidLink) return undefined
      throw err
    }
  }

  app.get('/approvals/link', linkDoc, async function approvalLink(c) {
    const q = LinkQuery.safeParse(c.req.query())
    if (!q.success) return message(c, 400, 'Not a valid link', 'This approval link is incomplete. Open it again from the notification.')
    let link: { approval: string; jti: string }
    try {
      link = await deps.links.verify(q.data.t)
    } catch (err) {
      if (!(err instanceof InvalidLink)) throw err
      const expired = err.message === 'ERR_JWT_EXPIRED'
      return message(
        c,
        400,
        expired ? 'Link expired' : 'Not a valid link',
        expired ? 'The request this link was for has expired.' : 'This approval link is not valid.',
      )
    }
    let row: ApprovalRow | undefined
    try {
      row = await deps.approvals.get(link.approval)
    } catch (err) {
      return unavailable(c, err, 'approvals store')
    }
    if (row === undefined) return message(c, 404, 'Unknown request', 'There is no such approval request.')
    if (row.status !== 'pending' || row.expiresAt <= deps.now()) return notPending(c, row, deps.now())
    let started: Awaited<ReturnType<ApprovalSignIn['start']>>
    try {
      started = await deps.signIn.start()
    } catch (err) {
      return unavailable(c, err, 'sign-in provider')
    }
    const sealed = await linkCookie.seal({ ...link, ...started.state }, SIGN_IN_TTL)
    setCookie(c, LINK_COOKIE, sealed, { ...cookieOptions, maxAge: SIGN_IN_TTL })
    for (const [name, value] of Object.entries(PAGE_HEADERS)) c.header(name, value)
    return c.redirect(started.url.href, 302)
  })

  app.get('/approvals/callback', callbackDoc, async function approvalCallback(c) {
    const cookie = await opened(linkCookie, LinkCookie, getCookie(c, LINK_COOKIE))
    if (cookie === undefined) return message(c, 400, 'Sign-in not under way', 'No sign-in is under way here, or it took too long. Open the link again.')
    const q = CallbackQuery.safeParse(c.req.query())
    if (!q.success || !sameText(q.data.state, cookie.state))
      return message(c, 400, 'Sign-in failed', 'This sign-in answer is not the one expected. Open the link again.')
    const state: SignInState = { state: cookie.state, nonce: cookie.nonce, verifier: cookie.verifier }
    let approver: Approver
    try {
      approver = await deps.signIn.finish(new URL(c.req.url), state)
    } catch (err) {
      log.warn({ approval: cookie.approval, cause: describeCause(err) }, 'approval sign-in failed')
      return message(c, 400, 'Sign-in failed', 'The sign-in did not complete. Open the link again.')
    }
    deleteCookie(c, LINK_COOKIE, cookieOptions)
    let row: ApprovalRow | undefined
    try {
      row = await deps.approvals.get(cookie.approval)
    } catch (err) {
      return unavailable(c, err, 'approvals store')
    }
    if (row === undefined) return message(c, 404, 'Unknown request', 'There is no such approval request.')
    if (row.status !== 'pending' || row.expiresAt <= deps.now()) return notPending(c, row, deps.now())
    const policy = deps.policies.snapshot().get(row.agent as AgentId)
    // Checked here too, so that a person who may not decide never sees the buttons; decideApproval checks again.
    if (!isEntitled(parseApprovers(row.approvers), { userIssuer: row.subIss, sub: row.sub, owner: policy?.owner ?? '' }, approver)) {
      log.warn({ approval: row.id, iss: approver.iss, sub: approver.sub, approvers: row.approvers }, 'approval refused: not an approver this grant names')
      return message(c, 403, 'Not yours to decide', 'You are signed in, but you are not an approver of this request.')
    }
    const csrf = randomBytes(32).toString('base64url')
    const session = await sessionCookie.seal({ approval: row.id, jti: cookie.jti, csrf, approver }, CONFIRM_TTL)
    setCookie(c, SESSION_COOKIE, session, { ...cookieOptions, maxAge: CONFIRM_TTL })
    const details = JSON.stringify(JSON.parse(row.details), null, 2)
    return page(
      c,
      200,
      'Approve this action?',
      html`<p>Signed in as <strong>${approver.label}</strong>.</p>
        ${
          row.bindingMessage === null
            ? ''
            : html`<p>Check that the agent shows this same message:</p>
                <p class="binding">${row.bindingMessage}</p>`
        }
        <dl>
          <dt>Agent</dt>
          <dd>${row.agent}</dd>
          <dt>Its purpose</dt>
          <dd>${policy?.purpose ?? '(its policy is gone)'}</dd>
          <dt>For the user</dt>
          <dd>${row.sub} (of ${row.subIss})</dd>
          <dt>At</dt>
          <dd>${row.audience}</dd>
          <dt>Scopes</dt>
          <dd>${row.scopes.join(' ')}</dd>
          <dt>Expires</dt>
          <dd>${new Date(row.expiresAt * 1000).toISOString()}</dd>
        </dl>
        <p>What it will do (authorization_details):</p>
        <pre>${details}</pre>
        <form method="post" action="/approvals/confirm">
          <input type="hidden" name="approval" value="${row.id}" />
          <input type="hidden" name="csrf" value="${csrf}" />
          <button type="submit" name="decision" value="approve">Approve</button>
          <button type="submit" name="decision" value="deny">Deny</button>
        </form>`,
    )
  })

  app.post('/approvals/confirm', confirmDoc, async function confirmApproval(c) {
    const session = await opened(sessionCookie, SessionCookie, getCookie(c, SESSION_COOKIE))
    if (session === undefined) return message(c, 400, 'Not signed in', 'No sign-in is under way here, or it took too long. Open the link again.')
    const text = await c.req.text()
    if (Buffer.byteLength(text) > deps.maxBodyBytes) return message(c, 400, 'Not a valid form', 'The form is too large.')
    const params = new URLSearchParams(text)
    const form = ConfirmForm.safeParse(Object.fromEntries(params))
    if (!form.success || [...params.keys()].length !== Object.keys(form.data).length) return message(c, 400, 'Not a valid form', 'The form is incomplete.')
    // The form's CSRF token and approval must be the ones this session's page was given.
    if (!sameText(form.data.csrf, session.csrf) || form.data.approval !== session.approval) {
      return message(c, 403, 'Not accepted', 'This form does not belong to your sign-in. Open the link again.')
    }
    deleteCookie(c, SESSION_COOKIE, cookieOptions)
    let spent: boolean
    try {
      spent = await deps.approvals.spendLink(session.jti, deps.now())
    } catch (err) {
      return unavailable(c, err, 'approvals store')
    }
    if (!spent) return message(c, 409, 'Link already used', 'This approval link has been used already; a link decides once.')
    const decision = form.data.decision === 'approve' ? 'approved' : 'denied'
    const done = await decideApproval(
      {
        id: session.approval,
        decision,
        approver: session.approver,
        via: 'link',
        clientAddress: c.get('clientAddress'),
        traceId: c.get('traceId'),
        requestId: c.get('requestId'),
      },
      deps,
    ).catch((err: unknown) => err as Error)
    if (done instanceof Error) return unavailable(c, done, 'approvals store')
    switch (done.outcome) {
      case 'unknown':
        return message(c, 404, 'Unknown request', 'There is no such approval request.')
      case 'not_entitled':
        log.warn({ approval: session.approval, iss: session.approver.iss, sub: session.approver.sub }, 'approval refused: not an approver this grant names')
        return message(c, 403, 'Not yours to decide', 'You are not an approver of this request.')
      case 'not_pending':
        return notPending(c, done.row, deps.now())
      case 'unrecorded':
        return message(c, 503, 'Not recorded', 'The decision could not be recorded, so the request was cancelled. The agent must ask again.')
      case 'decided':
        return page(
          c,
          200,
          decision === 'approved' ? 'Approved' : 'Denied',
          html`<p>You ${decision} the request of ${done.row.agent}. You may close this page.</p>`,
        )
    }
  })
}
