/**
 * The console is a client of the admin API, in process: each page reads, and
 * each form acts, through the same `/admin/*` routes, role checks, records
 * and logs as the CLI, with the person's session cookie (and a form's CSRF
 * token) as its credential. `app.request` runs the request through the app
 * without a socket; the caller's bindings go along, so its client address is
 * the one recorded.
 */
import type { Context, Hono } from 'hono'
import type { AppEnv } from '../../env.js'
import { CSRF_HEADER } from '../../console-auth.js'

/** An admin API answer: its JSON body, or its error (`{ error, error_description }`). */
export type ApiAnswer<T> =
  | { readonly ok: true; readonly status: number; readonly body: T }
  | { readonly ok: false; readonly status: number; readonly error: string; readonly description: string }

export interface ConsoleApi {
  get<T>(path: string): Promise<ApiAnswer<T>>
  /** A state-changing call; `csrf` is the token the submitted form carried, checked by the admin API (http/console-auth.ts). */
  send<T>(method: 'POST' | 'DELETE', path: string, csrf: string | undefined, body?: unknown): Promise<ApiAnswer<T>>
}

export function consoleApi(app: Hono<AppEnv>, c: Context<AppEnv>): ConsoleApi {
  const call = async <T>(method: string, path: string, headers: Record<string, string>, body?: string): Promise<ApiAnswer<T>> => {
    const cookie = c.req.header('cookie')
    const init: RequestInit = { method, headers: { ...headers, ...(cookie === undefined ? {} : { cookie }), accept: 'application/json' } }
    if (body !== undefined) init.body = body
    const res = await app.request(new URL(path, c.req.url).href, init, c.env)
    const text = await res.text()
    let json: unknown
    try {
      json = text === '' ? {} : JSON.parse(text)
    } catch {
      json = {}
    }
    if (res.ok) return { ok: true, status: res.status, body: json as T }
    const e = json as { error?: unknown; error_description?: unknown }
    return {
      ok: false,
      status: res.status,
      error: typeof e.error === 'string' ? e.error : 'server_error',
      description: typeof e.error_description === 'string' ? e.error_description : `the admin API answered ${res.status}`,
    }
  }
  return {
    get: (path) => call('GET', path, {}),
    send: (method, path, csrf, body) =>
      call(
        method,
        path,
        { ...(csrf === undefined ? {} : { [CSRF_HEADER]: csrf }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body === undefined ? undefined : JSON.stringify(body),
      ),
  }
}
