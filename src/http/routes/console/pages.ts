/**
 * What every console page module is given: the app (its pages read and act
 * through the admin API in process, api.ts) and the console's dependencies.
 */
import type { Hono } from 'hono'
import type { ConsoleLive } from '../../../console/live.js'
import type { ConsoleSessions } from '../../../console/session.js'
import type { Logger } from '../../../telemetry/log.js'
import type { SigningKeys } from '../../../tokens/keys.js'
import type { ConsoleCookie } from '../../console-auth.js'
import type { AppEnv } from '../../env.js'
import type { ConsoleSignIn } from './sign-in.js'

export interface ConsoleDeps {
  /** Mandate's public URL. */
  readonly issuer: string
  readonly sessions: ConsoleSessions
  readonly cookie: ConsoleCookie
  readonly signIn: ConsoleSignIn
  /** For the sealed sign-in cookie. */
  readonly keys: SigningKeys
  /** Epoch seconds. */
  readonly now: () => number
  readonly logger: Logger
  /** The live events; absent: no /console/events. */
  readonly live?: ConsoleLive | undefined
}

export interface ConsolePages {
  readonly app: Hono<AppEnv>
  readonly deps: ConsoleDeps
}
