import { readFileSync } from 'node:fs'
import { describe, expect, test } from 'vitest'

/**
 * The workspace packages are read from their sources in development (the
 * `mandate-source` condition, as tsc does) and shipped as builds: both
 * halves of their `exports` must hold, and a package must never reach back
 * into the broker.
 */
describe.each(['verifier', 'client'])('@mandate/%s', (name) => {
  const manifest = JSON.parse(readFileSync(new URL(`../../packages/${name}/package.json`, import.meta.url), 'utf8')) as {
    name: string
    exports: Record<string, Record<string, string>>
    files: string[]
    dependencies?: Record<string, string>
    peerDependencies?: Record<string, string>
  }

  test('resolves to its sources under the mandate-source condition', () => {
    expect(import.meta.resolve(`@mandate/${name}`)).toMatch(new RegExp(`/packages/${name}/src/index\\.ts$`))
  })

  test('every export ships types and a build, and only dist and the README are packed', () => {
    for (const [path, target] of Object.entries(manifest.exports)) {
      expect(target['types'], path).toMatch(/^\.\/dist\/.*\.d\.ts$/)
      expect(target['default'], path).toMatch(/^\.\/dist\/.*\.js$/)
    }
    expect(manifest.files.sort()).toEqual(['README.md', 'dist'])
  })

  test('depends on nothing of the broker', () => {
    expect(Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })).not.toContain('mandate')
  })
})
