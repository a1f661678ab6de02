import { pino, type DestinationStream, type Logger } from 'pino'

/**
 * The one redaction list (CONTRIBUTING.md "Conventions"). Mandate never logs a request body or
 * header, so this is the safety net, not the mechanism: explicit paths, no
 * wildcards (a wildcard path costs several percent of the token endpoint's
 * CPU). Tokens are named by `jti`.
 */
export const REDACT = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'subject_token',
  'actor_token',
  'client_assertion',
  'client_secret',
  'access_token',
  'form.subject_token',
  'form.actor_token',
  'form.client_assertion',
  'form.client_secret',
  'body.access_token',
]

/** The root logger: JSON lines on stdout (or `destination` in tests). */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'mandate' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  )
}

export type { Logger }
