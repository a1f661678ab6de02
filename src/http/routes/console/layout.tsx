/**
 * The console's page frame and the small pieces every page uses. Pages are
 * rendered on the server (Hono JSX) and sent with a Content-Security-Policy
 * that allows this origin's stylesheet and script only: no inline script, no
 * inline style, no other origin, no framing.
 */
import type { Context } from 'hono'
import { html } from 'hono/html'
import type { Child, FC, PropsWithChildren } from 'hono/jsx'
import type { ConsoleSession } from '../../../console/session.js'
import type { AppEnv } from '../../env.js'
import { CONSOLE_CSS, CONSOLE_JS } from './assets.js'

export const CONSOLE_HEADERS = {
  'Cache-Control': 'no-store',
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
  'Cross-Origin-Opener-Policy': 'same-origin',
} as const

/** The sections of the top navigation; `active` marks the current one. */
export type Section = 'agents' | 'kills' | 'chains' | 'audit' | 'approvals'
const SECTIONS: readonly { id: Section; href: string; label: string }[] = [
  { id: 'agents', href: '/console/agents', label: 'Agents' },
  { id: 'kills', href: '/console/kills', label: 'Kills' },
  { id: 'chains', href: '/console/chains', label: 'Chains' },
  { id: 'audit', href: '/console/audit', label: 'Audit' },
  { id: 'approvals', href: '/console/approvals', label: 'Approvals' },
]

interface FrameProps {
  readonly title: string
  readonly session: ConsoleSession | undefined
  readonly active?: Section | undefined
}

const Frame: FC<PropsWithChildren<FrameProps>> = ({ title, session, active, children }) => (
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      {session === undefined ? null : <meta name="csrf-token" content={session.csrf} />}
      <title>{`${title} · Mandate console`}</title>
      <link rel="stylesheet" href={CONSOLE_CSS.path} />
      <script src={CONSOLE_JS.path} defer></script>
    </head>
    <body>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <a class="brand" href="/console/agents">
          Mandate
        </a>
        {session === undefined ? null : (
          <nav aria-label="Sections">
            <ul>
              {SECTIONS.map((s) => (
                <li>
                  <a href={s.href} aria-current={s.id === active ? 'page' : undefined}>
                    {s.label}
                  </a>
                </li>
              ))}
            </ul>
          </nav>
        )}
        {session === undefined ? null : (
          <div class="who">
            <span>
              {session.names[0] ?? session.sub} · {session.roles.join(', ')}
            </span>
            <form method="post" action="/console/sign-out">
              <input type="hidden" name="csrf" value={session.csrf} />
              <button type="submit">Sign out</button>
            </form>
          </div>
        )}
      </header>
      <main id="main">{children}</main>
      {session === undefined ? null : <div id="live" class="live" role="status" aria-live="polite" aria-label="Live events"></div>}
    </body>
  </html>
)

export interface RenderOptions {
  readonly title: string
  readonly active?: Section | undefined
  readonly status?: 200 | 400 | 403 | 404 | 409 | 503 | undefined
}

/** A full console page, with its security headers; the session (if any) is the request's. */
export function render(c: Context<AppEnv>, options: RenderOptions, content: Child): Response | Promise<Response> {
  const page = (
    <Frame title={options.title} session={c.get('consoleSession')} active={options.active}>
      {content}
    </Frame>
  )
  return c.html(html`<!doctype html>${page}`, options.status ?? 200, CONSOLE_HEADERS)
}

/** A page that says one thing: an error, or a refusal, in words. */
export function message(c: Context<AppEnv>, status: 400 | 403 | 404 | 409 | 503, title: string, text: string, active?: Section): Response | Promise<Response> {
  return render(
    c,
    { title, status, active },
    <>
      <h1>{title}</h1>
      <p class="notice error" role="alert">
        {text}
      </p>
    </>,
  )
}

/** A status as a coloured label with its word (never colour alone). */
export const Badge: FC<{ state: string; label?: string }> = ({ state, label }) => <span class={`badge ${state}`}>{label ?? state}</span>

/** An instant (RFC 3339 or epoch seconds) as a `<time>`, shown in UTC to the minute. */
export const Time: FC<{ at: string | number | null | undefined }> = ({ at }) => {
  if (at === null || at === undefined) return <span class="muted">never</span>
  const iso = typeof at === 'number' ? new Date(at * 1000).toISOString() : at
  return <time datetime={iso}>{`${iso.slice(0, 16).replace('T', ' ')} UTC`}</time>
}

/** A series of counts as a small line, with its total said in words for screen readers. */
export const Sparkline: FC<{ values: readonly number[]; label: string }> = ({ values, label }) => {
  const w = 96
  const h = 20
  const max = Math.max(1, ...values)
  const step = values.length > 1 ? w / (values.length - 1) : 0
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`).join(' ')
  return (
    <svg class="spark" width={w} height={h} viewBox={`0 0 ${w} ${h}`} role="img" aria-label={label}>
      <polyline points={points} />
    </svg>
  )
}

/** A page's one-line note after an action (`?done=…` on the redirect that followed it). */
export const Notice: FC<{ kind: 'ok' | 'error' | 'warn' | 'info'; text: string | undefined }> = ({ kind, text }) =>
  text === undefined ? null : (
    <p class={`notice ${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      {text}
    </p>
  )
