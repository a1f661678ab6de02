import { createAdaptorServer, type Http2Bindings, type HttpBindings, type ServerType } from '@hono/node-server'
import cluster from 'node:cluster'
import { ServerResponse, type Server } from 'node:http'
import { join } from 'node:path'
import { composeMandate, type Mandate } from '../compose.js'
import type { AdminListenerBindings } from '../http/app.js'
import { loadConfig, processEnv } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { createLogger, type Logger } from '../telemetry/log.js'
import { loadSigningKeys } from '../tokens/keys.js'
import { startAdminThread, type AdminThread } from './admin-thread.js'

export interface ServeOptions {
  dev?: boolean
  config?: string
  port?: number
  /** Worker processes (node:cluster) sharing the listening port; 1: this process serves. */
  workers?: number
}

/** The admin thread composes a broker of its own: only shared state (PostgreSQL, Redis) makes its kills this process's. */
function adminThreadPossible(config: Config): boolean {
  return config.storage.database_url !== undefined && config.storage.redis_url !== undefined
}

/** How long a worker has to shut down after SIGTERM before the primary kills it (each worker forces its own exit at 10 s). */
const WORKER_STOP_MS = 15_000

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
  let { config } = loaded
  const logger = createLogger(config.log.level)
  const workers = options.workers ?? 1
  if (workers > 1 && cluster.isPrimary) {
    await runPrimary(config, workers, dev, logger)
    return
  }
  if (cluster.isWorker && config.instance_id !== undefined) {
    // Each worker writes its own audit chain: its records name it.
    config = { ...config, instance_id: `${config.instance_id}/${cluster.worker!.id}` }
  }
  let mandate
  try {
    mandate = await composeMandate(config, { dev, logger })
  } catch (err) {
    process.stderr.write(`mandate: cannot start: ${(err as Error).message}\n`)
    process.exit(1)
  }

  // The admin port: a thread of its own where the kill reaches this process through Redis; a cluster's primary serves it.
  const adminPort = cluster.isWorker ? undefined : config.listen.admin_port
  let adminThread: AdminThread | undefined
  if (adminPort !== undefined && adminThreadPossible(config)) {
    try {
      adminThread = await startAdminThread(config, { dev, logger })
    } catch (err) {
      process.stderr.write(`mandate: cannot start: ${(err as Error).message}\n`)
      await mandate.close()
      process.exit(1)
    }
  } else if (adminPort !== undefined) {
    logger.warn(
      { admin_port: adminPort },
      'the admin port shares this process’s event loop (its thread needs PostgreSQL and Redis): a token flood delays the kill switch',
    )
  }

  listenAndServe(mandate, {
    host: config.listen.host,
    port: config.listen.port,
    ...(adminPort === undefined || adminThread !== undefined ? {} : { adminPort }),
    limits: config.http,
    logger,
    name: 'mandate',
    ...(adminThread === undefined ? {} : { beforeClose: () => adminThread.stop() }),
    onListening: () => {
      logger.info(
        {
          issuer: config.issuer,
          host: config.listen.host,
          port: config.listen.port,
          admin_port: adminPort,
          admin_thread: adminThread !== undefined,
          agents: mandate.agents,
          dev,
          storage: mandate.storage,
        },
        'mandate listening',
      )
      if (dev) {
        const base = `http://${config.listen.host === '127.0.0.1' ? 'localhost' : config.listen.host}:${config.listen.port}`
        process.stderr.write(
          `\nMandate (dev mode) on ${base}: issuer ${config.issuer}, ${mandate.agents} agents from ${config.policies_dir}.\n` +
            `Dev-only credentials: agent demo-agent / demo-secret, admin key demo-admin-key, approval agent demo-payer / demo-payer-secret and approver key demo-approver-key (alice); never use --dev in production.\n` +
            `Start the walkthrough (README "Walkthrough"): get a user token from the dev issuer:\n\n` +
            `  curl -s -X POST ${base}/dev/users/alice/token -H 'content-type: application/json' -d '{"scope":"demo:read demo:write"}'\n\n`,
        )
      }
    },
  })
}

/**
 * The primary of `serve --workers N`: checks what a fleet of processes needs,
 * forks the workers (each composes the broker and listens on the shared
 * port; the primary hands out connections), replaces a worker that dies,
 * and on SIGTERM/SIGINT stops them all gracefully, exiting 0 only if every
 * worker did. A worker that dies before it listens is a start failure (bad
 * policies, database unreachable): the primary stops the others and exits 1
 * rather than restart it in a loop.
 */
