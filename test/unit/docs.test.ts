import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { renderReferences } from '../../scripts/reference.js'

describe('README references', () => {
  it('match the config and policy schemas (run `npm run docs` when this fails)', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    expect(renderReferences(readme)).toBe(readme)
  })

  it('every env variable the config reads is documented in the README and in serve --help', async () => {
    const { CONFIG_ENV } = await import('../../src/config/load.js')
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
    const main = await readFile(new URL('../../src/cli/main.ts', import.meta.url), 'utf8')
    for (const name of Object.keys(CONFIG_ENV)) {
      expect(readme, name).toContain(name)
      expect(main, name).toContain(name)
    }
  })
})
