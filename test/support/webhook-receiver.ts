/**
 * What the webhook tests share: a real HTTP receiver (node:http) that
 * verifies every delivery with the `standardwebhooks` package as a receiver
 * would, `mandate` run as a user runs it, and a bounded wait.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Webhook, WebhookVerificationError } from 'standardwebhooks'

/** One POST as the receiver saw it: raw body and headers, and the verdict of `standardwebhooks` with the receiver's secret. */
export interface Delivery {
  readonly id: string
  readonly body: string
  readonly headers: Record<string, string>
  readonly verified: boolean
  readonly error: string | undefined
  readonly status: number
}

export interface Receiver {
  readonly url: string
  readonly deliveries: Delivery[]
  /** The status of the next answers, in order; 200 once used up. */
  readonly statuses: number[]
  waitFor(check: (d: Delivery) => boolean, timeoutMs: number): Promise<Delivery>
  close(): Promise<void>
}

export const secret = () => `whsec_${randomBytes(32).toString('base64')}`

export async function startReceiver(verifySecret: string): Promise<Receiver> {
  const verifier = new Webhook(verifySecret)
  const deliveries: Delivery[] = []
  const statuses: number[] = []
  const waiters = new Set<() => void>()
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]))
      let verified = false
      let error: string | undefined
      try {
        verifier.verify(body, headers)
        verified = true
      } catch (err) {
        error = err instanceof WebhookVerificationError ? err.message : String(err)
      }
      const status = verified ? (statuses.shift() ?? 200) : 401
      deliveries.push({ id: headers['webhook-id'] ?? '', body, headers, verified, error, status })
      res.writeHead(status).end()
      for (const w of [...waiters]) w()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/hook`,
    deliveries,
    statuses,
    waitFor: (check, timeoutMs) =>
      new Promise((resolve, reject) => {
        const look = () => {
          const found = deliveries.find(check)
          if (found === undefined) return false
          clearTimeout(timer)
          waiters.delete(onDelivery)
          resolve(found)
          return true
        }
        const onDelivery = () => void look()
        const timer = setTimeout(() => {
          waiters.delete(onDelivery)
          reject(new Error(`no matching delivery within ${timeoutMs} ms (${deliveries.length} received)`))
        }, timeoutMs)
        if (!look()) waiters.add(onDelivery)
      }),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  }
}

const bin = join(import.meta.dirname, '../../bin/mandate.js')

/** Runs `mandate` as a user does (the sources through tsx when dist/ is stale), with no profile and no MANDATE_* but `env`. */
export function mandate(args: string[], env: Record<string, string>, xdg: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MANDATE_')))
  const child = spawn(process.execPath, [bin, ...args], { env: { ...base, XDG_CONFIG_HOME: xdg, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })))
}

/** Waits (bounded) until `check` holds; polls every 10 ms. */
export async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

export const payload = (d: Delivery) => JSON.parse(d.body) as { type: string; timestamp: string; data: Record<string, unknown> }
