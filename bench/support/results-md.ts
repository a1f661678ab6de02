/**
 * bench/RESULTS.md holds the exchange benchmark's report (bench/exchange.ts rewrites it whole) and
 * sections other benchmarks own, each between `<!-- section:NAME -->` and `<!-- /section:NAME -->`.
 * A section is replaced in place by its own benchmark and carried over when the exchange report is
 * rewritten, so that each figure stays until its own benchmark runs again.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const SECTION = /<!-- section:([a-z-]+) -->\n[\s\S]*?<!-- \/section:\1 -->\n?/g

/** The owned sections of `file` as they stand, in order (empty when there are none or no file). */
export function ownedSections(file: string): string[] {
  if (!existsSync(file)) return []
  return [...readFileSync(file, 'utf8').matchAll(SECTION)].map((m) => (m[0].endsWith('\n') ? m[0] : `${m[0]}\n`))
}

/** Writes section `name` of `file` (replacing its previous text, or appended at the end). */
export function writeOwnedSection(root: string, name: string, lines: readonly string[]): void {
  const file = join(root, 'bench/RESULTS.md')
  const text = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const section = `<!-- section:${name} -->\n${lines.join('\n')}\n<!-- /section:${name} -->\n`
  const marker = new RegExp(`<!-- section:${name} -->\\n[\\s\\S]*?<!-- /section:${name} -->\\n?`)
  writeFileSync(file, marker.test(text) ? text.replace(marker, section) : `${text.trimEnd()}\n\n${section}`)
}
