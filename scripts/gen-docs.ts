// Regenerates the config reference in docs/configuration.md and the policy
// reference in docs/policies.md from the zod schemas' descriptions
// (npm run docs). A unit test fails when they drift.
import { readFile, writeFile } from 'node:fs/promises'
import { REFERENCES, renderReference } from './reference.js'

for (const { name, file } of REFERENCES) {
  const url = new URL(`../${file}`, import.meta.url)
  const before = await readFile(url, 'utf8')
  const after = renderReference(before, name)
  if (after !== before) {
    await writeFile(url, after)
    process.stdout.write(`${file}: ${name} reference updated\n`)
  } else {
    process.stdout.write(`${file}: ${name} reference already up to date\n`)
  }
}
