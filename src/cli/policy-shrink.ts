/**
 * `mandate policy shrink AGENT --since 30d [--write]`: the agent's policy
 * file without what it did not use in the window (GET /admin/policy/unused
 * says what), as a unified diff; `--write` applies it. The `yaml`
 * package's Document API finds the nodes to remove and where their text is;
 * the text is then edited in place, so comments and layout stay (printing
 * the document again would restyle flow collections). The result is
 * validated as a policy before it is shown or written.
 */
import { cp, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { isAbsolute, join, relative, resolve } from 'node:path'
import { createTwoFilesPatch } from 'diff'
import { isMap, isScalar, isSeq, parseDocument, type YAMLSeq } from 'yaml'
import { loadPolicies } from '../policy/load.js'
import { formatIssue } from '../policy/port.js'
import { CliError, resolveBroker, run, type BrokerOptions } from './client.js'
import { EXIT } from './exit-codes.js'
import { printable } from './printable.js'
import { checkSince, fetchUnused, unusedLines, type UnusedAgent } from './policy-unused.js'

export interface ShrinkOptions extends BrokerOptions {
  since: string
  dir: string
  write?: boolean
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
  if (r === undefined) throw new CliError('cannot locate a sequence in the policy file', EXIT.FAILED)
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
export function shrinkText(text: string, unused: UnusedAgent): { text: string; removed: string[] } {
  const doc = parseDocument(text)
  if (doc.errors.length > 0) throw new CliError('the policy file is not valid YAML', EXIT.FAILED)
  const grants = doc.get('grants', true)
  if (!isSeq(grants)) throw new CliError('the policy file has no grants list', EXIT.FAILED)
  if (grants.flow === true) throw new CliError('grants is a flow sequence ([...]): write it as a block list to shrink it', EXIT.FAILED)
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

/**
 * Refuses the edited text unless the policy directory with it in place of
 * `file` still loads (the policy is valid, e.g. not every grant removed,
 * and its references to other agents hold).
 */
async function validated(dir: string, file: string, text: string): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'mandate-policy-shrink-'))
  try {
    await cp(dir, scratch, { recursive: true })
    await writeFile(join(scratch, relative(dir, file)), text)
    const result = await loadPolicies(scratch)
    if (!result.ok) {
      const why = result.issues.map((i) => formatIssue(i).replace(scratch, dir)).join('; ')
      throw new CliError(`the shrunk policy would not be valid, so nothing is suggested: ${why}`, EXIT.FAILED)
    }
  } finally {
    await rm(scratch, { recursive: true, force: true })
  }
}

/** `mandate policy shrink AGENT --since 30d [--dir DIR] [--write]` */
export const policyShrink = (agent: string, o: ShrinkOptions) =>
  run(async () => {
    checkSince(o.since)
    const loaded = await loadPolicies(o.dir)
    if (!loaded.ok) {
      for (const issue of loaded.issues) process.stderr.write(`${formatIssue(issue)}\n`)
      throw new CliError(`${loaded.issues.length} error(s) in ${o.dir}: fix them first`, EXIT.FAILED)
    }
    const policy = loaded.policies.find((p) => p.agent === agent)
    if (policy === undefined) throw new CliError(`no policy in ${o.dir} names ${agent}`, EXIT.FAILED)
    const b = await resolveBroker(o)
    const answer = await fetchUnused(b, agent, o.since)
    const unused = answer.agents.find((a) => a.agent === agent)
    if (unused === undefined) throw new CliError(`the broker has no policy for ${agent}`, EXIT.FAILED)
    const file = policy.source
    const old = await readFile(file, 'utf8')
    const { text, removed } = unused.suggest ? shrinkText(old, unused) : { text: old, removed: [] }
    if (removed.length > 0) await validated(o.dir, file, text)
    // Named as git names files, from the working directory; a file outside it by its absolute path.
    const rel = relative(process.cwd(), file)
    const name = rel.startsWith('..') || isAbsolute(rel) ? resolve(file) : rel
    const [from, to] = isAbsolute(name) ? [name, name] : [`a/${name}`, `b/${name}`]
    const patch = removed.length === 0 ? '' : createTwoFilesPatch(from, to, old, text, undefined, undefined, { context: 3 })
    if (o.json === true) {
      process.stdout.write(
        `${JSON.stringify({ agent, file: name, suggest: unused.suggest, reason: unused.reason, removed, diff: patch, written: o.write === true && removed.length > 0 })}\n`,
      )
    } else if (removed.length === 0) {
      process.stderr.write(`${unusedLines(unused).join('\n')}\nnothing to remove from ${printable(name)}\n`)
    } else {
      process.stdout.write(patch)
    }
    if (o.write === true && removed.length > 0) {
      const tmp = `${file}.shrink-${process.pid}`
      await writeFile(tmp, text)
      await rename(tmp, file)
      if (o.json !== true) process.stderr.write(`wrote ${printable(name)}: removed ${removed.join(', ')}\n`)
    }
  })
