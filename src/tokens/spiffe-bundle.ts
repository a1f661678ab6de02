import type { KeyObject } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import type { Logger } from '../telemetry/log.js'
import { fetchLimited, type FetchLimits } from './fetch-limited.js'
import { importPublicJwk, KeyRefused } from './jwk.js'
import { JwtError, keyFitsAlgorithm, type JwsHeader } from './jws.js'
import { withoutUrlSecrets } from './upstream.js'

/** Where one trust domain's bundle is read from, and how often. */
export interface SpiffeBundleSource {
  readonly trustDomain: string
  /** Exactly one of `file` and `url`. */
  readonly file?: string | undefined
  readonly url?: string | undefined
  /** Longest time between two reads, seconds. */
  readonly refreshSeconds: number
}

export interface SpiffeBundleLimits extends FetchLimits {
  readonly maxKeys: number
  /** How long the last good bundle still serves once a refresh is overdue and failing, ms. */
  readonly staleMaxAgeMs: number
}

/** One trust domain's bundle as readiness and the log see it. */
export interface SpiffeBundleStatus {
  readonly trustDomain: string
  readonly usable: boolean
  /** Epoch ms of the read the bundle in use came from. */
  readonly fetchedAt?: number
  /** The bundle's `spiffe_sequence`, when it has one. */
  readonly sequence?: number
  readonly keys: number
  readonly lastFailure?: string
}

/** The JWT-SVID keys of every configured trust domain (SPIFFE Trust Domain and Bundle spec §4). */
export interface SpiffeBundles {
  /**
   * The one `jwt-svid` key of `trustDomain`'s bundle that `header` selects, from memory (no I/O).
   * Throws `JwtError`: `trust_domain_not_trusted`, `bundle_unavailable` (none read, or too old), `unknown_kid`.
   */
  key(trustDomain: string, header: JwsHeader): KeyObject
  status(): SpiffeBundleStatus[]
  /** Reads every bundle that is due (its interval passed, or its file changed); never rejects. */
  refreshIfDue(): Promise<void>
  /** Checks every second for a bundle that is due (read them once first with `refreshIfDue`); returns the stop. */
  keepFresh(): () => void
}

/** The usable keys of a parsed bundle. */
interface Bundle {
  readonly keys: readonly { readonly kid: string; readonly key: KeyObject }[]
  readonly sequence: number | undefined
  /** `spiffe_refresh_hint`, seconds. */
  readonly refreshHint: number | undefined
}

const MIN_REFRESH_MS = 1_000

/**
 * A SPIFFE bundle as JSON text → its JWT-SVID keys. SPIFFE Trust Domain and
 * Bundle §4.1: the bundle is a JWK set whose keys each carry `use`; only
 * `jwt-svid` keys verify JWT-SVIDs (an `x509-svid` key is an X.509
 * authority, never a JWT key), and JWT-SVID keys need `kid` (§4.2.1).
 * Entries that are not usable are left out and named in `ignored`.
 */
export function parseSpiffeBundle(text: string, maxKeys: number): { bundle: Bundle; ignored: string[] } {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    throw new Error('bundle is not JSON')
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error('bundle is not a JSON object')
  const { keys: entries, spiffe_sequence: seq, spiffe_refresh_hint: hint } = doc as Record<string, unknown>
  if (!Array.isArray(entries)) throw new Error('bundle has no keys array')
  const keys: { kid: string; key: KeyObject }[] = []
  const ignored: string[] = []
  for (const entry of entries) {
    const jwk = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>
    if (jwk['use'] === 'x509-svid') continue
    const kid = jwk['kid']
    try {
      if (jwk['use'] !== 'jwt-svid') throw new KeyRefused('use is not jwt-svid')
      if (typeof kid !== 'string' || kid === '') throw new KeyRefused('no kid')
      if (keys.length >= maxKeys) throw new KeyRefused('over the key limit')
      keys.push({ kid, key: importPublicJwk(jwk) })
    } catch (err) {
      if (!(err instanceof KeyRefused)) throw err
      ignored.push(`${typeof kid === 'string' ? kid.slice(0, 128) : '(no kid)'}: ${err.message}`)
    }
  }
  const number = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined)
  return { bundle: { keys, sequence: number(seq), refreshHint: number(hint) }, ignored }
}

