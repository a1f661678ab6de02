/**
 * Fetching upstream key sets against real HTTP servers on 127.0.0.1 that the
 * test controls: `fetchLimited`'s bounds, and `createRemoteKeyResolver`'s
 * cache, unknown-`kid` refetch, cooldown, last-good set and discovery (5 s,
 * 256 KiB, one refetch per 30 s per issuer, last good key set for up to an
 * hour); the key checks applied to each fetched set and the `max_keys` cut;
 * and how long a key removed from the JWKS keeps verifying, cached subject
 * tokens included.
 *
 * Time: the resolver reads only the injected clock (epoch ms). `TestClock`
 * also moves a faked `Date` with it, so that nothing reading `Date.now()`
 * disagrees (only `Date` is faked: sockets and timeouts stay real). One test
 * uses the injected clock alone, on purpose.
 */
import { generateKeyPairSync } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose'
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { createMemoryAuditLog } from '../../src/audit/memory.js'
import { composeMandate } from '../../src/compose.js'
import { Config } from '../../src/config/schema.js'
import { createMemoryRevocationLog } from '../../src/revocation/log-memory.js'
import { createLogger } from '../../src/telemetry/log.js'
import { fetchLimited, UpstreamUnavailable } from '../../src/tokens/fetch-limited.js'
import { JwtError } from '../../src/tokens/jws.js'
import type { SigningKeys } from '../../src/tokens/keys.js'
import { createSubjectVerifier } from '../../src/tokens/subject.js'
import { createIssuerRegistry, createRemoteKeyResolver, DEFAULT_JWKS_POLICY, type JwksPolicy, type TrustedIssuer } from '../../src/tokens/upstream.js'
import { basic, encodeForm, GRANT_TYPE_TOKEN_EXCHANGE, SECRET, secretAgentPolicy, TOKEN_TYPE } from '../support/broker.js'
import { captureLogs } from '../support/log-sink.js'
import { signToken, userAccessToken } from '../support/tokens.js'

const T0 = Date.UTC(2027, 0, 1) // epoch ms the clocks start at
const SECOND = 1000
const POLICY: JwksPolicy = DEFAULT_JWKS_POLICY // 5 s, 256 KiB, 100 keys, 30 s cooldown, 10 min cache, 1 h stale

type Handler = (req: IncomingMessage, res: ServerResponse, path: string) => void

interface TestServer {
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  readonly url: string
  /** Path of every request received, in order. */
  readonly hits: string[]
  count(path: string): number
  /** Replace the request handler (the server "changes its mind"). */
  handle(handler: Handler): void
  close(): Promise<void>
}

const servers: TestServer[] = []

async function startServer(handler: Handler): Promise<TestServer> {
  let current = handler
  const hits: string[] = []
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname
    hits.push(path)
    current(req, res, path)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  let closed = false
  const s: TestServer = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    count: (path) => hits.filter((h) => h === path).length,
    handle: (h) => {
      current = h
    },
    close: async () => {
      if (closed) return
      closed = true
      const done = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
      await done
    },
  }
  servers.push(s)
  return s
}

function json(res: ServerResponse, body: unknown, status = 200): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

/** Serves `jwks()` at /jwks (read on every request, so the test can rotate keys); 404 elsewhere. */
function jwksAt(jwks: () => unknown): Handler {
  return (_req, res, path) => {
    if (path === '/jwks') json(res, jwks())
    else json(res, { error: 'not_found' }, 404)
  }
}

class TestClock {
  private t = T0
  constructor() {
    vi.setSystemTime(this.t)
  }
  readonly now = (): number => this.t
  advance(ms: number): void {
    this.t += ms
    vi.setSystemTime(this.t)
  }
}

function trusted(issuer: string, jwksUri: string | undefined): TrustedIssuer {
  return { issuer, jwksUri, algorithms: ['ES256'], audience: 'https://mandate.test', typ: ['at+jwt'] }
}

const header = (kid: string) => ({ alg: 'ES256', kid, typ: 'at+jwt' })

let keyA: JWK
let keyB: JWK
let keyC: JWK
/** Signs with the private half of keyA. */
let privateA: CryptoKey

async function keyPair(kid: string): Promise<{ jwk: JWK; privateKey: CryptoKey }> {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
  return { jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }, privateKey }
}

