/**
 * `mandate policy shrink AGENT --since 30d [--write]`: the agent's policy
 * file without what it did not use in the window (GET /admin/policy/unused
 * says what), as a unified diff; `--write` applies it. The edit, which
 * keeps comments and layout, is policy/shrink.ts's; the result is validated
 * as a policy before it is shown or written.
 */
import { cp, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { isAbsolute, join, relative, resolve } from 'node:path'
import { loadPolicies } from '../policy/load.js'
import { formatIssue } from '../policy/port.js'
import { shrinkPatch, shrinkText, ShrinkError } from '../policy/shrink.js'
import { CliError, resolveBroker, run, type BrokerOptions } from './client.js'
import { EXIT } from './exit-codes.js'
import { printable } from './printable.js'
import { checkSince, fetchUnused, unusedLines } from './policy-unused.js'

export interface ShrinkOptions extends BrokerOptions {
  since: string
  dir: string
  write?: boolean
}

const shrunk = (old: string, unused: Parameters<typeof shrinkText>[1]) => {
  try {
    return shrinkText(old, unused)
  } catch (err) {
    if (err instanceof ShrinkError) throw new CliError(err.message, EXIT.FAILED)
    throw err
  }
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
    const { text, removed } = unused.suggest ? shrunk(old, unused) : { text: old, removed: [] }
    if (removed.length > 0) await validated(o.dir, file, text)
    // Named as git names files, from the working directory; a file outside it by its absolute path.
    const rel = relative(process.cwd(), file)
    const name = rel.startsWith('..') || isAbsolute(rel) ? resolve(file) : rel
    const [from, to] = isAbsolute(name) ? [name, name] : [`a/${name}`, `b/${name}`]
    const patch = removed.length === 0 ? '' : shrinkPatch(from, to, old, text)
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
