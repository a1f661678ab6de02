import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { unwatchFile, watchFile } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { calculateJwkThumbprint, type JWK } from 'jose'
import type { Logger } from '../telemetry/log.js'

/**
 * Mandate signs with ES256: the fastest signature on this hardware through
 * node:crypto (about 1.35x EdDSA for signing, 1.6x for verifying) and the
 * JOSE algorithm every resource-server library supports.
 */
export const SIGNING_ALG = 'ES256'

/**
 * Mandate's member on a private JWK of the keys file: the epoch second from
 * which the key may sign. Absent: at once. `mandate keys rotate` adds a key
 * that activates later, so that every instance publishes it before any signs
 * with it.
 */
export const ACTIVATES_AT = 'mandate_activates_at'

export interface SigningKey {
  readonly kid: string
  readonly alg: typeof SIGNING_ALG
  readonly privateKey: KeyObject
  readonly publicKey: KeyObject
  readonly publicJwk: JWK
  /** Epoch seconds from which it may sign (0: always). */
  readonly activatesAt: number
}

/**
 * The broker's signing keys: all are published and verify; the one that
 * signs is the most recently activated (`current`, read at each use).
 */
export interface SigningKeys {
  readonly current: SigningKey
  readonly all: readonly SigningKey[]
  /** RFC 7517 JWK Set of the public keys, as served at /.well-known/jwks.json. */
  readonly jwks: { readonly keys: readonly JWK[] }
  byKid(kid: string): SigningKey | undefined
}

/**
 * The key that signs at `now` (epoch seconds): of the keys already active,
 * the one activated last; on a tie, the first in the file. Undefined when
 * none is active yet.
 */
export function signingKeyAt(all: readonly SigningKey[], now: number): SigningKey | undefined {
  let best: SigningKey | undefined
  for (const k of all) if (k.activatesAt <= now && (best === undefined || k.activatesAt > best.activatesAt)) best = k
  return best
}

/** The next activation after `now`, or Infinity. */
function nextActivation(all: readonly SigningKey[], now: number): number {
  let next = Infinity
  for (const k of all) if (k.activatesAt > now && k.activatesAt < next) next = k.activatesAt
  return next
}

async function toSigningKey(privateJwk: JWK): Promise<SigningKey> {
  if (privateJwk.kty !== 'EC' || privateJwk.crv !== 'P-256' || typeof privateJwk.d !== 'string') {
    throw new TypeError('signing keys must be EC P-256 private JWKs (ES256)')
  }
  const activates = (privateJwk as Record<string, unknown>)[ACTIVATES_AT]
  if (activates !== undefined && !(Number.isSafeInteger(activates) && (activates as number) >= 0)) {
    throw new TypeError(`${ACTIVATES_AT} must be epoch seconds`)
  }
  const privateKey = createPrivateKey({ key: privateJwk, format: 'jwk' })
  const publicKey = createPublicKey(privateKey)
  const { kty, crv, x, y } = privateJwk
  const thumbprint = await calculateJwkThumbprint({ kty, crv, x, y } as JWK)
  const kid = privateJwk.kid ?? thumbprint
  const publicJwk: JWK = { kty, crv, x, y, kid, alg: SIGNING_ALG, use: 'sig' } as JWK
  return { kid, alg: SIGNING_ALG, privateKey, publicKey, publicJwk, activatesAt: (activates as number | undefined) ?? 0 }
}

/**
 * Builds the key set from private JWKs, as it stands at `now` (epoch
 * seconds; default the system clock): `current` is fixed. Throws when the set
 * is empty, kids repeat, or no key is active yet.
 */
export async function signingKeysFromJwks(jwks: { keys: readonly JWK[] }, now = Math.floor(Date.now() / 1000)): Promise<SigningKeys> {
  if (!Array.isArray(jwks.keys) || jwks.keys.length === 0) throw new TypeError('signing key set is empty')
  const all = await Promise.all(jwks.keys.map(toSigningKey))
  const byKid = new Map(all.map((k) => [k.kid, k]))
  if (byKid.size !== all.length) throw new TypeError('signing keys must have distinct kids')
  const current = signingKeyAt(all, now)
  if (current === undefined) throw new TypeError(`no signing key is active yet (every ${ACTIVATES_AT} is in the future)`)
  return { current, all, jwks: { keys: all.map((k) => k.publicJwk) }, byKid: (kid) => byKid.get(kid) }
}

/** A new ES256 private JWK with its RFC 7638 thumbprint as `kid`. */
export async function generateSigningJwk(): Promise<JWK> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwk = privateKey.export({ format: 'jwk' }) as JWK
  const kid = await calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } as JWK)
  return { ...jwk, kid, alg: SIGNING_ALG, use: 'sig' }
}

/**
 * Loads the private JWK set from `file`. When the file does not exist and
 * `generateIfMissing` is set (embedded default), creates it once, readable by
 * this user only.
 */
