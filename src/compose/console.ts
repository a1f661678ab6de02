/**
 * The responder console, as `console` configures it: on under `--dev` (its
 * people sign in with one click) and wherever an OpenID Provider is set for
 * it; off otherwise, since without one nobody could be told apart.
 */
import { createApprovalSignIn } from '../approvals/sign-in.js'
import type { SqlAuditLog } from '../audit/sql.js'
import type { Config } from '../config/schema.js'
import { createConsoleLive, type ConsoleLiveOptions } from '../console/live.js'
import type { Closers } from '../core/async.js'
import { DEV_CONSOLE_PEOPLE } from '../console/roles.js'
import { createConsoleSessions } from '../console/session.js'
import type { ConsoleSettings } from '../http/app.js'
import type { SigningKeys } from '../tokens/keys.js'
import { readClientSecret } from './approvals.js'

/** Throws `TypeError` when the console is asked for without a way to sign in, or its client secret cannot be read. */
export interface ConsoleWiring {
  readonly dev: boolean
  readonly keys: SigningKeys
  /** Epoch seconds. */
  readonly now: () => number
  readonly revocations: ConsoleLiveOptions['revocations']
  /** The SQL delegation log, when there is one: denial bursts and approval requests for the live events. */
  readonly sqlAudit: Pick<SqlAuditLog, 'onDurable'> | undefined
}

export async function consoleOf(config: Config, w: ConsoleWiring, closers: Closers): Promise<ConsoleSettings | undefined> {
  const settings = config.console
  const signIn = settings.sign_in
  if (!(settings.enabled ?? (w.dev || signIn !== undefined))) return undefined
  if (signIn === undefined && !w.dev) throw new TypeError('console.enabled: the console needs console.sign_in (an OpenID Provider) outside --dev')
  const { keys, now } = w
  const sessions = createConsoleSessions({ keys, now, idleSeconds: settings.idle_timeout_seconds, maxSeconds: settings.max_session_seconds })
  const live = createConsoleLive({ revocations: w.revocations, onDurable: w.sqlAudit?.onDurable.bind(w.sqlAudit), now })
  closers.add(async () => live.close())
  if (signIn === undefined) return { sessions, live, signIn: { kind: 'dev', people: DEV_CONSOLE_PEOPLE } }
  const provider = createApprovalSignIn({
    issuer: signIn.issuer,
    clientId: signIn.client_id,
    clientSecret: await readClientSecret('console.sign_in', signIn.client_secret_file),
    redirectUri: `${config.issuer}/console/callback`,
    groupsClaim: signIn.groups_claim,
    groupsScope: signIn.groups_scope,
    emailClaim: signIn.email_claim,
  })
  return { sessions, live, signIn: { kind: 'oidc', provider, issuer: signIn.issuer, roles: settings.roles } }
}
