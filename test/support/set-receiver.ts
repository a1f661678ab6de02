/**
 * A real SET receiver (RFC 8935) for the tests: a node:http server that
 * verifies each pushed SET with jose against the brokers' key sets (`typ`,
 * `iss`, `aud`, signature), records it, and answers as the test tells it.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose'

export interface ReceivedSet {
  readonly set: string
  readonly claims: JWTPayload & { events: Record<string, Record<string, unknown>>; sub_id: Record<string, unknown>; txn: string }
  readonly typ: string | undefined
  readonly authorization: string | undefined
  readonly contentType: string | undefined
  /** performance.now() when it arrived. */
  readonly at: number
  /** What the receiver answered. */
  readonly status: number
}

export interface SetReceiver {
  readonly url: string
  /** Every push that verified, in arrival order (retries included). */
  readonly received: ReceivedSet[]
  /** Pushes that did not verify (should stay empty): why. */
  readonly rejected: string[]
  /** Decides the answer to a verified SET (default 202). */
  respond: (set: ReceivedSet['claims'], attempt: number) => { status: number; body?: unknown }
  /** Resolves with the first verified push matching `match`, or rejects after `timeoutMs`. */
  waitFor(match: (r: ReceivedSet) => boolean, timeoutMs: number): Promise<ReceivedSet>
  close(): Promise<void>
}

const readBody = async (req: IncomingMessage): Promise<string> => {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** `jwks`: the brokers' key sets (read at each push: a second broker may join); `audience`: what `aud` must be; `currentDate`: the brokers' clock. */
export async function startSetReceiver(options: {
  jwks: () => Promise<JSONWebKeySet>
  audience: string
  issuer: string
  currentDate: Date
}): Promise<SetReceiver> {
  const received: ReceivedSet[] = []
  const rejected: string[] = []
  const attempts = new Map<string, number>()
  const waiters = new Set<() => void>()
  const receiver: SetReceiver = {
    url: '',
    received,
    rejected,
    respond: () => ({ status: 202 }),
    waitFor(match, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = received.find(match)
          if (hit === undefined) return false
          clearTimeout(timer)
          waiters.delete(check)
          resolve(hit)
          return true
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no matching SET within ${timeoutMs} ms (received ${received.length})`))
        }, timeoutMs)
        if (!check()) waiters.add(check)
      })
    },
    close: async () => {
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    },
  }
  const server: Server = createServer((req, res) => {
    void (async () => {
      const at = performance.now()
      const body = await readBody(req)
      let claims: ReceivedSet['claims']
      let typ: string | undefined
      try {
        typ = decodeProtectedHeader(body).typ
        const verified = await jwtVerify(body, createLocalJWKSet(await options.jwks()), {
          issuer: options.issuer,
          audience: options.audience,
          typ: 'secevent+jwt',
          currentDate: options.currentDate,
        })
        claims = verified.payload as ReceivedSet['claims']
      } catch (err) {
        rejected.push((err as Error).message)
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ err: 'invalid_key', description: 'did not verify' }))
        return
      }
      const jti = claims.jti ?? ''
      const attempt = (attempts.get(jti) ?? 0) + 1
      attempts.set(jti, attempt)
      const answer = receiver.respond(claims, attempt)
      received.push({
        set: body,
        claims,
        typ,
        authorization: req.headers.authorization,
        contentType: req.headers['content-type'],
        at,
        status: answer.status,
      })
      res
        .writeHead(answer.status, answer.body === undefined ? {} : { 'content-type': 'application/json' })
        .end(answer.body === undefined ? undefined : JSON.stringify(answer.body))
      for (const w of [...waiters]) w()
    })()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  Object.assign(receiver, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events` })
  return receiver
}
