import type { Context } from 'hono'
import { OAuthError } from '../core/errors.js'

/**
 * Reads an `application/x-www-form-urlencoded` body (the only type /oauth2/*
 * takes) with URLSearchParams. The body size is capped before this by the
 * body-limit middleware.
 */
export async function readForm(c: Context): Promise<URLSearchParams> {
  const type = c.req.header('content-type')?.split(';')[0]?.trim().toLowerCase()
  if (type !== 'application/x-www-form-urlencoded') {
    throw new OAuthError('invalid_request', 'content type must be application/x-www-form-urlencoded')
  }
  const text = await c.req.text()
  // Malformed percent-encoding is replaced, not thrown, by URLSearchParams; refuse it instead.
  if (/%(?![0-9a-fA-F]{2})/.test(text)) throw new OAuthError('invalid_request', 'malformed form body')
  return new URLSearchParams(text)
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
