/**
 * The exit codes of every `mandate` command, one scheme for all, so that a
 * script can tell "the broker said no" from "try again later" without
 * reading stderr. Printed by `mandate --help`.
 */
export const EXIT = {
  OK: 0,
  /** Refused or failed: invalid config or policies, audit findings, a 4xx from the broker other than 401/403. */
  FAILED: 1,
  /** Usage error (unknown command or option, bad or missing argument), or the command could not run. */
  USAGE: 2,
  /** `audit verify --checkpoints`: records no checkpoint covers, older than a running broker leaves them. */
  UNCOVERED: 3,
  /** No admin key, or the broker refused it (401) or its role (403). */
  AUTH: 4,
  /** The broker could not be reached, timed out, or failed (5xx): worth retrying. */
  UNAVAILABLE: 5,
  /** `policy diff`: the new policies let some agent get something the old ones did not. */
  WIDENED: 6,
} as const

export const EXIT_CODES_HELP = `
Exit codes:
  0  done
  1  refused or failed: invalid config or policies, audit findings, or the
     broker refused the request (400, 404, 409: the message says why)
  2  usage error (unknown command or option, bad or missing argument), or the
     command could not run (e.g. the database cannot be opened)
  3  audit verify --checkpoints: records no checkpoint covers for too long
  4  no admin key, or the broker refused it (401) or its role (403)
  5  the broker cannot be reached, timed out, or failed (5xx): try again
  6  policy diff: some agent gains (a new agent, audience, scope, longer
     lifetime, deeper delegation, more users or credentials, later expiry)`

/** The codes the commands that call a broker (revoke) exit with. */
export const BROKER_EXIT_CODES_HELP = `
Exit codes: 0 done; 1 the broker refused the request (400, 404, 409: the
message says why); 2 usage error; 4 no admin key, or the broker refused it
(401) or its role (403); 5 the broker cannot be reached, timed out, or failed
(5xx): try again.`
