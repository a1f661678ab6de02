/**
 * The broker's HTTP server (src/cli/serve.ts `createHttpServer`) against raw
 * sockets: slow and idle clients are disconnected within their bounds, and
 * connections beyond the cap are refused, while normal requests and the
 * long-lived revocation feed keep working. The broker is composed in this
 * process (test/support/broker.ts); the server listens on 127.0.0.1.
 *
 * Bounds are short here (1 s for the request head) and every timing check is
 * "closed within the bound plus a margin" (the machine is shared and noisy),
 * and "not before most of the bound" (the timeout, not something else, closed
 * the connection).
 */
import { connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createHttpServer } from '../../src/cli/serve.js'
import { Config } from '../../src/config/schema.js'
import { ADMIN_KEYS, basic, encodeForm, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'

const LIMITS: Config['http'] = {
  ...Config.parse({ issuer: 'https://limits.test' }).http,
  max_connections: 6,
  headers_timeout_ms: 1_000,
  request_timeout_ms: 2_000,
  keep_alive_timeout_ms: 500,
  idle_timeout_ms: 1_500,
}
/** Added to every bound: a busy machine may sweep, schedule and deliver late. */
const MARGIN_MS = 2_000

interface Probe {
  readonly socket: Socket
  /** Everything the server sent. */
  received(): string
  /** Resolves with ms from the connection to its close (by either side). */
  readonly closed: Promise<number>
}

const sockets = new Set<Socket>()
afterEach(() => {
  for (const s of sockets) s.destroy()
  sockets.clear()
})

function open(port: number): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    sockets.add(socket)
    let data = ''
    socket.on('data', (d: Buffer) => (data += d.toString('latin1')))
    socket.on('error', () => {})
    const started = performance.now()
    const closed = new Promise<number>((r) => socket.once('close', () => r(performance.now() - started)))
    socket.once('connect', () => resolve({ socket, received: () => data, closed }))
    socket.once('error', reject)
  })
}

/** Writes `chunks` one every `everyMs` while the socket is open. */
function trickle(socket: Socket, chunk: string, everyMs: number): void {
  const timer = setInterval(() => {
    if (socket.writable) socket.write(chunk)
    else clearInterval(timer)
  }, everyMs)
  socket.once('close', () => clearInterval(timer))
}

function expectClosedWithin(ms: number, bound: number): void {
  expect(ms).toBeGreaterThanOrEqual(bound * 0.9)
  expect(ms).toBeLessThan(bound + MARGIN_MS)
}

