/**
 * @mandate/verifier depends on jose alone: every import of its sources is a
 * file of its own or `jose`, and a framework only in its adapter (`hono`,
 * `express`, `fastify`: optional peer dependencies, imported for types only,
 * never reached from the main entry). Nothing reaches back
 * into the broker, and no schema library, logger or Redis client comes along.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'

const src = join(dirname(fileURLToPath(import.meta.url)), '../src')

/** Every module specifier of `file`, type-only ones included, and whether it loads at run time. */
function importsOf(file: string): { specifier: string; runtime: boolean }[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest)
  const out: { specifier: string; runtime: boolean }[] = []
  for (const s of source.statements) {
    if (ts.isImportDeclaration(s))
      out.push({ specifier: (s.moduleSpecifier as ts.StringLiteral).text, runtime: s.importClause?.phaseModifier !== ts.SyntaxKind.TypeKeyword })
    else if (ts.isExportDeclaration(s) && s.moduleSpecifier !== undefined)
      out.push({ specifier: (s.moduleSpecifier as ts.StringLiteral).text, runtime: !s.isTypeOnly })
  }
  return out
}

/** Packages an entry loads at run time, through its files' static imports. */
function runtimePackages(entry: string): Set<string> {
  const packages = new Set<string>()
  const seen = new Set<string>()
  const visit = (file: string) => {
    if (seen.has(file)) return
    seen.add(file)
    for (const { specifier, runtime } of importsOf(file)) {
      if (!runtime) continue
      if (specifier.startsWith('.')) visit(resolve(dirname(file), specifier.replace(/\.js$/, '.ts')))
      else packages.add(specifier)
    }
  }
  visit(join(src, entry))
  return packages
}

describe('@mandate/verifier imports', () => {
  const files = readdirSync(src).filter((f) => f.endsWith('.ts'))

  /** The framework each adapter may name, for its types. */
  const ADAPTERS: Record<string, string> = { 'hono.ts': 'hono', 'express.ts': 'express', 'fastify.ts': 'fastify' }

  it('imports its own files, jose, and a framework in its own adapter only', () => {
    for (const file of files) {
      for (const { specifier } of importsOf(join(src, file))) {
        if (specifier.startsWith('./')) {
          expect(specifier, file).toMatch(/^\.\/[a-z-]+\.js$/)
          continue
        }
        expect(specifier === 'jose' || ADAPTERS[file] === specifier, `${file} imports ${specifier}`).toBe(true)
      }
    }
  })

  it('loads jose alone from its main entry: no hono, no node: module', () => {
    expect([...runtimePackages('index.ts')]).toEqual(['jose'])
  })

  it.each(Object.entries(ADAPTERS))('%s names %s for types only: the adapter loads nothing of it', (file, framework) => {
    expect([...runtimePackages(file)].filter((p) => p !== 'jose')).toEqual([])
    expect(importsOf(join(src, file)).some((i) => i.specifier === framework)).toBe(true)
  })
})