beforeAll(async () => {
  const a = await keyPair('key-a')
  keyA = a.jwk
  privateA = a.privateKey
  keyB = (await keyPair('key-b')).jwk
  keyC = (await keyPair('key-c')).jwk
})

/** A logger whose lines the test reads back, parsed. */
function warnings(): { logger: ReturnType<typeof createLogger>; lines: () => Record<string, unknown>[] } {
  const { lines, stream } = captureLogs('jwks-fetch test')
  return { logger: createLogger('warn', stream), lines: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) }
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] })
})

afterEach(async () => {
  vi.useRealTimers()
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

describe('fetchLimited', () => {
  const limits = { timeoutMs: 200, maxBytes: 1024 }

  it('returns a 200 body in memory', async () => {
    const server = await startServer((_req, res) => json(res, { keys: [] }))
    const response = await fetchLimited(`${server.url}/doc`, {}, limits)
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ keys: [] })
  })

  it('accepts a body of exactly maxBytes and refuses one byte more, declared or streamed', async () => {
    let size = limits.maxBytes
    let chunked = false
    const server = await startServer((_req, res) => {
      const body = 'x'.repeat(size)
      if (chunked) {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write(body.slice(0, 100))
        res.end(body.slice(100))
      } else {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': size })
        res.end(body)
      }
    })
    expect((await (await fetchLimited(`${server.url}/doc`, {}, limits)).text()).length).toBe(limits.maxBytes)
    chunked = true
    expect((await (await fetchLimited(`${server.url}/doc`, {}, limits)).text()).length).toBe(limits.maxBytes)

    size = limits.maxBytes + 1
    await expect(fetchLimited(`${server.url}/doc`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
    chunked = false
    await expect(fetchLimited(`${server.url}/doc`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
  })

  it('refuses an oversize body delimited by the connection closing (no length, not chunked)', async () => {
    const server = await startServer((req) => {
      req.socket.end(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${'x'.repeat(4096)}`)
    })
    await expect(fetchLimited(`${server.url}/doc`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
  })

  it('does not follow a redirect', async () => {
    const server = await startServer((_req, res, path) => {
      if (path === '/moved') {
        res.writeHead(302, { location: '/target' })
        res.end()
      } else json(res, { keys: [] })
    })
    await expect(fetchLimited(`${server.url}/moved`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
    expect(server.hits).toEqual(['/moved'])
  })

  it('refuses any status but 200', async () => {
    const server = await startServer((_req, res) => json(res, { keys: [] }, 201))
    await expect(fetchLimited(`${server.url}/doc`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
  })

  it('times out on a server that never answers', async () => {
    const server = await startServer(() => {
      // never answers
    })
    const started = performance.now()
    await expect(fetchLimited(`${server.url}/doc`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
    const elapsed = performance.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(150)
    expect(elapsed).toBeLessThan(2_000)
    expect(server.hits).toEqual(['/doc'])
  })

  it('times out on a server that sends headers and then stalls the body', async () => {
    const server = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"keys":[')
    })
    const started = performance.now()
    await expect(fetchLimited(`${server.url}/doc`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
    expect(performance.now() - started).toBeLessThan(2_000)
  })

  it('fails with UpstreamUnavailable when nothing listens', async () => {
    const server = await startServer(() => undefined)
    await server.close()
    await expect(fetchLimited(`${server.url}/doc`, {}, limits)).rejects.toBeInstanceOf(UpstreamUnavailable)
  })
})

describe('createRemoteKeyResolver', () => {
  it('finds a key by kid and serves later lookups from cache', async () => {
    const clock = new TestClock()
    const server = await startServer(jwksAt(() => ({ keys: [keyA] })))
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)

    const key = await resolve(header('key-a'))
    expect(key.type).toBe('public')
    expect(key.export({ format: 'jwk' })).toMatchObject({ kty: 'EC', crv: 'P-256', x: keyA.x, y: keyA.y })
    clock.advance(5 * SECOND)
    await resolve(header('key-a'))
    expect(server.count('/jwks')).toBe(1)
  })

  it('selects by the whole kid, however long', async () => {
    const clock = new TestClock()
    const kid = `${'k'.repeat(300)}-a`
    const server = await startServer(
      jwksAt(() => ({
        keys: [
          { ...keyA, kid },
          { ...keyB, kid: `${'k'.repeat(300)}-b` },
        ],
      })),
    )
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
    expect((await resolve(header(kid))).export({ format: 'jwk' })).toMatchObject({ x: keyA.x })
  })

  it('answers concurrent first lookups from the one fetch in flight (none refused while it runs)', async () => {
    const clock = new TestClock()
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    const server = await startServer((_req, res, path) => {
      if (path !== '/jwks') return json(res, { error: 'not_found' }, 404)
      void gate.then(() => json(res, { keys: [keyA] }))
    })
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
    const lookups = Array.from({ length: 8 }, () => resolve(header('key-a')))
    await new Promise((r) => setTimeout(r, 50))
    release()
    const keys = await Promise.all(lookups)
    expect(keys.every((k) => k.asymmetricKeyType === 'ec')).toBe(true)
    expect(server.count('/jwks')).toBe(1)
  })

  it('refetches once for an unknown kid after the cooldown, and not again within it', async () => {
    const clock = new TestClock()
    let keys = [keyA]
    const server = await startServer(jwksAt(() => ({ keys })))
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)

    await resolve(header('key-a'))
    expect(server.count('/jwks')).toBe(1)

    // Within the cooldown of the first fetch: an unknown kid costs no request.
    keys = [keyA, keyB]
    clock.advance(SECOND)
    await expect(resolve(header('key-b'))).rejects.toMatchObject({ name: 'JwtError', code: 'unknown_kid' })
    expect(server.count('/jwks')).toBe(1)

    // Past it: one refetch finds the rotated-in key.
    clock.advance(POLICY.cooldownMs)
    const key = await resolve(header('key-b'))
    expect(key.export({ format: 'jwk' })).toMatchObject({ x: keyB.x, y: keyB.y })
    expect(server.count('/jwks')).toBe(2)

    // A second unknown kid within the cooldown of that refetch does not hit the server.
    clock.advance(SECOND)
    await expect(resolve(header('key-c'))).rejects.toBeInstanceOf(JwtError)
    await expect(resolve(header('no-such-kid'))).rejects.toMatchObject({ code: 'unknown_kid' })
    expect(server.count('/jwks')).toBe(2)

    // After the next cooldown, one more.
    keys = [keyA, keyB, keyC]
    clock.advance(POLICY.cooldownMs)
    await resolve(header('key-c'))
    expect(server.count('/jwks')).toBe(3)
  })

  it('lets the injected clock alone decide when an unknown kid may refetch', async () => {
    // No Date faking here: only the clock the resolver was given moves.
    vi.useRealTimers()
    let t = T0
    let keys = [keyA]
    const server = await startServer(jwksAt(() => ({ keys })))
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, () => t)

    await resolve(header('key-a'))
    keys = [keyA, keyB]
    t += POLICY.cooldownMs + SECOND
    await expect(resolve(header('key-b'))).resolves.toBeDefined()
    expect(server.count('/jwks')).toBe(2)
  })

  it('refuses a JWKS over max_bytes (256 KiB)', async () => {
    const clock = new TestClock()
    const padding = 'x'.repeat(POLICY.maxBytes)
    const server = await startServer(jwksAt(() => ({ keys: [keyA], padding })))
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
    await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
  })

  it('refuses a streamed JWKS over max_bytes that declares no length', async () => {
    const clock = new TestClock()
    const server = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write(`{"keys":[${JSON.stringify(keyA)}],"padding":"`)
      for (let i = 0; i < 5; i++) res.write('x'.repeat(64 * 1024))
      res.end('"}')
    })
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
    await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
  })

  it('keeps the first max_keys usable keys of a larger JWKS, cuts the rest, and warns once per fetch', async () => {
    const clock = new TestClock()
    const log = warnings()
    const policy = { ...POLICY, maxKeys: 3 }
    // An ignored entry does not count against the bound: five entries, the third unusable.
    const keys = [
      { ...keyA, kid: 'k0' },
      { ...keyA, kid: 'k1' },
      { ...keyA, kid: 'weak', e: 'Aw', kty: 'RSA' },
      { ...keyA, kid: 'k2' },
      { ...keyA, kid: 'k3' },
    ]
    const server = await startServer(jwksAt(() => ({ keys })))
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), policy, clock.now, log.logger)

    await expect(resolve(header('k0'))).resolves.toBeDefined()
    await expect(resolve(header('k2'))).resolves.toBeDefined()
    await expect(resolve(header('k3'))).rejects.toMatchObject({ code: 'unknown_kid' })
    expect(log.lines()).toEqual([
      expect.objectContaining({
        level: 'warn',
        issuer: server.url,
        cut: 1,
        max_keys: 3,
        ignored_count: 1,
        ignored: [expect.objectContaining({ kid: 'weak' })],
      }),
    ])

    // The next fetch warns again; nothing in between does.
    clock.advance(POLICY.cacheMaxAgeMs + SECOND)
    await resolve(header('k0'))
    expect(server.count('/jwks')).toBe(2)
    expect(log.lines()).toHaveLength(2)
  })

  it('ignores weak, malformed, private and unfitting keys with one warning naming kid and reason (no key material), and uses the rest', async () => {
    const clock = new TestClock()
    const log = warnings()
    const rsa = (options: { modulusLength: number; publicExponent?: number }) => generateKeyPairSync('rsa', options).publicKey.export({ format: 'jwk' })
    const good = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' })
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const ignored = [
      { ...rsa({ modulusLength: 2048, publicExponent: 3 }), kid: 'rsa-e3', alg: 'RS256' },
      { ...good, e: 'AAEAAQ', kid: 'rsa-e-leading-zero' },
      { ...rsa({ modulusLength: 1024 }), kid: 'rsa-1024' },
      { ...generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey.export({ format: 'jwk' }), kid: 'secp256k1' },
      { ...p256.privateKey.export({ format: 'jwk' }), kid: 'private' },
      { ...p256.publicKey.export({ format: 'jwk' }), kid: 'es384-on-p256', alg: 'ES384' },
      { ...keyA, kid: 'off-curve', y: keyA.x },
      { kid: 'no-kty', n: good.n, e: 'AQAB' },
    ]
    // Keys for another purpose are skipped without a warning.
    const otherPurpose = [
      { ...good, kid: 'enc', use: 'enc' },
      { ...good, kid: 'wrap', key_ops: ['wrapKey'] },
      { ...good, kid: 'oaep', alg: 'RSA-OAEP-256' },
    ]
    const server = await startServer(jwksAt(() => ({ keys: [...ignored, ...otherPurpose, keyA, { ...good, kid: 'rsa-good' }] })))
    const issuer = { ...trusted(server.url, `${server.url}/jwks`), algorithms: ['ES256', 'RS256', 'ES384'] }
    const { resolve } = createRemoteKeyResolver(issuer, POLICY, clock.now, log.logger)

    await expect(resolve(header('key-a'))).resolves.toBeDefined()
    await expect(resolve({ alg: 'RS256', kid: 'rsa-good' })).resolves.toBeDefined()
    // Each probed with an alg its key type would fit.
    const algFor = (k: Record<string, unknown>) => (k['alg'] === 'ES384' ? 'ES384' : k['kty'] === 'EC' ? 'ES256' : 'RS256')
    for (const k of [...ignored, ...otherPurpose]) {
      await expect(resolve({ alg: algFor(k), kid: k.kid })).rejects.toMatchObject({ code: 'unknown_kid' })
    }
    const lines = log.lines()
    expect(lines).toHaveLength(1)
    const line = lines[0]!
    expect(line).toMatchObject({ level: 'warn', issuer: server.url, cut: 0, ignored_count: ignored.length })
    const reasons = Object.fromEntries((line['ignored'] as { kid: string; reason: string }[]).map((i) => [i.kid, i.reason]))
    expect(Object.keys(reasons).sort()).toEqual(ignored.map((k) => k.kid).sort())
    expect(reasons['rsa-e3']).toMatch(/exponent/)
    expect(reasons['rsa-1024']).toMatch(/1024 bits/)
    const text = JSON.stringify(line)
    for (const k of ignored)
      for (const m of ['n', 'x', 'y', 'd'] as const)
        if (typeof (k as Record<string, unknown>)[m] === 'string') expect(text).not.toContain((k as Record<string, string>)[m])
  })

  it('refuses a body that is not a key set', async () => {
    const clock = new TestClock()
    const server = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('<html>not json</html>')
    })
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
    await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
  })

  it('times out on a JWKS server that never answers', async () => {
    const clock = new TestClock()
    const server = await startServer(() => {
      // never answers
    })
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), { ...POLICY, timeoutMs: 200 }, clock.now)
    const started = performance.now()
    await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
    expect(performance.now() - started).toBeLessThan(2_000)
  })

  it('does not follow a redirect from the JWKS location', async () => {
    const clock = new TestClock()
    const server = await startServer((_req, res, path) => {
      if (path === '/jwks') {
        res.writeHead(302, { location: `/elsewhere` })
        res.end()
      } else json(res, { keys: [keyA] })
    })
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
    await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
    expect(server.hits).toEqual(['/jwks'])
  })

  it('after a failed first fetch, makes no new attempt within the cooldown, and one after it', async () => {
    const clock = new TestClock()
    let up = false
    const server = await startServer((_req, res) => (up ? json(res, { keys: [keyA] }) : json(res, { error: 'down' }, 500)))
    const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)

    await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
    expect(server.count('/jwks')).toBe(1)
    up = true
    clock.advance(POLICY.cooldownMs - SECOND)
    await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
    expect(server.count('/jwks')).toBe(1)

    clock.advance(SECOND)
    await expect(resolve(header('key-a'))).resolves.toBeDefined()
    expect(server.count('/jwks')).toBe(2)
  })

  describe('while the issuer is down', () => {
    it('serves the last good set (server answers 500) and refuses it once it is older than staleMaxAgeMs', async () => {
      const clock = new TestClock()
      let down = false
      const server = await startServer((req, res, path) => (down ? json(res, { error: 'down' }, 500) : jwksAt(() => ({ keys: [keyA] }))(req, res, path)))
      const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now) // fetched at T0

      await resolve(header('key-a'))
      down = true

      // Past the cache age: the refresh fails, the last good set answers.
      clock.advance(POLICY.cacheMaxAgeMs + SECOND)
      await expect(resolve(header('key-a'))).resolves.toBeDefined()
      expect(server.count('/jwks')).toBe(2)

      // Still within the stale window (counted from the last good fetch).
      clock.advance(POLICY.staleMaxAgeMs - POLICY.cacheMaxAgeMs - 2 * SECOND) // T0 + stale - 1 s
      await expect(resolve(header('key-a'))).resolves.toBeDefined()

      // The last good set is now over an hour old: refused.
      clock.advance(2 * SECOND) // T0 + stale + 1 s
      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
    })

    it('refuses the last good set after staleMaxAgeMs when the server is closed', async () => {
      const clock = new TestClock()
      const server = await startServer(jwksAt(() => ({ keys: [keyA] })))
      const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)

      await resolve(header('key-a'))
      await server.close()

      clock.advance(POLICY.cacheMaxAgeMs + SECOND)
      await expect(resolve(header('key-a'))).resolves.toBeDefined()

      clock.advance(POLICY.staleMaxAgeMs - POLICY.cacheMaxAgeMs) // T0 + stale + 1 s
      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
      // And keeps refusing; an unknown kid too.
      clock.advance(POLICY.cooldownMs)
      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
    })

    it('uses the new set once the issuer is back', async () => {
      const clock = new TestClock()
      let state: 'a' | 'down' | 'b' = 'a'
      const server = await startServer((req, res, path) =>
        state === 'down' ? json(res, {}, 503) : jwksAt(() => ({ keys: [state === 'a' ? keyA : keyB] }))(req, res, path),
      )
      const { resolve } = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
      await resolve(header('key-a'))
      state = 'down'
      clock.advance(POLICY.cacheMaxAgeMs + SECOND)
      await expect(resolve(header('key-a'))).resolves.toBeDefined()
      state = 'b'
      clock.advance(POLICY.cacheMaxAgeMs + SECOND)
      await expect(resolve(header('key-b'))).resolves.toBeDefined()
      await expect(resolve(header('key-a'))).rejects.toMatchObject({ code: 'unknown_kid' })
    })
  })

  describe('discovery (no jwks_uri configured)', () => {
    function metadata(server: TestServer, paths: Record<string, 'good' | 'wrong-issuer'>): Handler {
      return (_req, res, path) => {
        const kind = paths[path]
        if (kind !== undefined) {
          json(res, { issuer: kind === 'good' ? server.url : `${server.url}/someone-else`, jwks_uri: `${server.url}/jwks` })
        } else if (path === '/jwks') json(res, { keys: [keyA] })
        else json(res, { error: 'not_found' }, 404)
      }
    }

    it('finds jwks_uri through /.well-known/oauth-authorization-server, once', async () => {
      const clock = new TestClock()
      const server = await startServer(() => undefined)
      server.handle(metadata(server, { '/.well-known/oauth-authorization-server': 'good' }))
      const { resolve } = createRemoteKeyResolver(trusted(server.url, undefined), POLICY, clock.now)

      await expect(resolve(header('key-a'))).resolves.toBeDefined()
      clock.advance(POLICY.cacheMaxAgeMs + SECOND)
      await resolve(header('key-a'))
      expect(server.hits).toEqual(['/.well-known/oauth-authorization-server', '/jwks', '/jwks'])
    })

    it('falls back to /.well-known/openid-configuration when the issuer has no RFC 8414 metadata', async () => {
      const clock = new TestClock()
      const server = await startServer(() => undefined)
      server.handle(metadata(server, { '/.well-known/openid-configuration': 'good' }))
      const { resolve } = createRemoteKeyResolver(trusted(server.url, undefined), POLICY, clock.now)

      await expect(resolve(header('key-a'))).resolves.toBeDefined()
      expect(server.hits).toEqual(['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration', '/jwks'])
    })

    it('discovers for an issuer with a path (RFC 8414 §3.1 insertion, OIDC appending)', async () => {
      const clock = new TestClock()
      const server = await startServer(() => undefined)
      const issuer = `${server.url}/tenant-1`
      server.handle((_req, res, path) => {
        if (path === '/tenant-1/.well-known/openid-configuration') json(res, { issuer, jwks_uri: `${server.url}/jwks` })
        else if (path === '/jwks') json(res, { keys: [keyA] })
        else json(res, {}, 404)
      })
      const { resolve } = createRemoteKeyResolver(trusted(issuer, undefined), POLICY, clock.now)
      await expect(resolve(header('key-a'))).resolves.toBeDefined()
      expect(server.hits).toEqual(['/.well-known/oauth-authorization-server/tenant-1', '/tenant-1/.well-known/openid-configuration', '/jwks'])
    })

    it('refuses metadata whose issuer differs from the configured one', async () => {
      const clock = new TestClock()
      const server = await startServer(() => undefined)
      server.handle(metadata(server, { '/.well-known/oauth-authorization-server': 'wrong-issuer', '/.well-known/openid-configuration': 'wrong-issuer' }))
      const { resolve } = createRemoteKeyResolver(trusted(server.url, undefined), POLICY, clock.now)
      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
      expect(server.count('/jwks')).toBe(0)
    })

    it('refuses a jwks_uri that is neither https nor loopback http', async () => {
      const clock = new TestClock()
      const server = await startServer((_req, res, path) => {
        if (path === '/.well-known/oauth-authorization-server') json(res, { issuer: server.url, jwks_uri: 'http://keys.example/jwks' })
        else json(res, {}, 404)
      })
      const { resolve } = createRemoteKeyResolver(trusted(server.url, undefined), POLICY, clock.now)
      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
    })

    it('does not follow a redirect from the metadata location', async () => {
      const clock = new TestClock()
      const server = await startServer(() => undefined)
      server.handle((_req, res, path) => {
        if (path.startsWith('/.well-known/')) {
          res.writeHead(302, { location: '/moved-metadata' })
          res.end()
        } else if (path === '/moved-metadata') json(res, { issuer: server.url, jwks_uri: `${server.url}/jwks` })
        else json(res, { keys: [keyA] })
      })
      const { resolve } = createRemoteKeyResolver(trusted(server.url, undefined), POLICY, clock.now)
      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
      expect(server.count('/moved-metadata')).toBe(0)
      expect(server.count('/jwks')).toBe(0)
    })

    it('retries discovery after a failure, but not within the cooldown', async () => {
      const clock = new TestClock()
      let up = false
      const server = await startServer(() => undefined)
      const good = metadata(server, { '/.well-known/oauth-authorization-server': 'good' })
      server.handle((req, res, path) => (up ? good(req, res, path) : json(res, {}, 500)))
      const { resolve } = createRemoteKeyResolver(trusted(server.url, undefined), POLICY, clock.now)

      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
      const afterFirst = server.hits.length
      expect(afterFirst).toBeGreaterThan(0)
      clock.advance(SECOND)
      await expect(resolve(header('key-a'))).rejects.toBeInstanceOf(UpstreamUnavailable)
      expect(server.hits.length).toBe(afterFirst)

      up = true
      clock.advance(POLICY.cooldownMs)
      await expect(resolve(header('key-a'))).resolves.toBeDefined()
    })
  })
})

