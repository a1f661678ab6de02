/**
 * A policy file's text without what its agent did not use (the answer of
 * GET /admin/policy/unused for it), and that change as a unified diff:
 * `mandate policy shrink` prints or writes it, the console shows it. The
 * `yaml` package's Document API finds the nodes to remove and where their
 * text is; the text is then edited in place, so comments and layout stay
 * (printing the document again would restyle flow collections).
 */
import { createTwoFilesPatch } from 'diff'
import { isMap, isScalar, isSeq, parseDocument, type YAMLSeq } from 'yaml'

/** A policy text this cannot shrink (not YAML, no block list of grants). */
export class ShrinkError extends Error {
  override readonly name = 'ShrinkError'
}

/** What GET /admin/policy/unused reports unused for one agent (UnusedGrants in /openapi.json), as far as shrinking needs. */
export interface Unused {
  readonly unused_audiences: readonly string[]
  readonly unused_scopes: readonly { readonly audience: string; readonly scope: string }[]
  readonly depth: { readonly granted: number; readonly used: number; readonly unused: boolean }
}

const valueOf = (node: unknown): unknown => (isScalar(node) ? node.value : node)

/** A replacement of `text.slice(start, end)`; edits never overlap. */
interface Edit {
  readonly start: number
  readonly end: number
  readonly with: string
}

const lineStart = (text: string, at: number) => text.lastIndexOf('\n', at - 1) + 1
/** Just past the newline ending the line `at` is on (or the end of the text). */
function lineEnd(text: string, at: number): number {
  const nl = text.indexOf('\n', at)
  return nl === -1 ? text.length : nl + 1
}

/** Where a block item starts: its own line, with the comment lines right above it (they describe it). */
function itemStart(text: string, at: number): number {
  let start = lineStart(text, at)
  while (start > 0) {
    const previous = lineStart(text, start - 1)
    if (!text.slice(previous, start).trim().startsWith('#')) break
    start = previous
  }
  return start
}

/**
 * The edits that remove from `seq` (a sequence of scalars) the items in
 * `drop`: a flow sequence is rewritten in place with the items kept, as they
 * were spelled; a block sequence loses the removed items' lines (and turns
 * into `[]` when none is left). Undefined when there is nothing to remove.
 */
function seqEdits(text: string, seq: YAMLSeq, drop: ReadonlySet<string>): Edit[] {
  const kept = seq.items.filter((i) => !drop.has(String(valueOf(i))))
  if (kept.length === seq.items.length) return []
  const range = (n: unknown) => (n as { range?: [number, number, number] }).range
  const r = range(seq)
  if (r === undefined) throw new ShrinkError('cannot locate a sequence in the policy file')
  if (seq.flow === true) {
    const pad = text[r[0] + 1] === ' ' ? ' ' : ''
    const items = kept.map((i) => text.slice(range(i)![0], range(i)![1]))
    return [{ start: r[0], end: r[1], with: items.length === 0 ? '[]' : `[${pad}${items.join(', ')}${pad}]` }]
  }
  if (kept.length === 0) {
    const first = range(seq.items[0])!
    const last = range(seq.items.at(-1))!
    // `key:\n  - a\n` becomes `key: []\n`.
    return [{ start: lineStart(text, first[0]) - 1, end: lineEnd(text, last[1]) - 1, with: ' []' }]
  }
  return seq.items
    .filter((i) => drop.has(String(valueOf(i))))
    .map((i) => ({ start: itemStart(text, range(i)![0]), end: lineEnd(text, range(i)![1]), with: '' }))
}

/**
 * The policy text without what `unused` reports, edited in place: only the
 * removed items' text changes, so comments, quoting, flow or block style
 * and blank lines stay as the author wrote them. A removed grant takes the
 * comment lines right above it along. Returns the text and what was
 * removed, for people.
 */
export function shrinkText(text: string, unused: Unused): { text: string; removed: string[] } {
  const doc = parseDocument(text)
  if (doc.errors.length > 0) throw new ShrinkError('the policy file is not valid YAML')
  const grants = doc.get('grants', true)
  if (!isSeq(grants)) throw new ShrinkError('the policy file has no grants list')
  if (grants.flow === true) throw new ShrinkError('grants is a flow sequence ([...]): write it as a block list to shrink it')
  const edits: Edit[] = []
  const removed: string[] = []
  const gone = new Set(unused.unused_audiences)
  for (const g of grants.items) {
    if (!isMap(g)) continue
    const audience = valueOf(g.get('audience', true))
    if (typeof audience !== 'string') continue
    if (gone.has(audience)) {
      const r = g.range!
      edits.push({ start: itemStart(text, r[0]), end: r[2] > r[1] ? r[2] : lineEnd(text, r[1] - 1), with: '' })
      removed.push(`audience ${audience}`)
      continue
    }
    const drop = new Set(unused.unused_scopes.filter((s) => s.audience === audience).map((s) => s.scope))
    if (drop.size === 0) continue
    for (const key of ['scopes', 'default_scopes']) {
      const seq = g.get(key, true)
      // default_scopes must stay a subset of scopes, so it loses the same ones.
      if (isSeq(seq)) edits.push(...seqEdits(text, seq, drop))
    }
    removed.push(...[...drop].map((scope) => `scope ${scope} at ${audience}`))
  }
  if (unused.depth.unused) {
    const depth = doc.getIn(['delegation', 'max_depth'], true)
    const to = Math.max(1, unused.depth.used)
    if (isScalar(depth) && depth.range !== undefined && depth.range !== null) {
      edits.push({ start: depth.range[0], end: depth.range[1], with: String(to) })
      removed.push(`delegation depth ${unused.depth.granted} -> ${to}`)
    }
  }
  let out = text
  for (const e of edits.sort((a, b) => b.start - a.start)) out = out.slice(0, e.start) + e.with + out.slice(e.end)
  return { text: out, removed }
}

/** The change from `old` to `text` as a unified diff with three lines of context, its sides named `from` and `to` (as git names them). */
export function shrinkPatch(from: string, to: string, old: string, text: string): string {
  return createTwoFilesPatch(from, to, old, text, undefined, undefined, { context: 3 })
}