/** One trust domain's reader: its bundle, when it was read, and when the next read is due. */
function bundleReader(source: SpiffeBundleSource, limits: SpiffeBundleLimits, clock: () => number, logger: Logger | undefined) {
  let bundle: Bundle | undefined
  let fetchedAt: number | undefined
  let nextDue = 0
  let lastFailure: string | undefined
  let fileStamp: string | undefined
  let running: Promise<void> | undefined
  const interval = () => Math.max(MIN_REFRESH_MS, Math.min(source.refreshSeconds, bundle?.refreshHint ?? Infinity) * 1000)

  async function readText(): Promise<string> {
    if (source.file !== undefined) {
      const s = await stat(source.file)
      fileStamp = `${s.ino}:${s.size}:${s.mtimeMs}`
      // The same bound as a fetched bundle's: a runaway file is refused, not read whole.
      if (s.size > limits.maxBytes) throw new Error(`bundle file over ${limits.maxBytes} bytes`)
      return readFile(source.file, 'utf8')
    }
    const response = await fetchLimited(source.url!, { headers: { accept: 'application/json' } }, limits)
    return response.text()
  }

  async function read(): Promise<void> {
    const started = clock()
    try {
      const { bundle: read, ignored } = parseSpiffeBundle(await readText(), limits.maxKeys)
      if (ignored.length > 0) logger?.warn({ trustDomain: source.trustDomain, ignored: ignored.slice(0, 20) }, 'SPIFFE bundle keys left out')
      if (lastFailure !== undefined || bundle === undefined) {
        logger?.info({ trustDomain: source.trustDomain, keys: read.keys.length, sequence: read.sequence }, 'SPIFFE bundle read')
      }
      bundle = read
      fetchedAt = started
      lastFailure = undefined
      nextDue = started + interval()
    } catch (err) {
      // A bundle URL may carry credentials: the reason (logged, and shown by readiness) keeps its origin and path only.
      const reason = withoutUrlSecrets((err as Error).message)
      if (lastFailure === undefined)
        logger?.warn({ trustDomain: source.trustDomain, reason }, 'SPIFFE bundle read failed; its SVIDs are refused once no bundle serves')
      lastFailure = reason
      nextDue = started + Math.min(interval(), 5_000)
    }
  }

  async function fileChanged(): Promise<boolean> {
    if (source.file === undefined) return false
    try {
      const s = await stat(source.file)
      return `${s.ino}:${s.size}:${s.mtimeMs}` !== fileStamp
    } catch {
      return false
    }
  }

  /** The bundle, if one serves now: read, and not older than its interval plus the stale allowance. */
  const serving = (): Bundle | undefined =>
    bundle !== undefined && fetchedAt !== undefined && clock() - fetchedAt <= interval() + limits.staleMaxAgeMs ? bundle : undefined

  return {
    serving,
    async refreshIfDue(): Promise<void> {
      if (running !== undefined) return running
      if (clock() < nextDue && !(await fileChanged())) return
      running = read().finally(() => {
        running = undefined
      })
      return running
    },
    status(): SpiffeBundleStatus {
      const b = serving()
      return {
        trustDomain: source.trustDomain,
        usable: b !== undefined,
        keys: b?.keys.length ?? 0,
        ...(fetchedAt === undefined ? {} : { fetchedAt }),
        ...(b?.sequence === undefined ? {} : { sequence: b.sequence }),
        ...(lastFailure === undefined ? {} : { lastFailure }),
      }
    },
  }
}

/**
 * The bundles of the configured trust domains, each read from its file or
 * bundle endpoint (a URL fetched with `fetchLimited`'s bounds), again after
 * `refreshSeconds` or the bundle's shorter `spiffe_refresh_hint`, and a
 * file also as soon as it changes. A bundle that cannot be read is kept for
 * `staleMaxAgeMs` past its due time, then nothing serves: fail closed.
 */
export function createSpiffeBundles(
  sources: readonly SpiffeBundleSource[],
  limits: SpiffeBundleLimits,
  clock: () => number = Date.now,
  logger?: Logger,
): SpiffeBundles {
  const readers = new Map(sources.map((s) => [s.trustDomain, bundleReader(s, limits, clock, logger)]))
  const refreshIfDue = async () => {
    await Promise.all([...readers.values()].map((r) => r.refreshIfDue()))
  }
  return {
    key(trustDomain, header) {
      const reader = readers.get(trustDomain)
      if (reader === undefined) throw new JwtError('trust_domain_not_trusted')
      const bundle = reader.serving()
      if (bundle === undefined) throw new JwtError('bundle_unavailable')
      // SPIFFE JWT-SVID §3.1: kid is required, and selects the key; the key must be of the type `alg` signs with.
      const found = bundle.keys.filter((k) => k.kid === header.kid && keyFitsAlgorithm(header.alg, k.key))
      if (found.length !== 1) throw new JwtError(found.length === 0 ? 'unknown_kid' : 'ambiguous_key')
      return found[0]!.key
    },
    status: () => [...readers.values()].map((r) => r.status()),
    refreshIfDue,
    keepFresh() {
      if (readers.size === 0) return () => {}
      const timer = setInterval(() => void refreshIfDue(), 1_000)
      timer.unref()
      return () => clearInterval(timer)
    },
  }
}
