/**
 * Revocations as Security Event Tokens (`ssf` in the config): the
 * transmitter on the SQL database, woken by every revocation the local mirror
 * applies. Nothing runs when no receiver is configured.
 */
import { readFile } from 'node:fs/promises'
import type { Closers } from '../core/async.js'
import type { Config } from '../config/schema.js'
import type { RevocationService } from '../revocation/service.js'
import { SET_TYP } from '../ssf/events.js'
import { createSqlSsfStore } from '../ssf/outbox.js'
import { createTransmitter, type Receiver, type Transmitter } from '../ssf/transmitter.js'
import type { Database } from '../storage/database.js'
import type { Logger } from '../telemetry/log.js'
import type { MandateMetrics } from '../telemetry/metrics.js'
import type { SigningKeys } from '../tokens/keys.js'
import { createJwtSigner } from '../tokens/mint.js'

export interface SsfOptions {
  readonly database: Database | undefined
  readonly keys: SigningKeys
  readonly revocations: RevocationService
  readonly instance: string
  /** Epoch milliseconds (the broker's clock). */
  readonly clock: () => number
  readonly logger: Logger
  readonly metrics: MandateMetrics | undefined
}

/**
 * Starts the transmitter; undefined without receivers. Throws `TypeError`
 * when receivers are configured with no SQL database (the queues live
 * there) or an authorization file is unreadable or not one header value.
 */
export async function openSetTransmitter(config: Config, options: SsfOptions, closers: Closers): Promise<Transmitter | undefined> {
  const ssf = config.ssf
  if (ssf.receivers.length === 0) return undefined
  if (options.database === undefined) throw new TypeError('ssf.receivers need the SQL database (PostgreSQL or PGlite), not an in-memory revocation log')
  const receivers: Receiver[] = []
  for (const r of ssf.receivers) {
    const d = r.delivery
    receivers.push({
      name: r.name,
      audience: r.audience,
      start: r.start,
      delivery:
        d.method === 'push'
          ? {
              method: 'push',
              endpointUrl: d.endpoint_url,
              authorization: d.authorization_file === undefined ? undefined : await authorizationOf(d.authorization_file),
            }
          : { method: 'poll', resourceServer: d.resource_server },
    })
  }
  const log = options.logger.child({ module: 'ssf' })
  const { metrics } = options
  const transmitter = createTransmitter({
    issuer: config.issuer,
    receivers,
    store: createSqlSsfStore(options.database.db),
    sign: createJwtSigner(() => options.keys.current, SET_TYP),
    instance: options.instance,
    now: () => Math.floor(options.clock() / 1000),
    retry: {
      maxAttempts: ssf.retry.max_attempts,
      maxAgeMs: ssf.retry.max_age_seconds * 1000,
      initialDelayMs: ssf.retry.initial_delay_ms,
      maxDelayMs: ssf.retry.max_delay_ms,
    },
    pushTimeoutMs: ssf.push_timeout_ms,
    leaseSeconds: ssf.lease_seconds,
    scanIntervalMs: ssf.scan_interval_ms,
    graceSeconds: ssf.grace_seconds,
    longPollMaxMs: ssf.long_poll_max_seconds * 1000,
    logger: log,
    ...(metrics === undefined
      ? {}
      : {
          metrics: {
            delivered: (receiver, method, n) => metrics.ssfDelivered(receiver, method, n),
            failed: (receiver, reason, n) => metrics.ssfFailed(receiver, reason, n),
            retried: (receiver) => metrics.ssfRetried(receiver),
          },
        }),
  })
  await transmitter.start()
  closers.add(() => transmitter.close())
  metrics?.watchSsfBacklog(() => transmitter.backlog())
  // Every record the mirror applies, made here or arriving through Redis: a lift wakes it too, and publishes nothing.
  const unsubscribe = options.revocations.subscribe(() => transmitter.wake())
  closers.add(async () => unsubscribe())
  log.info({ receivers: receivers.map((r) => `${r.name} (${r.delivery.method})`) }, 'SET transmitter started')
  return transmitter
}

/** The file's content, trimmed of surrounding white space: one header value, or `TypeError` (never quoting it). */
async function authorizationOf(file: string): Promise<string> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new TypeError(`ssf authorization_file ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  const value = text.trim()
  // RFC 9110 §5.5: visible characters, spaces and tabs; a CR or LF would split the header.
  if (value === '' || !/^[\t\x20-\x7e]+$/.test(value)) throw new TypeError(`ssf authorization_file ${file}: must hold one header value on one line`)
  return value
}