describe('HTTP server limits', () => {
  let b: TestBroker
  let server: Server
  let port: number
  let drops = 0
  let form: string

  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'warn' })
    form = encodeForm(b.exchangeForm(await b.userToken(), { scope: 'read' }))
    server = createHttpServer(b.mandate.app.fetch, '127.0.0.1', LIMITS, () => drops++)
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    port = (server.address() as AddressInfo).port
  })
  afterAll(async () => {
    server.closeAllConnections()
    await new Promise<void>((r) => server.close(() => r()))
    await b.close()
  })

  const tokenRequest = (body: string) =>
    `POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
    `Authorization: ${basic('secret-agent', SECRET)['authorization']!}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`

  it('answers a normal request', async () => {
    const p = await open(port)
    p.socket.write(tokenRequest(form))
    await expect.poll(() => p.received(), { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 200 [\s\S]*"access_token"/)
  })

  it('a client trickling its headers is answered 408 and closed within headers_timeout_ms', async () => {
    const p = await open(port)
    p.socket.write('POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\n')
    trickle(p.socket, 'X-Slow: a\r\n', 100)
    expectClosedWithin(await p.closed, LIMITS.headers_timeout_ms)
    expect(p.received()).toMatch(/^HTTP\/1\.1 408 /)
  })

  it('a client that connects and sends nothing is closed within headers_timeout_ms', async () => {
    const p = await open(port)
    expectClosedWithin(await p.closed, LIMITS.headers_timeout_ms)
  })

  it('a client trickling its body is answered 408 and closed within request_timeout_ms; nothing is issued', async () => {
    const issued = b.audit.events().filter((e) => e.type === 'token.issued').length
    const p = await open(port)
    p.socket.write(tokenRequest(form).slice(0, -form.length))
    trickle(p.socket, 'a', 100)
    expectClosedWithin(await p.closed, LIMITS.request_timeout_ms)
    expect(p.received()).toMatch(/^HTTP\/1\.1 408 /)
    expect(b.audit.events().filter((e) => e.type === 'token.issued').length).toBe(issued)
  })

  it('an idle keep-alive connection is closed within keep_alive_timeout_ms (+1 s) of its last answer', async () => {
    const p = await open(port)
    p.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    await expect.poll(() => p.received(), { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 200 /)
    const answeredAt = performance.now()
    await p.closed
    const idle = performance.now() - answeredAt
    expect(idle).toBeGreaterThanOrEqual(LIMITS.keep_alive_timeout_ms * 0.9)
    // Node keeps an idle socket up to 1 s past keepAliveTimeout.
    expect(idle).toBeLessThan(LIMITS.keep_alive_timeout_ms + 1_000 + MARGIN_MS)
  })

  it('the revocation feed stays open past every timeout: its heartbeats keep the connection busy', async () => {
    const p = await open(port)
    p.socket.write(`GET /revocations/feed HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${ADMIN_KEYS.auditor}\r\n\r\n`)
    await expect.poll(() => p.received(), { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 200 /)
    const lengthAt = p.received().length
    await new Promise((r) => setTimeout(r, LIMITS.request_timeout_ms + 500))
    expect(p.socket.destroyed).toBe(false)
    expect(p.received().length).toBeGreaterThan(lengthAt)
  })

  it('connections beyond max_connections are closed at once, unanswered; the others are served', async () => {
    const held: Probe[] = []
    for (let i = 0; i < LIMITS.max_connections; i++) held.push(await open(port))
    await expect.poll(() => new Promise<number>((r) => server.getConnections((_, n) => r(n))), { timeout: 5_000 }).toBe(LIMITS.max_connections)
    const dropsBefore = drops
    const extra = await open(port)
    expect(await extra.closed).toBeLessThan(MARGIN_MS)
    expect(extra.received()).toBe('')
    expect(drops).toBe(dropsBefore + 1)
    // A held connection is still served; once one closes, a new one is too.
    held[0]!.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    await expect.poll(() => held[0]!.received(), { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 200 /)
    held[1]!.socket.destroy()
    await expect.poll(() => new Promise<number>((r) => server.getConnections((_, n) => r(n))), { timeout: 5_000 }).toBe(LIMITS.max_connections - 1)
    const next = await open(port)
    next.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    await expect.poll(() => next.received(), { timeout: 10_000 }).toMatch(/^HTTP\/1\.1 200 /)
  })
})

describe('HTTP server idle timeout', () => {
  it('a client that stops reading a large answer is disconnected within idle_timeout_ms', async () => {
    // 16 MB: more than the socket buffers on both sides hold, so the write stalls.
    const big = Buffer.alloc(16 * 1024 * 1024, 97)
    const server = createHttpServer(
      () => new Response(big),
      '127.0.0.1',
      LIMITS,
      () => {},
    )
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    // Measured on the server's side: a paused client does not see the close until it reads again.
    const serverClosed = new Promise<number>((r) => server.once('connection', (s: Socket) => s.once('close', () => r(performance.now()))))
    try {
      const p = await open((server.address() as AddressInfo).port)
      p.socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
      await expect.poll(() => p.received().length, { timeout: 10_000 }).toBeGreaterThan(0)
      p.socket.pause()
      const pausedAt = performance.now()
      const stalled = (await serverClosed) - pausedAt
      expect(stalled).toBeGreaterThanOrEqual(LIMITS.idle_timeout_ms * 0.9)
      expect(stalled).toBeLessThan(LIMITS.idle_timeout_ms + MARGIN_MS)
    } finally {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    }
  })
})
