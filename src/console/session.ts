/**
 * The console's session: who signed in, their roles, and the page's CSRF
 * token, sealed into one cookie (a JWE under a key derived from the broker's
 * signing keys, approvals/link.ts), so that no server keeps sessions and any
 * instance sharing the keys file opens it. A session ends after
 * `idle_timeout_seconds` unused, and `max_session_seconds` after sign-in
 * whatever happens.
 */
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { createSealer, InvalidLink } from '../approvals/link.js'
import type { SigningKeys } from '../tokens/keys.js'
import { CONSOLE_ROLES, type ConsolePerson } from './roles.js'

export interface ConsoleSession extends ConsolePerson {
  /** The CSRF token every state-changing request of this session carries (a form field, or `X-CSRF-Token`). */
  readonly csrf: string
  /** When the person signed in, epoch seconds. */
  readonly authTime: number
  /** When this cookie was sealed, epoch seconds: a page renews it once it is a minute old. */
  readonly sealedAt: number
}

export interface ConsoleSessions {
  /** A new session for a person who just signed in: its cookie value and its content. */
  start(person: ConsolePerson): Promise<{ cookie: string; session: ConsoleSession }>
  /** The session a cookie holds, or undefined when it is not one, was altered, or has ended. */
  open(cookie: string | undefined): Promise<ConsoleSession | undefined>
  /** The session sealed again with a fresh idle timeout, or undefined when it needs none yet. */
  renew(session: ConsoleSession): Promise<string | undefined>
  /** Seconds a new or renewed cookie lives (its Max-Age). */
  readonly idleSeconds: number
}

export interface ConsoleSessionOptions {
  readonly keys: SigningKeys
  /** Epoch seconds. */
  readonly now: () => number
  readonly idleSeconds: number
  readonly maxSeconds: number
}

/** What the cookie holds; anything else in it is a cookie of some other version, and no session. */
const Sealed = z.object({
  iss: z.string(),
  sub: z.string(),
  label: z.string(),
  names: z.array(z.string()),
  groups: z.array(z.string()),
  roles: z.array(z.enum(CONSOLE_ROLES)).min(1),
  csrf: z.string().min(32),
  auth_time: z.number().int(),
  iat: z.number().int(),
})

/** Renewing at every request would re-encrypt the cookie on every page; once a minute keeps the idle timeout exact to a minute. */
const RENEW_AFTER = 60

export function createConsoleSessions(options: ConsoleSessionOptions): ConsoleSessions {
  const sealer = createSealer(options.keys, 'console-session', options.now)
  const seal = (s: Omit<ConsoleSession, 'sealedAt'>) => {
    // Idle timeout, but never past the session's absolute end.
    const ttl = Math.min(options.idleSeconds, s.authTime + options.maxSeconds - options.now())
    const { csrf, authTime, ...person } = s
    return sealer.seal({ ...person, csrf, auth_time: authTime }, Math.max(ttl, 1))
  }
  return {
    idleSeconds: options.idleSeconds,
    async start(person) {
      const session = { ...person, csrf: randomBytes(32).toString('base64url'), authTime: options.now(), sealedAt: options.now() }
      return { cookie: await seal(session), session }
    },
    async open(cookie) {
      if (cookie === undefined || cookie.length > 8192) return undefined
      let claims: Record<string, unknown>
      try {
        claims = await sealer.open(cookie)
      } catch (err) {
        if (err instanceof InvalidLink) return undefined
        throw err
      }
      const parsed = Sealed.safeParse(claims)
      if (!parsed.success || parsed.data.auth_time + options.maxSeconds <= options.now()) return undefined
      const { auth_time, iat, ...rest } = parsed.data
      return { ...rest, authTime: auth_time, sealedAt: iat }
    },
    async renew(session) {
      if (options.now() - session.sealedAt < RENEW_AFTER) return undefined
      return seal(session)
    },
  }
}