export async function loadSigningKeys(file: string, generateIfMissing: boolean, now?: number): Promise<SigningKeys> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !generateIfMissing) {
      throw new TypeError(`cannot read signing keys from ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
    }
    const jwks = { keys: [await generateSigningJwk()] }
    await mkdir(dirname(file), { recursive: true, mode: 0o700 })
    await writeFile(file, JSON.stringify(jwks, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
    return signingKeysFromJwks(jwks, now)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new TypeError(`signing keys in ${file} are not JSON`)
  }
  try {
    return await signingKeysFromJwks(parsed as { keys: JWK[] }, now)
  } catch (err) {
    throw new TypeError(`signing keys in ${file}: ${(err as Error).message}`)
  }
}

/** Told when the signing key changed (a later key's activation came, or a reload brought one); `previous` signed until now. */
export type KeySwitchListener = (current: SigningKey, previous: SigningKey) => void

export interface SigningKeyRing extends SigningKeys {
  /** Re-reads the file now; a bad file is reported and the last good set stays. */
  reload(): Promise<boolean>
  /** Calls `listener` at every later switch of the signing key; returns the unsubscribe. */
  onSwitch(listener: KeySwitchListener): () => void
  /** The keys file as last read; no I/O. */
  status(): KeysFileStatus
  close(): void
}

/**
 * Whether the keys file still holds the keys in force. Not `ok` from a
 * change that left it unusable (removed, unreadable, not a key set, no key
 * active) until a good one: the last good keys keep signing, but a rotation
 * cannot arrive and an instance started now would refuse to start.
 */
export type KeysFileStatus = { readonly ok: true } | { readonly ok: false; readonly reason: string }

export interface KeyRingOptions {
  readonly generateIfMissing: boolean
  /** Epoch milliseconds. */
  readonly clock: () => number
  readonly logger: Logger
  /** How often the file is checked for a change (a Kubernetes Secret is replaced by a symlink swap). */
  readonly pollMs?: number
}

/**
 * The keys file, followed: every instance re-reads it when it changes and
 * publishes every key in it at once, but signs with a new key only from its
 * `mandate_activates_at`, so that by then every instance (and every verifier
 * caching the JWKS) has it. A file that does not parse, or whose keys are
 * none of them active, is refused with an error line and the last good set
 * stays in force. Keys removed from the file leave the JWKS at the reload.
 */
export async function openSigningKeys(file: string, options: KeyRingOptions): Promise<SigningKeyRing> {
  const nowSeconds = () => Math.floor(options.clock() / 1000)
  const log = options.logger.child({ module: 'keys' })
  let set = await loadSigningKeys(file, options.generateIfMissing, nowSeconds())
  let current = set.current
  let next = nextActivation(set.all, nowSeconds())
  let timer: NodeJS.Timeout | undefined
  let fileStatus: KeysFileStatus = { ok: true }
  const listeners = new Set<KeySwitchListener>()

  /** Moves `current` to the key active now; arms a timer for the next activation. */
  const settle = () => {
    const now = nowSeconds()
    const key = signingKeyAt(set.all, now) ?? current
    next = nextActivation(set.all, now)
    clearTimeout(timer)
    if (next !== Infinity) {
      // setTimeout holds at most ~24.8 days; a later activation is re-armed on the way.
      timer = setTimeout(settle, Math.min(Math.max(0, next * 1000 - options.clock()) + 5, 2 ** 31 - 1))
      timer.unref()
    }
    // Always the object of the set in force: a reloaded file may bring new material under the same kid.
    const previous = current
    current = key
    if (key.kid !== previous.kid) {
      log.info({ kid: key.kid, previous_kid: previous.kid }, 'signing with a new key')
      for (const listener of listeners) listener(key, previous)
    }
  }

  const reload = async (): Promise<boolean> => {
    try {
      const loaded = await loadSigningKeys(file, false, nowSeconds())
      const before = new Set(set.all.map((k) => k.kid))
      set = loaded
      if (loaded.all.some((k) => !before.has(k.kid)) || loaded.all.length !== before.size) {
        log.info(
          { kids: loaded.all.map((k) => ({ kid: k.kid, activates_at: k.activatesAt === 0 ? undefined : new Date(k.activatesAt * 1000).toISOString() })) },
          'signing keys reloaded',
        )
      }
      settle()
      fileStatus = { ok: true }
      return true
    } catch (err) {
      fileStatus = { ok: false, reason: (err as Error).message }
      log.error({ file, reason: fileStatus.reason }, 'signing keys not reloaded; the last good set stays')
      return false
    }
  }

  let reloading: Promise<unknown> = Promise.resolve()
  const onChange = () => {
    reloading = reloading.then(reload)
  }
  watchFile(file, { interval: options.pollMs ?? 5_000, persistent: false }, onChange)
  settle()

  return {
    get current() {
      // A key whose time came between timer ticks (a clock jump, a sleeping laptop).
      if (nowSeconds() >= next) settle()
      return current
    },
    get all() {
      return set.all
    },
    get jwks() {
      return set.jwks
    },
    byKid: (kid) => set.byKid(kid),
    reload,
    onSwitch(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    status: () => fileStatus,
    close() {
      clearTimeout(timer)
      unwatchFile(file, onChange)
    },
  }
}
