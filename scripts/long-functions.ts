// Lists every function over 100 lines and every file over 400 lines in src/
// and packages/*/src/, and whether each says why (npx tsx scripts/long-functions.ts;
// exits 1 when one does not). test/unit/source-size.test.ts runs the same check.
//
// A function says why with a comment starting `Long, not split:` on the first
// line of its body; a file with `Over 400 lines because` in the comment at its top.
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

export const MAX_FUNCTION_LINES = 100
export const MAX_FILE_LINES = 400

export interface LongFunction {
  readonly name: string
  /** 1-based line of the function's first token. */
  readonly line: number
  readonly lines: number
  readonly explained: boolean
}

export interface SourceSize {
  readonly file: string
  readonly lines: number
  /** Over MAX_FILE_LINES and saying why at its top; true for a file within the bound. */
  readonly explained: boolean
  readonly longFunctions: readonly LongFunction[]
}

const FUNCTION_WHY = /^\s*(\/\/|\/\*+|\*)\s*Long, not split:/
const FILE_WHY = /Over 400 lines because/

/** Measures one TypeScript source: its length, and its functions over MAX_FUNCTION_LINES. */
export function measureSource(file: string, text: string): SourceSize {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS)
  const textLines = text.split('\n')
  const lines = text.endsWith('\n') ? textLines.length - 1 : textLines.length
  const lineOf = (pos: number) => source.getLineAndCharacterOfPosition(pos).line
  const longFunctions: LongFunction[] = []
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
      const first = lineOf(node.getStart(source))
      const span = lineOf(node.getEnd()) - first + 1
      if (span > MAX_FUNCTION_LINES) {
        // The body's first line: the one after the line its `{` (or `=>`) is on.
        const bodyLine = textLines[lineOf((node.body as ts.Node).getStart(source)) + 1] ?? ''
        longFunctions.push({ name: nameOf(node), line: first + 1, lines: span, explained: FUNCTION_WHY.test(bodyLine) })
      }
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return { file, lines, explained: lines <= MAX_FILE_LINES || FILE_WHY.test(headComment(text)), longFunctions }
}

/** The comments before the first statement, as plain words. */
function headComment(text: string): string {
  return (ts.getLeadingCommentRanges(text, 0) ?? [])
    .map((r) => text.slice(r.pos, r.end))
    .join(' ')
    .replace(/^\s*(\/\/|\/\*+|\*\/|\*)/gm, ' ')
    .replace(/\s+/g, ' ')
}

function nameOf(node: ts.SignatureDeclaration): string {
  if (node.name !== undefined) return node.name.getText()
  if (ts.isConstructorDeclaration(node)) return 'constructor'
  const parent = node.parent
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) return parent.name.getText()
  return '<anonymous>'
}

/** Every `.ts` file under `dir`, sorted. */
function sources(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => (f.endsWith('.ts') || f.endsWith('.tsx')) && !f.endsWith('.d.ts'))
    .map((f) => join(dir, f))
    .sort()
}

/** Measures every source of the broker and its packages under `root` (the repository). */
export function measureRepository(root: string): SourceSize[] {
  const packages = readdirSync(join(root, 'packages'), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => join(root, 'packages', d.name, 'src'))
  const dirs = [join(root, 'src'), ...packages.filter((d) => ts.sys.directoryExists(d))]
  return dirs.flatMap(sources).map((f) => measureSource(relative(root, f), readFileSync(f, 'utf8')))
}

/** One line per long file or function, `file:line name N lines`, with `(no why)` where it does not say why. */
export function report(sizes: readonly SourceSize[]): string[] {
  const out: string[] = []
  for (const s of sizes) {
    if (s.lines > MAX_FILE_LINES) out.push(`${s.file} ${s.lines} lines${s.explained ? '' : ' (no why)'}`)
    for (const f of s.longFunctions) out.push(`${s.file}:${f.line} ${f.name} ${f.lines} lines${f.explained ? '' : ' (no why)'}`)
  }
  return out
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const lines = report(measureRepository(fileURLToPath(new URL('..', import.meta.url))))
  process.stdout.write(lines.map((l) => `${l}\n`).join(''))
  process.exitCode = lines.some((l) => l.endsWith('(no why)')) ? 1 : 0
}
