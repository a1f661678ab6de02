import type { IncomingMessage } from 'node:http'
import type { Context } from 'hono'
import { OAuthError } from '../core/errors.js'
import { decodeUtf8, isStorableText } from '../core/text.js'

/** A body over the limit: answered 413 by the app's error handler. */
export class PayloadTooLarge extends Error {
  override readonly name = 'PayloadTooLarge'
}

/** Reads the Node request stream directly, capped, so no web Request body stream is ever built. */
function readIncoming(incoming: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const done = (err?: Error) => {
      incoming.off('data', onData).off('end', onEnd).off('error', onError)
      if (err === undefined) resolve(Buffer.concat(chunks, size))
      else {
        // Stop reading; the 413 is still written, and Node discards the rest of the body.
        incoming.pause()
        reject(err)
      }
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBytes) done(new PayloadTooLarge())
      else chunks.push(chunk)
    }
    const onEnd = () => done()
    const onError = () => done(new OAuthError('invalid_request', 'request body could not be read'))
    incoming.on('data', onData).on('end', onEnd).on('error', onError)
  })
}

/** The fallback for other runtimes and app.request(): the web body stream, capped the same way. */
async function readWebBody(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<Buffer> {
  if (body === null) return Buffer.alloc(0)
  const chunks: Uint8Array[] = []
  let size = 0
  const reader = body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) return Buffer.concat(chunks, size)
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined)
      throw new PayloadTooLarge()
    }
    chunks.push(value)
  }
}

/**
 * Reads an `application/x-www-form-urlencoded` body (the only type /oauth2/*
 * takes), at most `maxBytes` (413 beyond, before parsing), with
 * URLSearchParams. On Node the body is read from the socket's message
 * directly: materialising a web Request stream costs more CPU per request
 * than the exchange's own signature checks.
 *
 * Every name and value must be UTF-8 once percent-decoded (WHATWG URL
 * §5.1) and storable text (`isStorableText`): URLSearchParams would turn
 * bytes that are not UTF-8 into U+FFFD and pass a NUL on, so the body is
 * checked first and refused whole with `invalid_request`.
 */
export async function readForm(c: Context, maxBytes: number): Promise<URLSearchParams> {
  const type = c.req.header('content-type')?.split(';')[0]?.trim().toLowerCase()
  if (type !== 'application/x-www-form-urlencoded') {
    throw new OAuthError('invalid_request', 'content type must be application/x-www-form-urlencoded')
  }
  const declared = Number(c.req.header('content-length') ?? '0')
  if (declared > maxBytes) throw new PayloadTooLarge()
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming
  const bytes = incoming !== undefined ? await readIncoming(incoming, maxBytes) : await readWebBody(c.req.raw.body, maxBytes)
  const text = decodeUtf8(bytes)
  if (text === undefined || !isStorableForm(text)) throw new OAuthError('invalid_request', 'malformed form body')
  return new URLSearchParams(text)
}

/**
 * True when every name and value of `body` (a form, or a URL's query)
 * percent-decodes to storable text. Only an escape can spell a NUL or bytes
 * that are not UTF-8 (a surrogate's included), which URLSearchParams would
 * quietly replace: the raw text is checked once, then each run of escapes is
 * decoded alone (decodeURIComponent throws on a malformed escape and on bytes
 * that are not UTF-8). The long token values of a token request hold none.
 */
export function isStorableForm(body: string): boolean {
  if (!isStorableText(body)) return false
  for (let at = body.indexOf('%'); at !== -1;) {
    let end = at
    while (body.charCodeAt(end) === 0x25) end += 3 // `%XX` after `%XX`: one run (a character's bytes stay together)
    let decoded: string
    try {
      decoded = decodeURIComponent(body.slice(at, end))
    } catch {
      return false
    }
    if (!isStorableText(decoded)) return false
    at = body.indexOf('%', end)
  }
  return true
}

/** Reads a form over parameters: single-valued ones must not repeat (RFC 6749 §3.1, §3.2). */
export class FormParams {
  constructor(private readonly params: URLSearchParams) {}

  /** The value, or undefined when absent; an empty value counts as absent (RFC 6749 §3.1). */
  optional(name: string): string | undefined {
    const values = this.params.getAll(name)
    if (values.length > 1) throw new OAuthError('invalid_request', `${name} must not repeat`)
    const v = values[0]
    return v === '' ? undefined : v
  }

  required(name: string): string {
    const v = this.optional(name)
    if (v === undefined) throw new OAuthError('invalid_request', `${name} is required`)
    return v
  }

  /** Every non-empty value of a parameter that may repeat (`resource`, `audience`). */
  all(name: string): string[] {
    return this.params.getAll(name).filter((v) => v !== '')
  }
}
