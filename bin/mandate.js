#!/usr/bin/env node
// Runs the compiled CLI, dist/cli/main.js: `npm ci` builds it (the prepare
// script), as does `npm run build`; the image ships it without the sources.
//
// In a source checkout (src/ beside dist/), a dist/ older than any file or
// directory under src/ is stale: the sources run instead, through tsx (a dev
// dependency), so that an edit is never silently ignored and the tests always
// exercise the code as it is. Said on stderr only to a person at a terminal:
// scripts and tests read stderr, and the output is the same either way.
// Checking costs one stat per source file, a few milliseconds.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const dist = new URL('../dist/cli/main.js', import.meta.url)
const src = fileURLToPath(new URL('../src/', import.meta.url))

/** Why the build cannot be used, or undefined when it can. */
function stale() {
  if (!existsSync(dist)) return 'dist/ is missing'
  if (!existsSync(src)) return undefined
  const built = statSync(dist).mtimeMs
  // Directories too: their mtime changes when a file is added, removed or renamed.
  if (statSync(src).mtimeMs > built) return 'dist/ is older than src/'
  for (const entry of readdirSync(src, { recursive: true })) {
    if (statSync(src + String(entry)).mtimeMs > built) return 'dist/ is older than src/'
  }
  return undefined
}

const why = stale()
if (why === undefined) {
  await import(dist.href)
} else if (!existsSync(src)) {
  process.stderr.write(`mandate: ${why} and there are no sources to run: npm run build\n`)
  process.exit(2)
} else {
  let register
  try {
    ;({ register } = await import('tsx/esm/api'))
  } catch {
    process.stderr.write(`mandate: ${why} and tsx is not installed to run the sources: npm ci (or npm run build)\n`)
    process.exit(2)
  }
  if (process.stderr.isTTY) process.stderr.write(`mandate: ${why}: running the sources through tsx (slower; npm run build)\n`)
  register()
  await import(new URL('../src/cli/main.ts', import.meta.url).href)
}
