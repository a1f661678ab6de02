/**
 * What the hostile suite cannot send through `app.request` (fetch's Headers
 * refuse them): NUL, CR and LF in the Authorization header of a forward-auth
 * check, and a header line split inside the token, sent as raw bytes to the
 * broker's own HTTP server (`createHttpServer`, as `mandate serve` builds
 * it). Node's parser refuses each with 400 before the app sees it (a CRLF
 * inside the token leaves its second half on a line that is no header), so
 * the route never reads such a value; never 200, never a 5xx, and no log
 * line holds the token.
 */
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHttpServer } from '../../src/cli/serve.js'
import { AUDIENCE, basic, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'
import { expectToken } from '../unit/http/helpers.js'

let b: TestBroker
let server: Server
let token: string
beforeAll(async () => {
  b = await startTestBroker()
  server = createHttpServer(b.mandate.app.fetch, '127.0.0.1', b.mandate.config.http, () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  token = (await expectToken(await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET)))).access_token
})
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()))
  await b?.close()
})

/** Sends `head` as bytes and reads the status line of the first answer. */
function send(head: Buffer): Promise<number> {
  const { port } = server.address() as AddressInfo
  return new Promise((resolve, reject) => {
    // Written, not ended: a half-closed connection may be dropped before its answer. `Connection: close` ends it.
    const socket = connect(port, '127.0.0.1', () => socket.write(head))
    let text = ''
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
    socket.on('error', reject)
    socket.on('close', () => {
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1]
      if (status === undefined) reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 80))}`))
      else resolve(Number(status))
    })
  })
}

const request = (authorization: Buffer) =>
  Buffer.concat([
    Buffer.from(`GET /forward-auth?audience=${encodeURIComponent(AUDIENCE)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: `),
    authorization,
    Buffer.from('\r\n\r\n'),
  ])

describe('forward auth over the wire, with bytes no fetch can send', () => {
  it('the raw request with the token as is is allowed (the probe works)', async () => {
    const mark = b.logLines.length
    expect(await send(request(Buffer.from(`Bearer ${token}`)))).toBe(200)
    // Its request line: what the refusals below must not have.
    expect(b.logLines.slice(mark).some((l) => l.includes('/forward-auth'))).toBe(true)
  })

  it('NUL, a bare CR or a bare LF inside the token: 400 from the HTTP parser, before the app', async () => {
    const mark = b.logLines.length
    const at = Math.floor(token.length / 2)
    for (const bytes of ['\u0000', '\r', '\n', '\r\n', '\r\nX-Injected: 1\r\n', '\u0000\r\n']) {
      const value = Buffer.concat([Buffer.from(`Bearer ${token.slice(0, at)}`), Buffer.from(bytes, 'latin1'), Buffer.from(token.slice(at))])
      const status = await send(request(value))
      expect(status, JSON.stringify(bytes)).toBe(400)
    }
    // The app logs every request it answers: none of these reached it.
    expect(b.logLines.slice(mark).filter((l) => l.includes('/forward-auth'))).toEqual([])
    for (const line of b.logLines.slice(mark)) {
      expect(line).not.toContain(token.slice(0, at))
      expect(line).not.toContain(token.slice(at))
    }
  })
})
