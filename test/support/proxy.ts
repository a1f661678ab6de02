/**
 * A TCP proxy on 127.0.0.1 (port chosen by the system) in front of one server,
 * for outage tests that must never stop, flush or restart the shared Redis or
 * PostgreSQL: point the process under test at `proxy.url`, then
 *
 * - `cut()`: resets every connection through the proxy and resets new ones as
 *   soon as they arrive, like a server that went away (clients see ECONNRESET
 *   at once and retry);
 * - `pause()`: stops forwarding bytes but keeps the connections open, like a
 *   silent network partition (clients only notice through their timeouts);
 * - `restore()`: forwards again; clients reconnect on their own.
 *
 * The proxy only ever listens on loopback. `close()` ends it and every
 * connection through it; idempotent.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'

export interface TcpProxy {
  /** The proxy's port on 127.0.0.1. */
  readonly port: number
  /** The target URL with host and port replaced by the proxy's (credentials, path and query kept). */
  readonly url: string
  /** Connections currently forwarded. */
  readonly connections: number
  /** Connections reset on arrival while cut, since the proxy started. */
  readonly refused: number
  readonly mode: 'open' | 'cut' | 'paused'
  cut(): void
  pause(): void
  restore(): void
  close(): Promise<void>
}

/** Default ports of the URL schemes the tests proxy. */
const DEFAULT_PORTS: Record<string, number> = { 'redis:': 6379, 'rediss:': 6379, 'postgres:': 5432, 'postgresql:': 5432 }

/** Starts a proxy to the server `targetUrl` names (e.g. `redis://127.0.0.1:6379`, `postgres://…/db`). */
export async function startTcpProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl)
  const targetPort = Number(target.port || DEFAULT_PORTS[target.protocol])
  if (!Number.isInteger(targetPort) || targetPort <= 0) throw new TypeError(`no port in ${target.protocol} URL and no default for it`)
  // IPv6 literals come bracketed from URL; net.connect wants them bare.
  const targetHost = target.hostname.replace(/^\[(.*)\]$/, '$1')

  const pairs = new Set<readonly [Socket, Socket]>()
  let mode: TcpProxy['mode'] = 'open'
  let closed = false
  let refused = 0

  const server = createServer((downstream) => {
    if (mode === 'cut' || closed) {
      refused++
      downstream.on('error', () => {})
      downstream.resetAndDestroy()
      return
    }
    const upstream = connect(targetPort, targetHost)
    const pair = [downstream, upstream] as const
    pairs.add(pair)
    const drop = () => {
      pairs.delete(pair)
      downstream.destroy()
      upstream.destroy()
    }
    downstream.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    downstream.setNoDelay(true)
    upstream.setNoDelay(true)
    if (mode === 'paused') {
      downstream.pause()
      upstream.pause()
    } else {
      downstream.pipe(upstream)
      upstream.pipe(downstream)
    }
  })
  server.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  const proxied = new URL(targetUrl)
  proxied.hostname = '127.0.0.1'
  proxied.port = String(port)

  return {
    port,
    url: proxied.toString(),
    get connections() {
      return pairs.size
    },
    get refused() {
      return refused
    },
    get mode() {
      return mode
    },
    cut() {
      mode = 'cut'
      for (const [down, up] of pairs) {
        down.resetAndDestroy()
        up.destroy()
      }
      pairs.clear()
    },
    pause() {
      if (mode !== 'open') return
      mode = 'paused'
      for (const [down, up] of pairs) {
        down.unpipe(up)
        up.unpipe(down)
        down.pause()
        up.pause()
      }
    },
    restore() {
      const wasPaused = mode === 'paused'
      mode = 'open'
      if (!wasPaused) return
      for (const [down, up] of pairs) {
        down.pipe(up)
        up.pipe(down)
      }
    },
    async close() {
      if (closed) return
      closed = true
      for (const [down, up] of pairs) {
        down.destroy()
        up.destroy()
      }
      pairs.clear()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
