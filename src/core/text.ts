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

/**
 * True when every string of a parsed JSON value, member names included,
 * is storable text: JSON escapes can spell a NUL or a lone surrogate
 * ("\u0000", "\ud800") in valid UTF-8. `source`, the JSON text `root` was
 * parsed from, lets the common case skip the walk. Iterative: nesting depth
 * is bounded only by the input's length.
 */
export function holdsOnlyStorableText(root: unknown, source?: string): boolean {
  // Fast path: well-formed JSON text (as decodeUtf8 gives) with no NUL and no `\u` escape can spell
  // neither a NUL nor a lone surrogate, so no string parsed from it can hold one.
  if (source !== undefined && source.isWellFormed() && !source.includes('\u0000') && !source.includes('\\u')) return true
  const stack: unknown[] = [root]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v === 'string') {
      if (!isStorableText(v)) return false
    } else if (Array.isArray(v)) {
      for (const item of v) stack.push(item)
    } else if (typeof v === 'object' && v !== null) {
      for (const [name, item] of Object.entries(v)) {
        if (!isStorableText(name)) return false
        stack.push(item)
      }
    }
  }
  return true
}
