/**
 * Text a caller sent that Mandate may keep: well-formed UTF-16 (no lone
 * surrogate, which UTF-8 cannot encode, so PostgreSQL and the audit record's
 * RFC 8785 JSON would each hold a different replacement) and no NUL (which a
 * PostgreSQL text column refuses, failing the whole INSERT it is part of).
 */
export function isStorableText(s: string): boolean {
  return s.isWellFormed() && !s.includes('\u0000')
}

// `fatal`: bytes that are not UTF-8 throw instead of becoming U+FFFD; `ignoreBOM`: a BOM stays, as sent.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** `bytes` as UTF-8 text, or undefined when they are not UTF-8 (RFC 3629). */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return UTF8.decode(bytes)
  } catch {
    return undefined
  }
}
