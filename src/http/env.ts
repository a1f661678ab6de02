/**
 * The Hono environment of every request: the variables middleware and
 * routes set (read back by the request log line and the span), and the
 * bindings the server adds. Routes and middleware import it from here, never
 * from app.ts, so that app.ts can import them without a cycle.
 */
import type { Context } from 'hono'
import type { ConsoleSession } from '../console/session.js'
import type { AdminPrincipal } from './admin-auth.js'

/** Why a request was shed under overload. */
export type ShedReason = 'concurrency' | 'event_loop_lag' | 'audit_backlog'

export interface AppEnv {
  Variables: {
    requestId: string
    /**
     * W3C trace id: the caller's `traceparent`, or a fresh one; with tracing
     * on, the request span's (the same id when the caller sent one).
     * Recorded in the audit log.
     */
    traceId: string
    clientAddress: string | undefined
    agent: string | undefined
    /** A resource server's id (`rs/…`), once authenticated. */
    resourceServer: string | undefined
    jti: string | undefined
    error: string | undefined
    adminKey: string | undefined
    /** Who called an admin route, once authenticated (http/admin-auth.ts). */
    adminPrincipal: AdminPrincipal | undefined
    /** The console session a request's cookie opened (http/console-auth.ts). */
    consoleSession: ConsoleSession | undefined
    /** RFC 6749 §5.2 `error_uri` of the refusal being answered (the token endpoint's recorded denials). */
    errorUri: string | undefined
    /** Set when the request was shed under overload. */
    shed: ShedReason | undefined
  }
}

/** A request's context in this app. */
export type AppContext = Context<AppEnv>

/** What `serve` adds to the bindings of a request that came through the admin listener. */
export interface AdminListenerBindings {
  readonly listener: 'admin'
}
