/**
 * `mandate policy shrink AGENT --since 30d [--write]`: the agent's policy
 * file without what it did not use in the window (GET /admin/policy/unused
 * says what), as a unified diff; `--write` applies it. The file is edited
 * through the `yaml` package's Document API, which keeps its comments and
 * layout: only the removed nodes change. The result is validated as a
 * policy before it is shown or written.
 */
import { mkdtemp, rename, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join, relative } from 'node:path'
import { createTwoFilesPatch } from 'diff'
import { isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml'
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

/** Removes from `seq` (a YAML sequence of scalars) every item equal to `value`. */
function removeFrom(seq: unknown, value: string): void {
  if (!isSeq(seq)) return
  for (let i = seq.items.length - 1; i >= 0; i--) if (valueOf(seq.items[i]) === value) seq.delete(i)
}

/** Applies the report's removals to the policy document; returns what it removed, for people. */
export function shrinkDocument(doc: Document, unused: UnusedAgent): string[] {
  const done: string[] = []
  const grants = doc.get('grants')
  if (!isSeq(grants)) throw new CliError('the policy file has no grants list', EXIT.FAILED)
  const gone = new Set(unused.unused_audiences)
  for (let i = grants.items.length - 1; i >= 0; i--) {
    const g = grants.items[i]
    if (!isMap(g)) continue
    const audience = valueOf(g.get('audience', true))
    if (typeof audience !== 'string') continue
    if (gone.has(audience)) {
      grants.delete(i)
      done.push(`audience ${audience}`)
      continue
    }
    for (const s of unused.unused_scopes) {
      if (s.audience !== audience) continue
      removeFrom(g.get('scopes', true), s.scope)
      // default_scopes must stay a subset of scopes.
      removeFrom(g.get('default_scopes', true), s.scope)
      done.push(`scope ${s.scope} at ${audience}`)
    }
  }
  if (unused.depth.unused) {
    const depth = doc.getIn(['delegation', 'max_depth'], true)
    if (isScalar(depth)) {
      depth.value = Math.max(1, unused.depth.used)
      done.push(`delegation depth ${unused.depth.granted} -> ${Math.max(1, unused.depth.used)}`)
    }
  }
  return done.reverse()
}

/** The edited text, refused unless it is still a valid policy for the same agent (e.g. not every grant removed). */
async function validated(file: string, text: string): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'mandate-policy-shrink-'))
  try {
    await writeFile(join(scratch, basename(file)), text)
    const result = await loadPolicies(scratch)
    if (!result.ok) {
      const why = result.issues.map((i) => formatIssue(i).replace(scratch, dirname(file))).join('; ')
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
    const doc = parseDocument(old)
    const removed = unused.suggest ? shrinkDocument(doc, unused) : []
    // Never fold a long line the author wrote on one; `[a, b]` stays unpadded.
    const text = removed.length === 0 ? old : doc.toString({ lineWidth: 0, flowCollectionPadding: false })
    if (removed.length > 0) await validated(file, text)
    const name = relative(process.cwd(), file) || basename(file)
    const patch = removed.length === 0 ? '' : createTwoFilesPatch(`a/${name}`, `b/${name}`, old, text, undefined, undefined, { context: 3 })
    if (o.json === true) {
      process.stdout.write(`${JSON.stringify({ agent, file: name, suggest: unused.suggest, reason: unused.reason, removed, diff: patch, written: o.write === true && removed.length > 0 })}\n`)
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
