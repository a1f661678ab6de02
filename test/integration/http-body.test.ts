/**
 * The form body read straight from Node's IncomingMessage (no web Request
 * stream), over a real socket: capped at 64 KiB whether the size is declared
 * or the body is chunked, and a normal exchange still works.
 */
import { request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { basic, encodeForm, SECRET, startTestBroker, type TestBroker } from '../support/broker.js'

function post(port: number, body: string, chunked: boolean): Promise<{ status: number; text: string; cacheControl: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/oauth2/token',
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          ...basic('secret-agent', SECRET),
          ...(chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': Buffer.byteLength(body) }),
        },
      },
      (res) => {
        let text = ''
        res.on('data', (d: Buffer) => (text += d.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, cacheControl: res.headers['cache-control'] }))
      },
    )
    req.on('error', reject)
    if (chunked) {
      for (let i = 0; i < body.length; i += 8192) req.write(body.slice(i, i + 8192))
      req.end()
    } else req.end(body)
  })
}

describe('form bodies over a real socket', () => {
  let b: TestBroker
  let server: ServerType
  let port: number
  beforeAll(async () => {
    b = await startTestBroker({ logLevel: 'warn' })
    server = serve({ fetch: b.mandate.app.fetch, port: 0, hostname: '127.0.0.1' })
    await new Promise<void>((r) => server.once('listening', () => r()))
    port = (server.address() as AddressInfo).port
  })
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()))
    await b.close()
  })

  it.each([false, true])('exchanges a normal form (chunked: %s)', async (chunked) => {
    const res = await post(port, encodeForm(b.exchangeForm(await b.userToken(), { scope: 'read' })), chunked)
    expect(res.status, res.text).toBe(200)
    expect(JSON.parse(res.text)).toHaveProperty('access_token')
  })

  it.each([false, true])('answers 413 to a body over 64 KiB (chunked: %s), and nothing is issued', async (chunked) => {
    const form = encodeForm(b.exchangeForm(await b.userToken(), { scope: 'read', padding: 'a'.repeat(70_000) }))
    const res = await post(port, form, chunked)
    expect(res.status).toBe(413)
    expect(JSON.parse(res.text)).toEqual({ error: 'invalid_request', error_description: 'request body too large' })
    expect(res.cacheControl).toBe('no-store')
  })
})