describe('a key removed from the JWKS', () => {
  it('stops being held at the next refresh; an unchanged key keeps its key object (no re-import)', async () => {
    const clock = new TestClock()
    let keys = [keyA, keyB]
    const server = await startServer(jwksAt(() => ({ keys })))
    const resolver = createRemoteKeyResolver(trusted(server.url, `${server.url}/jwks`), POLICY, clock.now)
    const a = await resolver.resolve(header('key-a'))
    const b = await resolver.resolve(header('key-b'))
    expect(await resolver.holds(a)).toBe(true)

    keys = [keyB]
    clock.advance(POLICY.cacheMaxAgeMs)
    expect(await resolver.holds(a)).toBe(true) // not refreshed yet: the set is exactly cacheMaxAgeMs old
    expect(server.count('/jwks')).toBe(1)
    clock.advance(1)
    expect(await resolver.holds(a)).toBe(false)
    expect(server.count('/jwks')).toBe(2)
    expect(await resolver.holds(b)).toBe(true)
    expect(await resolver.resolve(header('key-b'))).toBe(b)
  })

  describe('and a subject token verified with it before (verified-subject cache)', () => {
    const NOW = Math.floor(T0 / 1000)

    function subjects(issuer: TrustedIssuer, clock: TestClock) {
      const selfKeys = { byKid: () => undefined } as unknown as SigningKeys
      return createSubjectVerifier({
        selfIssuer: 'https://mandate.test',
        selfKeys,
        users: createIssuerRegistry([issuer], (t) => createRemoteKeyResolver(t, POLICY, clock.now)),
        now: () => Math.floor(clock.now() / 1000),
        skew: 30,
        maxAge: 86_400,
        cacheSize: 100,
      })
    }

    const userToken = (iss: string) =>
      userAccessToken(
        { privateKey: privateA, alg: 'ES256', kid: 'key-a' },
        { iss, sub: 'alice', aud: 'https://mandate.test' },
        { now: NOW, lifetime: 4 * 3600 },
      )

    it('is refused from the refresh after the removal on, though still unexpired and cached', async () => {
      const clock = new TestClock()
      let keys = [keyA, keyB]
      const server = await startServer(jwksAt(() => ({ keys })))
      const verifier = subjects(trusted(server.url, `${server.url}/jwks`), clock)
      const token = await userToken(server.url)
      await expect(verifier.verify(token)).resolves.toMatchObject({ kind: 'user', sub: 'alice' })

      keys = [keyB]
      // Worst case: removed just after a fetch, the key is trusted until the set is cacheMaxAgeMs old.
      clock.advance(POLICY.cacheMaxAgeMs)
      await expect(verifier.verify(token)).resolves.toMatchObject({ kind: 'user' })
      expect(server.count('/jwks')).toBe(1)

      clock.advance(1)
      await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'invalid_request' })
      expect(server.count('/jwks')).toBe(2)
      clock.advance(SECOND)
      await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'invalid_request' })
    })

    it('stays accepted from the cache across refreshes that keep its key', async () => {
      const clock = new TestClock()
      let keys = [keyA]
      const server = await startServer(jwksAt(() => ({ keys })))
      const verifier = subjects(trusted(server.url, `${server.url}/jwks`), clock)
      const token = await userToken(server.url)
      await verifier.verify(token)
      keys = [keyB, keyA]
      clock.advance(POLICY.cacheMaxAgeMs + SECOND)
      await expect(verifier.verify(token)).resolves.toMatchObject({ kind: 'user' })
      expect(server.count('/jwks')).toBe(2)
    })

    it('while the issuer is down, is accepted until the last good set is too old to serve, then answered 503', async () => {
      const clock = new TestClock()
      let down = false
      const server = await startServer((req, res, path) => (down ? json(res, {}, 503) : jwksAt(() => ({ keys: [keyA] }))(req, res, path)))
      const verifier = subjects(trusted(server.url, `${server.url}/jwks`), clock)
      const token = await userToken(server.url)
      await verifier.verify(token)
      down = true
      const usable = Math.max(POLICY.cacheMaxAgeMs, POLICY.staleMaxAgeMs)
      clock.advance(usable)
      await expect(verifier.verify(token)).resolves.toMatchObject({ kind: 'user' })
      clock.advance(1)
      await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'temporarily_unavailable' })
    })
  })
})

