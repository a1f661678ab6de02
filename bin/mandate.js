#!/usr/bin/env node
// Runs the built CLI from dist/ when present (npm run build); otherwise the
// TypeScript sources through tsx, so a fresh clone works after `npm ci`.
import { existsSync } from 'node:fs'

const dist = new URL('../dist/cli/main.js', import.meta.url)
if (existsSync(dist)) {
  await import(dist.href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import(new URL('../src/cli/main.ts', import.meta.url).href)
}
