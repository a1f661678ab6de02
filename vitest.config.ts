import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    // Opens the run-wide log sink and scans it for tokens and secrets once every file has run.
    globalSetup: ['test/global-setup.ts'],
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], environment: 'node' } },
      { test: { name: 'integration', include: ['test/integration/**/*.test.ts'], environment: 'node', testTimeout: 30_000, hookTimeout: 30_000 } },
      // One suite per port, run on every adapter of it (memory, PGlite, PostgreSQL, Redis): each adapter case owns its database or key prefix.
      { test: { name: 'contract', include: ['test/contract/**/*.test.ts'], environment: 'node', testTimeout: 30_000, hookTimeout: 60_000 } },
      { test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'], environment: 'node', testTimeout: 60_000, hookTimeout: 60_000 } },
      // Property-based hostile input against the real app: each test is one property of a thousand or more cases.
      { test: { name: 'hostile', include: ['test/hostile/**/*.test.ts'], environment: 'node', testTimeout: 180_000, hookTimeout: 60_000 } },
    ],
  },
})
