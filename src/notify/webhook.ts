/**
 * One webhook delivery: the entry's body POSTed with the Standard Webhooks
 * headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`: v1,
 * HMAC-SHA256 over `id.timestamp.body`), signed at send time so that a
 * retry carries a fresh timestamp a receiver's replay window accepts.
 */
import { Webhook } from 'standardwebhooks'
import type { PushOutcome } from '../ssf/push.js'

export interface WebhookSendOptions {
  readonly timeoutMs: number
  /** Aborts the request (the broker is stopping). */
  readonly signal: AbortSignal
  /** Wall-clock epoch ms, the signature's timestamp (default Date.now). */
  readonly now?: () => number
}

/** The signer of a `whsec_` secret, or `TypeError` (never quoting the secret). */
export function webhookSigner(secret: string, where: string): Webhook {
  const key = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : undefined
  const bytes = key !== undefined && /^[A-Za-z0-9+/]+={0,2}$/.test(key) ? Buffer.from(key, 'base64').length : 0
  // Standard Webhooks: secrets of 24 to 64 random bytes, base64, after the `whsec_` prefix.
  if (bytes < 24 || bytes > 64) throw new TypeError(`${where}: must hold one secret, whsec_ and the base64 of 24-64 random bytes`)
  return new Webhook(key as string)
}

/**
 * POSTs `body` as `application/json`, signed. Any 2xx delivers; anything
 * else (another status, a redirect: never followed, a network failure, a
 * timeout) is retried. Never rejects.
 */
export async function sendWebhook(url: string, signer: Webhook, id: string, body: string, options: WebhookSendOptions): Promise<PushOutcome> {
  const at = new Date(options.now?.() ?? Date.now())
  let response: Response
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
        'webhook-signature': signer.sign(id, at, body),
      },
      body,
      redirect: 'manual',
      signal: AbortSignal.any([AbortSignal.timeout(options.timeoutMs), options.signal]),
    })
  } catch (err) {
    const name = err instanceof Error ? err.name : 'Error'
    const code = (err as { cause?: { code?: unknown } }).cause?.code
    return {
      kind: 'retry',
      reason: name === 'TimeoutError' ? 'timeout' : `network: ${typeof code === 'string' ? code.replace(/[^A-Z0-9_]/g, '?').slice(0, 64) : name}`,
    }
  }
  await response.body?.cancel()
  if (response.status >= 200 && response.status < 300) return { kind: 'delivered' }
  return { kind: 'retry', reason: `status ${response.status}` }
}
