import { defineConfig, type TestProjectInlineConfiguration } from 'vitest/config'

/**
 * Every project reads the workspace packages (packages/*) from their src/
 * through the `mandate-source` export condition, as tsc does: a test never
 * runs a stale build of a package. The packed tarballs are tested as users
 * install them by the e2e package tests.
 */
const conditions = ['mandate-source', 'module', 'node', 'import', 'default']
/**
 * Vitest hands the SSR conditions to the worker's Node as `--conditions`, and
 * Node applies them to `require()` as well: with `import` among them, a CommonJS
 * package requiring a dual one (express's router and `is-promise`) got its ESM
 * entry and a namespace object instead of a function. Vite adds `import`,
 * `require` and `default` by itself, as each import asks.
 */
const ssrConditions = ['mandate-source', 'module', 'node', 'development|production']
const resolveSources = { resolve: { conditions }, ssr: { resolve: { conditions: ssrConditions, externalConditions: ['mandate-source'] } } }

function project(config: NonNullable<TestProjectInlineConfiguration['test']>): TestProjectInlineConfiguration {
  return { ...resolveSources, test: config }
}

export default defineConfig({
  // The global setup runs in Vitest's own environment (`__vitest__`), which takes no project's resolve
  // options: it imports the broker's test support, which reads the packages, so it gets the condition too.
  environments: { __vitest__: { resolve: { conditions, externalConditions: ['mandate-source'] } } },
  test: {
    // Opens the run-wide log sink and scans it for tokens and secrets once every file has run.
    globalSetup: ['test/global-setup.ts'],
    projects: [
      project({ name: 'unit', include: ['test/unit/**/*.test.ts', 'packages/*/test/**/*.test.ts'], environment: 'node' }),
      project({ name: 'integration', include: ['test/integration/**/*.test.ts'], environment: 'node', testTimeout: 30_000, hookTimeout: 30_000 }),
      // One suite per port, run on every adapter of it (memory, PGlite, PostgreSQL, Redis): each adapter case owns its database or key prefix.
      project({ name: 'contract', include: ['test/contract/**/*.test.ts'], environment: 'node', testTimeout: 30_000, hookTimeout: 60_000 }),
      project({ name: 'e2e', include: ['test/e2e/**/*.test.ts'], environment: 'node', testTimeout: 60_000, hookTimeout: 60_000 }),
      // Property-based hostile input against the real app: each test is one property of a thousand or more cases.
      // The console in Debian's Chromium (test/support/browser.ts) against `serve --dev` processes: one file at a time,
      // since a browser and a broker per file already fill two cores; a page's first render may wait on a busy machine.
      project({
        name: 'browser',
        include: ['test/browser/**/*.test.ts'],
        environment: 'node',
        fileParallelism: false,
        testTimeout: 90_000,
        hookTimeout: 90_000,
        // A page waited for (expect.poll) may take seconds while the other projects load the machine.
        expect: { poll: { timeout: 30_000, interval: 100 } },
      }),
      project({ name: 'hostile', include: ['test/hostile/**/*.test.ts'], environment: 'node', testTimeout: 180_000, hookTimeout: 60_000 }),
    ],
  },
})
