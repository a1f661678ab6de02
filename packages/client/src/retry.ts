/**
 * When to try a refused request again: only 429 (RFC 6585 §4) and 503
 * (RFC 9110 §15.6.4), the two answers that say "the same request may
 * succeed later". Every other refusal needs something changed first.
 */

export interface RetryOptions {
  /** Requests at most per call, the first included (default 3; 1 turns retries off). */
  readonly maxAttempts?: number
  /** Total ms a call may spend waiting between attempts (default 10 000). A wait that would pass it is not started: the error is thrown at once. */
  readonly maxWaitMs?: number
  /** First back-off step in ms when the answer has no `Retry-After` (default 250); doubled each attempt, fully jittered. */
  readonly baseDelayMs?: number
}

export interface RetryPolicy {
  readonly maxAttempts: number
  readonly maxWaitMs: number
  readonly baseDelayMs: number
}

export function retryPolicy(options: RetryOptions = {}): RetryPolicy {
  const policy = { maxAttempts: options.maxAttempts ?? 3, maxWaitMs: options.maxWaitMs ?? 10_000, baseDelayMs: options.baseDelayMs ?? 250 }
  if (!Number.isSafeInteger(policy.maxAttempts) || policy.maxAttempts < 1) throw new TypeError('retry.maxAttempts must be an integer of at least 1')
  if (!(policy.maxWaitMs >= 0) || !(policy.baseDelayMs >= 0)) throw new TypeError('retry.maxWaitMs and retry.baseDelayMs must be non-negative')
  return policy
}

export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 503
}

/** Longest Retry-After honoured, in seconds: a larger value is a misconfiguration or hostile, and is taken as this. */
const MAX_RETRY_AFTER = 3_600

/**
 * `Retry-After` (RFC 9110 §10.2.3) in seconds: delay-seconds, or an
 * HTTP-date taken relative to `now` (epoch ms). Undefined when absent or
 * malformed.
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined
  const text = value.trim()
  if (/^\d{1,10}$/.test(text)) return Math.min(Number(text), MAX_RETRY_AFTER)
  // IMF-fixdate and the obsolete forms Date.parse reads; a date in the past means now.
  if (!/^[A-Za-z]{3},? /.test(text)) return undefined
  const at = Date.parse(text)
  if (Number.isNaN(at)) return undefined
  return Math.min(Math.max(0, Math.ceil((at - now) / 1000)), MAX_RETRY_AFTER)
}

/**
 * Ms to wait before attempt `attempt + 1` (attempt counts from 1): what the
 * broker asked for plus up to 10 % so that many clients told the same do not
 * return at the same instant, or, without `Retry-After`, full jitter over an
 * exponential step.
 */
export function backoffDelay(policy: RetryPolicy, attempt: number, retryAfter: number | undefined, random: () => number = Math.random): number {
  if (retryAfter !== undefined) return Math.round(retryAfter * 1000 * (1 + 0.1 * random()))
  return Math.round(policy.baseDelayMs * 2 ** (attempt - 1) * random())
}

/** A setTimeout that an AbortSignal cancels (rejecting with the signal's reason). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason as Error)
      return
    }
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal!.reason as Error)
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
