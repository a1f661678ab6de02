/**
 * A policy file's text as people may read it through the admin API: the
 * same text, comments and layout kept, with each client secret's SHA-256
 * (`secret_sha256`) replaced by a placeholder. A SHA-256 of a short or
 * guessable secret can be reversed by trying candidates offline, so it is
 * no more shown than the secret itself. (Public keys and `jwks_uri` stay:
 * policies refuse private key members, schema.ts.)
 */
import { isScalar, isSeq, parseDocument, visit, type Scalar } from 'yaml'

export const REDACTED = '<redacted>'
const SECRET_KEYS = new Set(['secret_sha256'])

/** The text with every secret field's value replaced; `redacted` names the fields (dotted paths). Undefined when it is not YAML. */
export function redactPolicyText(text: string): { text: string; redacted: string[] } | undefined {
  const doc = parseDocument(text)
  if (doc.errors.length > 0) return undefined
  const spans: [number, number][] = []
  const redacted: string[] = []
  visit(doc, {
    Pair(_, pair, path) {
      const key = isScalar(pair.key) ? String(pair.key.value) : undefined
      if (key === undefined || !SECRET_KEYS.has(key)) return
      const values: Scalar[] = isScalar(pair.value) ? [pair.value] : isSeq(pair.value) ? pair.value.items.filter(isScalar) : []
      for (const v of values) if (v.range !== undefined && v.range !== null) spans.push([v.range[0], v.range[1]])
      const parents = path.flatMap((n) => (isScalar((n as { key?: unknown }).key) ? [String((n as { key: Scalar }).key.value)] : []))
      redacted.push([...parents, key].join('.'))
    },
  })
  let out = text
  for (const [start, end] of spans.sort((a, b) => b[0] - a[0])) out = `${out.slice(0, start)}'${REDACTED}'${out.slice(end)}`
  return { text: out, redacted }
}
