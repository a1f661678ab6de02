/**
 * bench/support/profile.ts puts every sample of a V8 CPU profile in one
 * category by its stack, and divides by the tokens served: checked on a
 * hand-made profile whose answer is known.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { summariseProfile } from '../../bench/support/profile.js'

const ROOT = '/srv/mandate'
const src = (path: string) => `file://${ROOT}/src/${path}`

/** id → [functionName, url, parent id] */
const NODES: Record<number, [string, string, number | undefined]> = {
  1: ['(root)', '', undefined],
  2: ['(idle)', '', 1],
  3: ['(garbage collector)', '', 1],
  4: ['(program)', '', 1],
  5: ['token', src('http/routes/token.ts'), 1],
  6: ['exchangeToken', src('core/exchange.ts'), 5],
  7: ['verifySignature', src('tokens/jws.ts'), 6],
  8: ['', src('tokens/jws.ts'), 7], // the anonymous Promise executor
  9: ['verifyOneShot', 'node:internal/crypto/sig', 8],
  10: ['decodeJws', src('tokens/jws.ts'), 6],
  11: ['parse', '', 10], // JSON.parse: a native frame, no url
  12: ['appendGroup', src('audit/sql.ts'), 6],
  13: ['handle', `file://${ROOT}/node_modules/postgres/src/connection.js`, 12],
  14: ['onStreamRead', 'node:internal/stream_base_commons', 1],
  15: ['data', `file://${ROOT}/node_modules/postgres/src/connection.js`, 14],
  16: ['parserOnIncoming', 'node:_http_server', 1],
  17: ['signOneShot', 'node:internal/crypto/sig', 1],
}

/** Samples per leaf node, 1 ms apart. */
const SAMPLES: Record<number, number> = { 2: 50, 3: 5, 4: 5, 9: 20, 11: 10, 13: 4, 15: 6, 16: 30, 17: 10 }

describe('bench profile summary', () => {
  let dir: string
  let file: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mandate-profile-'))
    file = join(dir, 'test.cpuprofile')
    const nodes = Object.entries(NODES).map(([id, [functionName, url]]) => ({
      id: Number(id),
      callFrame: { functionName, url, lineNumber: 0, columnNumber: 0, scriptId: '0' },
      children: Object.entries(NODES)
        .filter(([, [, , parent]]) => parent === Number(id))
        .map(([child]) => Number(child)),
    }))
    const samples = Object.entries(SAMPLES).flatMap(([id, n]) => Array.from({ length: n }, () => Number(id)))
    // One more trailing sample: each sample's time is the delta to the next one.
    const timeDeltas = [...samples, 2].map(() => 1_000)
    await writeFile(file, JSON.stringify({ nodes, startTime: 0, endTime: (samples.length + 1) * 1_000, samples: [...samples, 2], timeDeltas }))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('puts each sample in the category of its innermost Mandate frame, crypto calls and libraries first', () => {
    const { json } = summariseProfile(file, 10, ROOT)
    const ms = Object.fromEntries(json.categories.map((c) => [c.category, c.ms]))
    expect(ms).toEqual({
      'HTTP (Node: sockets, parser, streams)': 30,
      'verify (node:crypto calls)': 20,
      'audit log': 4, // the postgres client called from src/audit: the audit step's
      'audit log (PostgreSQL client)': 6, // the postgres client reading its socket
      'parse (JWT decode, header and claim checks)': 10,
      'sign (node:crypto calls)': 10,
      'garbage collection': 5,
      'V8 + native, outside JS': 5,
    })
    // Idle time is not busy time: 90 ms busy over 10 tokens.
    expect(json.busy_ms).toBe(90)
    expect(json.categories.find((c) => c.category === 'verify (node:crypto calls)')?.us_per_token).toBe(2000)
    expect(json.categories.reduce((a, c) => a + c.share, 0)).toBeCloseTo(1, 9)
    expect(json.functions[0]).toMatchObject({ fn: 'parserOnIncoming node:_http_server:1', ms: 30 })
  })

  it('keeps only the samples inside the window it is given', () => {
    // Samples 1..50 are idle (t = 1..50 ms), 51..55 GC, 56..60 program: a window over the GC samples alone.
    const { json } = summariseProfile(file, 1, ROOT, { from: 51_000, to: 55_000 })
    expect(json.categories).toEqual([{ category: 'garbage collection', ms: 5, share: 1, us_per_token: 5000 }])
  })
})
