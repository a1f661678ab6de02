/**
 * FOR BENCHMARKS ONLY. Summarises a V8 CPU profile (`node --cpu-prof`) of a
 * broker under load: where the main thread's time per token goes.
 *
 * Every sample is put in one category by its stack, innermost frame first:
 * a node:crypto one-shot sign or verify call is `sign` or `verify`; otherwise
 * the innermost frame in Mandate's own sources (src/…) decides, mapped to
 * the steps of an exchange (verify, sign, parse, policy, audit, HTTP…);
 * a stack with no Mandate frame goes by its innermost library (Node's HTTP
 * and streams, the PostgreSQL or Redis client, pino). `(idle)` is left out of
 * the busy time; `(garbage collector)` and `(program)` (V8 and native code
 * outside any JS frame) are categories of their own.
 *
 * Only the main thread is sampled: the signature computations themselves run
 * on libuv's thread pool (src/tokens/jws.ts), so they show here as the JS
 * that calls them; the caller adds the process's other threads from /proc.
 */
import { readFileSync } from 'node:fs'

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: readonly number[]
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[]
  readonly startTime: number
  readonly endTime: number
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

export interface ProfileSummary {
  readonly text: string
  readonly markdown: string
  readonly json: {
    readonly tokens: number
    readonly busy_ms: number
    readonly categories: readonly { readonly category: string; readonly ms: number; readonly share: number; readonly us_per_token: number }[]
    readonly functions: readonly { readonly fn: string; readonly ms: number; readonly share: number }[]
  }
}

/** The category of a Mandate source file (path under src/) and function. */
function sourceCategory(path: string, fn: string): string {
  if (path === 'tokens/jws.ts') return /verif/i.test(fn) ? 'verify (key checks)' : 'parse (JWT decode, header and claim checks)'
  if (path === 'tokens/mint.ts' || path === 'tokens/keys.ts') return 'sign (claims, encoding)'
  if (/^tokens\/(client-auth|subject|upstream|replay-memory)\.ts$/.test(path)) return 'client auth + subject token (lookups, replay check)'
  if (path === 'tokens/replay-redis.ts') return 'replay check (Redis)'
  if (path === 'http/form.ts' || path === 'http/client-credentials.ts') return 'parse (form body)'
  if (path.startsWith('http/')) return 'HTTP (routing, response)'
  if (path.startsWith('policy/') || path === 'core/policy-eval.ts') return 'policy'
  if (path.startsWith('core/')) return 'exchange logic (claims, errors)'
  if (path.startsWith('audit/')) return 'audit log'
  if (path.startsWith('revocation/')) return 'revocation check'
  if (path.startsWith('telemetry/')) return 'logging + telemetry'
  return `other Mandate (${path})`
}

/** The category of a library frame, or undefined to look further out. */
function libraryCategory(url: string): string | undefined {
  if (url.includes('/node_modules/postgres/')) return 'audit log (PostgreSQL client)'
  if (url.includes('/node_modules/ioredis/') || url.includes('/node_modules/@ioredis/') || url.includes('/node_modules/redis-parser/')) {
    return 'replay + revocation (Redis client)'
  }
  if (url.includes('/node_modules/pino')) return 'logging + telemetry'
  if (url.includes('/node_modules/hono/') || url.includes('/node_modules/@hono/')) return 'HTTP (routing, response)'
  if (
    /^node:(_http|http|net|stream|internal\/(http|streams|stream_base|net|js_stream|timers|url|querystring))/.test(url) ||
    url.startsWith('node:internal/streams')
  ) {
    return 'HTTP (Node: sockets, parser, streams)'
  }
  return undefined
}

/**
 * Reads `file` and summarises the samples between `from` and `to` (µs, the
 * profile's monotonic clock; the whole profile when absent), per `tokens`.
 */
export function summariseProfile(file: string, tokens: number, root: string, window?: { from: number; to: number }): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const srcPrefix = `file://${root}/src/`

  const categoryOf = new Map<number, string>()
  function categorise(id: number): string {
    const known = categoryOf.get(id)
    if (known !== undefined) return known
    const leaf = byId.get(id)!.callFrame.functionName
    let category: string | undefined
    if (leaf === '(idle)') category = 'idle'
    else if (leaf === '(garbage collector)') category = 'garbage collection'
    else if (leaf === '(program)') category = 'V8 + native, outside JS'
    let library: string | undefined
    for (let at: number | undefined = id; category === undefined && at !== undefined; at = parent.get(at)) {
      const { url, functionName } = byId.get(at)!.callFrame
      if (url === 'node:internal/crypto/sig') category = /^verify/i.test(functionName) ? 'verify (node:crypto calls)' : 'sign (node:crypto calls)'
      else if (url.startsWith(srcPrefix)) category = sourceCategory(url.slice(srcPrefix.length), functionName)
      else library ??= libraryCategory(url)
    }
    category ??= library ?? 'other (Node internals)'
    categoryOf.set(id, category)
    return category
  }

  const categories = new Map<string, number>()
  const functions = new Map<string, number>()
  let t = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0
    if (window !== undefined && (t < window.from || t > window.to)) continue
    const dt = profile.timeDeltas[i + 1] ?? 0
    const id = profile.samples[i]!
    const category = categorise(id)
    categories.set(category, (categories.get(category) ?? 0) + dt)
    if (category !== 'idle') {
      const { functionName, url, lineNumber } = byId.get(id)!.callFrame
      const where = url === '' ? '' : ` ${url.replace(`file://${root}/`, '').replace(/^.*node_modules\//, '')}:${lineNumber + 1}`
      const key = `${functionName || '(anonymous)'}${where}`
      functions.set(key, (functions.get(key) ?? 0) + dt)
    }
  }
  const idleUs = categories.get('idle') ?? 0
  categories.delete('idle')
  const busyUs = [...categories.values()].reduce((a, b) => a + b, 0)
  const perToken = (us: number) => (tokens > 0 ? us / tokens : 0)
  const cats = [...categories.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([category, us]) => ({ category, ms: Math.round(us / 1000), share: us / busyUs, us_per_token: Number(perToken(us).toFixed(1)) }))
  const fns = [...functions.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 12)
    .map(([fn, us]) => ({ fn, ms: Math.round(us / 1000), share: us / busyUs }))
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`
  const head = `main thread: ${(busyUs / 1000).toFixed(0)} ms busy, ${(idleUs / 1000).toFixed(0)} ms idle, for ${tokens.toLocaleString('en-US')} responses: ${perToken(busyUs).toFixed(1)} µs busy per response`

  const text = [
    head,
    ...cats.map((c) => `  ${c.category.padEnd(52)} ${pct(c.share).padStart(6)}  ${c.us_per_token.toFixed(1).padStart(6)} µs/response`),
    '  top functions by self time:',
    ...fns.map((f) => `    ${pct(f.share).padStart(6)}  ${f.fn}`),
  ].join('\n')
  const markdown = [
    head + '.',
    '',
    '| category | share of busy time | µs per response |',
    '|---|---:|---:|',
    ...cats.map((c) => `| ${c.category} | ${pct(c.share)} | ${c.us_per_token.toFixed(1)} |`),
    '',
    'Top functions by self time:',
    '',
    '| share | function |',
    '|---:|---|',
    ...fns.map((f) => `| ${pct(f.share)} | \`${f.fn.replace(/\|/g, '\\|')}\` |`),
  ].join('\n')
  return { text, markdown, json: { tokens, busy_ms: Math.round(busyUs / 1000), categories: cats, functions: fns } }
}
