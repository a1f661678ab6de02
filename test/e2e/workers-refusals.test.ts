/**
 * `serve --workers N` refuses, before forking, what a fleet of processes
 * cannot keep: a message naming the setting on stderr and exit 1, never a
 * fleet that silently splits its state.
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = new URL('../../', import.meta.url).pathname
let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mandate-workers-refusals-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

function serve(args: readonly string[], env: Record<string, string>) {
  const base: Record<string, string | undefined> = {
    ...process.env,
    MANDATE_DATA_DIR: join(dir, 'data'),
    MANDATE_ISSUER: 'http://localhost:8080',
    PORT: '0',
    LOG_LEVEL: 'warn',
  }
  delete base['DATABASE_URL']
  delete base['REDIS_URL']
  delete base['MANDATE_PROMETHEUS_PORT']
  return spawnSync(process.execPath, [join(root, 'bin/mandate.js'), 'serve', '--workers', '2', ...args], {
    cwd: root,
    env: { ...base, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  })
}

describe('serve --workers refuses', () => {
  it('--dev: its user issuer lives in one process', () => {
    const r = serve(['--dev'], {})
    expect(r.status).toBe(1)
    expect(r.stderr).toContain('--dev keeps its user issuer in one process')
  })

  it('PGlite: one process’s database', () => {
    const r = serve([], { REDIS_URL: 'redis://127.0.0.1:6379' })
    expect(r.status).toBe(1)
    expect(r.stderr).toContain('needs PostgreSQL (DATABASE_URL)')
  })

  it('a Prometheus endpoint: each worker would answer with its own counts', () => {
    const r = serve([], { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/postgres', REDIS_URL: 'redis://127.0.0.1:6379', MANDATE_PROMETHEUS_PORT: '0' })
    expect(r.status).toBe(1)
    expect(r.stderr).toContain('telemetry.prometheus cannot be served by several processes')
  })
})
