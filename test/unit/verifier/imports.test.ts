/**
 * The verifier package (`mandate/verifier`) loads no Redis client unless a
 * resource server asks to follow Redis: its static runtime imports, followed
 * through every file, never reach `ioredis`. Type-only imports and dynamic
 * `import()` calls are not followed: neither loads anything at start.
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..')

/** Packages reached from `entry` by static, value-level imports and re-exports. */
function staticPackages(entry: string): Set<string> {
  const packages = new Set<string>()
  const seen = new Set<string>()
  const visit = (file: string) => {
    if (seen.has(file)) return
    seen.add(file)
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest)
    for (const statement of source.statements) {
      let specifier: string | undefined
      if (ts.isImportDeclaration(statement) && statement.importClause?.isTypeOnly !== true) {
        specifier = (statement.moduleSpecifier as ts.StringLiteral).text
      } else if (ts.isExportDeclaration(statement) && !statement.isTypeOnly && statement.moduleSpecifier !== undefined) {
        specifier = (statement.moduleSpecifier as ts.StringLiteral).text
      }
      if (specifier === undefined) continue
      if (!specifier.startsWith('.')) {
        packages.add(specifier)
        continue
      }
      const target = resolve(dirname(file), specifier.replace(/\.js$/, '.ts'))
      if (existsSync(target)) visit(target)
    }
  }
  visit(join(root, entry))
  return packages
}

describe('verifier package imports', () => {
  it('never loads ioredis at start', () => {
    const packages = staticPackages('src/verifier/index.ts')
    expect(packages.has('jose')).toBe(true)
    expect([...packages].filter((p) => p.startsWith('ioredis'))).toEqual([])
  })

  it('the walk finds ioredis where it is imported (the broker)', () => {
    expect(staticPackages('src/compose.ts').has('ioredis')).toBe(true)
  })
})
