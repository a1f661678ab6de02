/**
 * The responder console, as `console` configures it: on under `--dev` (its
 * people sign in with one click) and wherever an OpenID Provider is set for
 * it; off otherwise, since without one nobody could be told apart.
 */
import { createApprovalSignIn } from '../approvals/sign-in.js'
import type { Config } from '../config/schema.js'
import { DEV_CONSOLE_PEOPLE } from '../console/roles.js'
import { createConsoleSessions } from '../console/session.js'
import type { ConsoleSettings } from '../http/app.js'
import type { SigningKeys } from '../tokens/keys.js'
import { readClientSecret } from './approvals.js'

/** Throws `TypeError` when the console is asked for without a way to sign in, or its client secret cannot be read. */
export async function consoleOf(config: Config, dev: boolean, keys: SigningKeys, now: () => number): Promise<ConsoleSettings | undefined> {
  const settings = config.console
  const signIn = settings.sign_in
  if (!(settings.enabled ?? (dev || signIn !== undefined))) return undefined
  const sessions = createConsoleSessions({ keys, now, idleSeconds: settings.idle_timeout_seconds, maxSeconds: settings.max_session_seconds })
  if (signIn === undefined) {
    if (!dev) throw new TypeError('console.enabled: the console needs console.sign_in (an OpenID Provider) outside --dev')
    return { sessions, signIn: { kind: 'dev', people: DEV_CONSOLE_PEOPLE } }
  }
  const provider = createApprovalSignIn({
    issuer: signIn.issuer,
    clientId: signIn.client_id,
    clientSecret: await readClientSecret('console.sign_in', signIn.client_secret_file),
    redirectUri: `${config.issuer}/console/callback`,
    groupsClaim: signIn.groups_claim,
    groupsScope: signIn.groups_scope,
    emailClaim: signIn.email_claim,
  })
  return { sessions, signIn: { kind: 'oidc', provider, issuer: signIn.issuer, roles: settings.roles } }
}
