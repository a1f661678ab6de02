import { serve as serveHttp, type Http2Bindings, type HttpBindings, type ServerType } from '@hono/node-server'
import { ServerResponse } from 'node:http'
import { composeMandate, type Mandate } from '../compose.js'
import { loadConfig, processEnv } from '../config/load.js'
import { createLogger, type Logger } from '../telemetry/log.js'

export interface ServeOptions {
  dev?: boolean
  config?: string
  port?: number
}

/** `mandate serve`: load config, compose, listen; SIGTERM/SIGINT close gracefully. */
export async function serve(options: ServeOptions): Promise<void> {
  const dev = options.dev === true
  const env = { ...processEnv() }
  if (options.port !== undefined) env['PORT'] = String(options.port)
  const loaded = await loadConfig(options.config, env, { dev })
  if (!loaded.ok) {
    process.stderr.write(`mandate: invalid config: ${loaded.issues.join('; ')}\n`)
    process.exit(1)
  }
  const { config } = loaded
  const logger = createLogger(config.log.level)
  let mandate
  try {
    mandate = await composeMandate(config, { dev, logger })
  } catch (err) {
    process.stderr.write(`mandate: cannot start: ${(err as Error).message}\n`)
    process.exit(1)
  }

  listenAndServe(mandate, {
    host: config.listen.host,
    port: config.listen.port,
    logger,
    name: 'mandate',
    onListening: () => {
      logger.info(
        { issuer: config.issuer, host: config.listen.host, port: config.listen.port, agents: mandate.agents, dev, storage: mandate.storage },
        'mandate listening',
      )
      if (dev) {
        const base = `http://${config.listen.host === '127.0.0.1' ? 'localhost' : config.listen.host}:${config.listen.port}`
        process.stderr.write(
          `\nMandate (dev mode) on ${base}: issuer ${config.issuer}, ${mandate.agents} agents from ${config.policies_dir}.\n` +
            `Dev-only credentials: agent demo-agent / demo-secret, admin key demo-admin-key; never use --dev in production.\n` +
            `Start the walkthrough (README "Walkthrough"): get a user token from the dev issuer:\n\n` +
            `  curl -s -X POST ${base}/dev/users/alice/token -H 'content-type: application/json' -d '{"scope":"demo:read demo:write"}'\n\n`,
        )
      }
    },
  })
}

export interface ListenOptions {
  readonly host: string
  readonly port: number
  readonly logger: Logger
  /** Prefix of the messages written to stderr. */
  readonly name: string
  readonly onListening: () => void
}

/**
 * Serves a composed broker over HTTP until SIGTERM/SIGINT, then closes it
 * gracefully: open revocation feeds end, every response from then on carries
 * `Connection: close` (busy keep-alive connections would otherwise hold
 * `server.close()` open), and once the last connection is gone
 * `mandate.close()` writes the queued audit groups and the last checkpoints.
 * Exits 1 after 10 s if that has not happened.
 */
export function listenAndServe(mandate: Mandate, options: ListenOptions): ServerType {
  const { logger } = options
  let closing = false
  const fetch = (req: Request, env: HttpBindings | Http2Bindings) => {
    if (closing && env.outgoing instanceof ServerResponse) env.outgoing.setHeader('Connection', 'close')
    return mandate.app.fetch(req, env)
  }
  const server: ServerType = serveHttp({ fetch, hostname: options.host, port: options.port })
  server.on('error', (err: NodeJS.ErrnoException) => {
    process.stderr.write(`${options.name}: cannot listen on ${options.host}:${options.port}: ${err.code ?? err.message}\n`)
    process.exit(1)
  })
  server.on('listening', options.onListening)

  const shutdown = (signal: string) => {
    if (closing) return
    closing = true
    logger.info({ signal }, 'shutting down')
    const force = setTimeout(() => process.exit(1), 10_000).unref()
    // Open revocation feed streams end now, or they would hold close() open.
    mandate.revocations.endSubscriptions()
    server.close(() => {
      void mandate.close().finally(() => {
        clearTimeout(force)
        process.exit(0)
      })
    })
    // Idle keep-alive sockets would hold close() open.
    ;(server as import('node:http').Server).closeIdleConnections?.()
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
  return server
}