async function runPrimary(config: Config, count: number, dev: boolean, logger: Logger): Promise<void> {
  const refuse = (why: string) => {
    process.stderr.write(`mandate: --workers ${count}: ${why}\n`)
    process.exit(1)
  }
  if (dev) refuse('--dev keeps its user issuer in one process; run --dev without --workers')
  // Every worker must see every revocation and every spent client assertion, and write the same log.
  if (config.storage.database_url === undefined) refuse('needs PostgreSQL (DATABASE_URL): PGlite is one process’s database')
  if (config.storage.redis_url === undefined) refuse('needs Redis (REDIS_URL): without it each worker keeps its own revocation list')
  // Each process counts on its own and a scrape would reach whichever worker the primary picked: the numbers would jump.
  if (config.telemetry.prometheus !== undefined)
    refuse('telemetry.prometheus cannot be served by several processes; export with OTLP (telemetry.otlp_endpoint) instead')
  if (config.signing.generate_if_missing) {
    // Generated once, here, before the workers race to create it.
    try {
      await loadSigningKeys(config.signing.keys_file ?? join(config.data_dir, 'signing-keys.json'), true)
    } catch (err) {
      refuse(`cannot start: ${(err as Error).message}`)
    }
  }

  const log = logger.child({ module: 'cluster' })
  // The primary only hands out connections: its loop is free for the admin port, on a thread all the same.
  let adminThread: AdminThread | undefined
  if (config.listen.admin_port !== undefined) {
    try {
      adminThread = await startAdminThread(config, { dev, logger })
    } catch (err) {
      refuse(`cannot start: ${(err as Error).message}`)
    }
  }
  const exit = (code: number) => void (adminThread?.stop() ?? Promise.resolve()).finally(() => process.exit(code))
  let stopping = false
  let failed = false
  const listening = new Set<number>()
  const fork = () => {
    const worker = cluster.fork()
    worker.on('listening', () => {
      listening.add(worker.id)
      log.info({ worker: worker.id, pid: worker.process.pid }, 'worker listening')
    })
  }
  cluster.on('exit', (worker, code, signal) => {
    const started = listening.delete(worker.id)
    if (stopping) {
      if (code !== 0) failed = true
      log.info({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker stopped')
      if (Object.keys(cluster.workers ?? {}).length === 0) exit(failed ? 1 : 0)
      return
    }
    if (!started) {
      log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker exited before it listened; stopping')
      failed = true
      stop('start failure')
      return
    }
    log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker died; starting another')
    setTimeout(() => {
      if (!stopping) fork()
    }, 1_000).unref()
  })
  const stop = (reason: string) => {
    if (stopping) return
    stopping = true
    log.info({ reason, workers: Object.keys(cluster.workers ?? {}).length }, 'stopping workers')
    const left = Object.values(cluster.workers ?? {})
    if (left.length === 0) exit(failed ? 1 : 0)
    for (const w of left) w?.process.kill('SIGTERM')
    setTimeout(() => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL')
      log.error({}, 'workers did not stop in time; killed')
      process.exit(1)
    }, WORKER_STOP_MS).unref()
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  log.info({ workers: count, pid: process.pid }, 'starting workers')
  for (let i = 0; i < count; i++) fork()
}

export interface ListenOptions {
  readonly host: string
  readonly port: number
  /**
   * `listen.admin_port` when this process serves it: a second listener whose
   * requests the app takes for the admin API's (see `AppDeps.adminListener`).
   * `port` is then the public one. With `adminOnly`, `port` is not opened.
   */
  readonly adminPort?: number
  /** Only the admin listener (the admin thread). */
  readonly adminOnly?: boolean
  readonly limits: Config['http']
  readonly logger: Logger
  /** Prefix of the messages written to stderr. */
  readonly name: string
  /** Called once every listener listens. */
  readonly onListening: () => void
  /** Runs on shutdown once the listeners have closed, before the broker closes (the admin thread stops here). */
  readonly beforeClose?: () => Promise<void>
  /** Shut down on SIGTERM/SIGINT (default); the admin thread is told by its parent instead. */
  readonly signals?: boolean
  /** A listener that cannot listen: default, the message on stderr and exit 1. */
  readonly fatal?: (message: string) => void
}

export interface Serving {
  readonly servers: readonly ServerType[]
  /** Closes gracefully (as on SIGTERM) and exits: 0 once closed, 1 after 10 s. */
  shutdown(reason: string): void
}

/**
 * Serves a composed broker over HTTP until SIGTERM/SIGINT (or `shutdown`),
 * then closes it gracefully: open revocation feeds end, every response from
 * then on carries `Connection: close` (busy keep-alive connections would
 * otherwise hold `server.close()` open), and once the last connection is
 * gone `mandate.close()` writes the queued audit groups and the last
 * checkpoints. Exits 1 after 10 s if that has not happened.
 */
export function listenAndServe(mandate: Mandate, options: ListenOptions): Serving {
  const { logger } = options
  let closing = false
  const fetch = (req: Request, env: HttpBindings | Http2Bindings) => {
    if (closing && env.outgoing instanceof ServerResponse) env.outgoing.setHeader('Connection', 'close')
    return mandate.app.fetch(req, env)
  }
  // The app tells the admin listener's requests by this binding.
  const adminFetch = (req: Request, env: HttpBindings | Http2Bindings) => fetch(req, { ...env, listener: 'admin' } as HttpBindings & AdminListenerBindings)
  const fatal =
    options.fatal ??
    ((message: string) => {
      process.stderr.write(`${message}\n`)
      process.exit(1)
    })
  const onDrop = () => mandate.refusals.unavailable.count('connection limit (http.max_connections)')
  const wanted: { port: number; fetch: typeof fetch }[] = []
  if (options.adminOnly !== true) wanted.push({ port: options.port, fetch })
  if (options.adminPort !== undefined) wanted.push({ port: options.adminPort, fetch: adminFetch })
  let pending = wanted.length
  const servers = wanted.map(({ port, fetch }) => {
    const server = createHttpServer(fetch, options.host, options.limits, onDrop)
    server.on('error', (err: NodeJS.ErrnoException) => fatal(`${options.name}: cannot listen on ${options.host}:${port}: ${err.code ?? err.message}`))
    server.on('listening', () => {
      if (--pending === 0) options.onListening()
    })
    server.listen(port, options.host)
    return server
  })

  const shutdown = (reason: string) => {
    if (closing) return
    closing = true
    logger.info({ reason }, 'shutting down')
    const force = setTimeout(() => process.exit(1), 10_000).unref()
    // Open revocation feed streams end now, or they would hold close() open.
    mandate.revocations.endSubscriptions()
    const closed = servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())))
    void Promise.all(closed)
      .then(() => options.beforeClose?.())
      .catch((err: unknown) => logger.error({ cause: (err as Error).message }, 'shutdown step failed'))
      .then(() => mandate.close())
      .finally(() => {
        clearTimeout(force)
        process.exit(0)
      })
    // Idle keep-alive sockets would hold close() open.
    for (const server of servers) server.closeIdleConnections()
  }
  if (options.signals !== false) {
    process.on('SIGTERM', () => shutdown('SIGTERM'))
    process.on('SIGINT', () => shutdown('SIGINT'))
  }
  return { servers, shutdown }
}

