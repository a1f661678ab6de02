import { pino, type DestinationStream, type Logger } from 'pino'

/**
 * The one redaction list (STYLE.md): credentials never reach a log line,
 * wherever they sit in the logged object. Tokens are named by `jti`.
 */
export const REDACT = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  'subject_token',
  '*.subject_token',
  'actor_token',
  '*.actor_token',
  'client_assertion',
  '*.client_assertion',
  'client_secret',
  '*.client_secret',
  'access_token',
  '*.access_token',
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
