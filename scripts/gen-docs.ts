// Regenerates the config and policy references in README.md from the zod
// schemas' descriptions (npm run docs). A unit test fails when they drift.
import { readFile, writeFile } from 'node:fs/promises'
import { renderReferences } from './reference.js'

const file = new URL('../README.md', import.meta.url)
const before = await readFile(file, 'utf8')
const after = renderReferences(before)
if (after !== before) {
  await writeFile(file, after)
  process.stdout.write('README.md references updated\n')
} else {
  process.stdout.write('README.md references already up to date\n')
}