/**
 * The broker's HTTP/1.1 server, not yet listening, with the limits that keep
 * slow and idle clients from holding it (slowloris): the request head must
 * arrive within `headers_timeout_ms` and the whole request within
 * `request_timeout_ms` (Node answers 408 and closes), an idle keep-alive
 * connection closes after `keep_alive_timeout_ms`, and a connection on which
 * nothing moves for `idle_timeout_ms` is destroyed. Beyond `max_connections`
 * open connections a new one is closed as it arrives, and `onDrop` told.
 */
export function createHttpServer(
  fetch: (req: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response>,
  hostname: string,
  limits: Config['http'],
  onDrop: () => void,
): Server {
  const server = createAdaptorServer({
    fetch,
    hostname,
    serverOptions: {
      headersTimeout: limits.headers_timeout_ms,
      requestTimeout: limits.request_timeout_ms,
      keepAliveTimeout: limits.keep_alive_timeout_ms,
      maxHeaderSize: limits.max_header_bytes,
      // Node enforces the two request timeouts only when it sweeps its connections (every 30 s by
      // default): a sweep every quarter of the header timeout (at most 1 s) keeps them close to exact.
      connectionsCheckingInterval: Math.min(1_000, Math.floor(limits.headers_timeout_ms / 4)),
    },
  }) as Server
  server.timeout = limits.idle_timeout_ms
  server.maxConnections = limits.max_connections
  server.on('drop', onDrop)
  return server
}
