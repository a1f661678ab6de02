import type { Context } from 'hono'
import { z } from 'zod'
import { decodeUtf8, holdsOnlyStorableText } from '../core/text.js'
import { isStorableForm } from './form.js'
import { AdminError } from './oauth-errors.js'

/**
 * The admin API's JSON body: strict UTF-8, JSON, and nothing Mandate could
 * not store (a NUL or a lone surrogate spelled as a JSON escape would fail
 * the database write and reach the caller as a 503). Throws `AdminError`
 * `invalid_request`.
 */
export async function readJsonBody(c: Context): Promise<unknown> {
  const text = decodeUtf8(new Uint8Array(await c.req.arrayBuffer()))
  let value: unknown
  try {
    value = JSON.parse(text ?? '')
  } catch {
    throw new AdminError('invalid_request', 'body must be a JSON object')
  }
  if (!holdsOnlyStorableText(value, text)) {
    throw new AdminError('invalid_request', 'body holds a NUL, a lone surrogate or bytes that are not UTF-8')
  }
  return value
}

/**
 * Refuses an admin request whose query string does not percent-decode to
 * storable text: Hono's query reader keeps a broken escape as literal text
 * and would hand it to a filter. Throws `AdminError` `invalid_request`.
 */
export function checkQuery(c: Context): void {
  const url = c.req.url
  const at = url.indexOf('?')
  if (at < 0) return
  for (const pair of url.slice(at + 1).split('&')) {
    if (isStorableForm(pair)) continue
    const name = pair.split('=', 1)[0]!
    // Name the parameter when its name itself is fine (an id-like token: never echo arbitrary text).
    throw new AdminError(
      'invalid_request',
      isStorableForm(name) && /^[a-z_]{1,32}$/.test(name) ? `invalid ${name}: not well-formed text` : 'malformed query string',
    )
  }
}

/**
 * The admin API's one refusal for input its zod schema rejected: the first
 * issue, naming an unknown member of a body or parameter of a query, or the
 * field and why. Throws `AdminError` `invalid_request`.
 */
export function refuseInvalid(error: z.ZodError, source: 'body' | 'query'): never {
  const issue = error.issues[0]
  const field = issue?.path.join('.') || source
  throw new AdminError(
    'invalid_request',
    issue?.code === 'unrecognized_keys'
      ? `unknown ${source === 'body' ? 'member' : 'parameter'}: ${issue.keys.join(', ')}`
      : `invalid ${field}: ${issue?.message ?? 'invalid'}`,
  )
}

/** A note an admin adds to an action (an attestation, a decision): a line or a few, kept in its record; PostgreSQL text holds no NUL. */
export const AdminNote = z
  .string()
  .min(1)
  .max(1024)
  // eslint-disable-next-line no-control-regex -- control characters but line breaks are what it refuses
  .regex(/^[^\u0000-\u0009\u000b-\u001f\u007f]+$/, 'must not contain control characters')