describe('a user issuer from the config file, its keys fetched over HTTP', () => {
  const BROKER = 'https://mandate.test'
  const AUDIENCE = 'https://api.test'
  const NOW = Math.floor(T0 / 1000)

  /** A broker composed from config whose one subject issuer is `server`, with `issuerConfig` on top; answers the exchange of `token`. */
  async function exchangeAt(
    server: TestServer,
    issuerConfig: Record<string, unknown>,
    token: string,
    limits: Record<string, unknown> = {},
    logLines: string[] = [],
  ): Promise<Response> {
    const clock = new TestClock()
    const dir = await mkdtemp(join(tmpdir(), 'mandate-jwks-'))
    await mkdir(join(dir, 'policies'))
    await writeFile(join(dir, 'policies', 'agent.yaml'), secretAgentPolicy('agent', server.url))
    const config = Config.parse({
      issuer: BROKER,
      policies_dir: join(dir, 'policies'),
      data_dir: join(dir, 'data'),
      signing: { generate_if_missing: true },
      trust: { subjects: [{ issuer: server.url, jwks_uri: `${server.url}/jwks`, algorithms: ['ES256'], ...issuerConfig }] },
      limits,
    })
    const mandate = await composeMandate(config, {
      dev: false,
      logger: createLogger('warn', captureLogs('jwks-fetch broker', logLines).stream),
      clock: clock.now,
      audit: createMemoryAuditLog(),
      revocationLog: createMemoryRevocationLog(),
    })
    try {
      return await mandate.app.request('/oauth2/token', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('agent', SECRET) },
        body: encodeForm({ grant_type: GRANT_TYPE_TOKEN_EXCHANGE, subject_token: token, subject_token_type: TOKEN_TYPE.accessToken, audience: AUDIENCE }),
      })
    } finally {
      await mandate.close()
      await rm(dir, { recursive: true, force: true })
    }
  }

  const sign = (iss: string, claims: Record<string, unknown>, typ: string) =>
    signToken({ privateKey: privateA, alg: 'ES256', kid: 'key-a' }, { sub: 'alice', iat: NOW, exp: NOW + 3600, ...claims, iss, aud: BROKER }, { typ })

  it('refuses its ID tokens unless accept_id_tokens is set', async () => {
    const server = await startServer(jwksAt(() => ({ keys: [keyA] })))
    const idToken = await sign(server.url, { nonce: 'n-0S6_WzA2Mj', azp: 'web-app' }, 'JWT')
    const refused = await exchangeAt(server, { typ: null }, idToken)
    expect({ status: refused.status, error: ((await refused.json()) as { error?: string }).error }).toEqual({ status: 400, error: 'invalid_request' })
    const accepted = await exchangeAt(server, { typ: null, accept_id_tokens: true }, idToken)
    expect(accepted.status).toBe(200)
  })

  it('refuses a token valid for longer than limits.subject_token_max_age_seconds (default 24 h)', async () => {
    const server = await startServer(jwksAt(() => ({ keys: [keyA] })))
    const twoDays = await sign(server.url, { exp: NOW + 2 * 86_400 }, 'at+jwt')
    expect((await exchangeAt(server, {}, twoDays)).status).toBe(400)
    expect((await exchangeAt(server, {}, twoDays, { subject_token_max_age_seconds: 3 * 86_400 })).status).toBe(200)
  })

  it('warns in the broker log about a weak key in the fetched JWKS, and still uses the good ones', async () => {
    const weak = { ...generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 }).publicKey.export({ format: 'jwk' }), kid: 'weak-e' }
    const server = await startServer(jwksAt(() => ({ keys: [weak, keyA] })))
    const lines: string[] = []
    const res = await exchangeAt(server, {}, await sign(server.url, {}, 'at+jwt'), {}, lines)
    expect(res.status).toBe(200)
    const warnings = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'JWKS keys ignored')
    expect(warnings).toEqual([
      expect.objectContaining({ level: 'warn', module: 'jwks', issuer: server.url, ignored: [expect.objectContaining({ kid: 'weak-e' })] }),
    ])
  })
})
