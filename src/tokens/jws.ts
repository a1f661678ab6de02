import { constants, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { decodeUtf8, holdsOnlyStorableText } from '../core/text.js'
import { lifetimeProblem, numericDateProblem } from '../core/lifetime.js'

/**
 * Compact-JWS verification on `node:crypto` one-shot calls with keys imported
 * once. jose's verification goes through WebCrypto and costs more per call on
 * this hot path; jose still fetches and selects keys (see upstream.ts).
 *
 * Every failure throws `JwtError` with a stable `code`; callers map it to the
 * one OAuth error their role calls for.
 */
export class JwtError extends Error {
  override readonly name = 'JwtError'
  constructor(readonly code: string) {
    super(code)
  }
}

// Algorithms Mandate accepts anywhere: the verifier package's list, so that resource servers accept exactly what the broker does.
export { ASYMMETRIC_ALGORITHMS, type AsymmetricAlgorithm as Algorithm } from '@mandate/verifier/claims'

export interface JwsHeader {
  readonly alg: string
  readonly kid?: string
  readonly typ?: string
  readonly [name: string]: unknown
}

export interface DecodedJws {
  readonly header: JwsHeader
  readonly payload: Record<string, unknown>
  readonly signingInput: Buffer
  readonly signature: Buffer
}

const B64URL = /^[A-Za-z0-9_-]+$/
/** Header parameters that carry keys or key locations: never trusted (RFC 8725 §3.10). */
const KEY_HEADERS = ['jwk', 'jku', 'x5u', 'x5c']
export const MAX_JWT_LENGTH = 16 * 1024

function parseJsonObject(part: string, code: string): Record<string, unknown> {
  // RFC 7519 §7.2: the JOSE header and the claims set are UTF-8; bytes that are not are refused, not replaced.
  const text = decodeUtf8(Buffer.from(part, 'base64url'))
  if (text === undefined) throw new JwtError(code)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new JwtError(code)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JwtError(code)
  if (!holdsOnlyStorableText(value, text)) throw new JwtError(`${code}_text`)
  return value as Record<string, unknown>
}

/** Splits and decodes a JWS in compact serialization; checks shape only, not the signature. */
export function decodeJws(token: string): DecodedJws {
  if (token.length > MAX_JWT_LENGTH) throw new JwtError('too_long')
  const parts = token.split('.')
  if (parts.length !== 3) throw new JwtError('not_compact_jws')
  const [h, p, s] = parts as [string, string, string]
  if (!B64URL.test(h) || !B64URL.test(p) || !B64URL.test(s)) throw new JwtError('bad_encoding')
  // Canonical base64url only: no trailing bits that decode to the same bytes (one signature, one spelling).
  const signature = Buffer.from(s, 'base64url')
  if (signature.toString('base64url') !== s) throw new JwtError('bad_encoding')
  const header = parseJsonObject(h, 'bad_header')
  if (typeof header['alg'] !== 'string') throw new JwtError('bad_header')
  return {
    header: header as JwsHeader,
    payload: parseJsonObject(p, 'bad_payload'),
    signingInput: Buffer.from(`${h}.${p}`, 'ascii'),
    signature,
  }
}

/** `typ` compared as RFC 7515 §4.1.9 says: case-insensitive, `application/` optional. */
export function normalizeTyp(typ: string): string {
  const t = typ.toLowerCase()
  return t.startsWith('application/') ? t.slice('application/'.length) : t
}

export interface HeaderRules {
  readonly algorithms: readonly string[]
  /**
   * Accepted `typ` values, normalized; `undefined` in the list accepts a
   * header without `typ`.
   */
  readonly typ: readonly (string | undefined)[]
}

/** RFC 8725 header profile: allowlisted `alg`, no keys from the header, no unknown `crit`, expected `typ`. */
export function checkHeader(header: JwsHeader, rules: HeaderRules): void {
  if (!rules.algorithms.includes(header.alg)) throw new JwtError('alg_not_allowed')
  for (const name of KEY_HEADERS) if (name in header) throw new JwtError(`header_${name}_refused`)
  // Mandate understands no JWS extension, so any `crit` is unknown (RFC 7515 §4.1.11); `b64` needs `crit`.
  if ('crit' in header || 'b64' in header) throw new JwtError('crit_unsupported')
  if (header.kid !== undefined && typeof header.kid !== 'string') throw new JwtError('bad_kid')
  const typ = header.typ
  if (typ !== undefined && typeof typ !== 'string') throw new JwtError('bad_typ')
  if (!rules.typ.includes(typ === undefined ? undefined : normalizeTyp(typ))) throw new JwtError('typ_not_allowed')
}

const EC_CURVES: Record<string, { curve: string; hash: string; size: number }> = {
  ES256: { curve: 'prime256v1', hash: 'sha256', size: 64 },
  ES384: { curve: 'secp384r1', hash: 'sha384', size: 96 },
  ES512: { curve: 'secp521r1', hash: 'sha512', size: 132 },
}

type VerifyKey = Parameters<typeof cryptoVerify>[2]

/**
 * Whether `key` is a public key of the type (and curve) `alg` signs with
 * (RFC 7518 §3.1, RFC 8037 §3.1); RSA under 2048 bits never fits (RFC 7518 §3.3).
 */
export function keyFitsAlgorithm(alg: string, key: KeyObject): boolean {
  if (key.type !== 'public') return false
  const kind = key.asymmetricKeyType
  switch (alg) {
    case 'RS256':
    case 'RS384':
    case 'RS512':
      return kind === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048
    case 'PS256':
    case 'PS384':
    case 'PS512':
      return (kind === 'rsa' || kind === 'rsa-pss') && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048
    case 'ES256':
    case 'ES384':
    case 'ES512':
      return kind === 'ec' && key.asymmetricKeyDetails?.namedCurve === EC_CURVES[alg]?.curve
    case 'EdDSA':
      return kind === 'ed25519' || kind === 'ed448'
    case 'Ed25519':
      return kind === 'ed25519'
    default:
      return false
  }
}

/**
 * Whether a key declared for `keyAlg` may verify a JWS whose header says
 * `headerAlg`: the same algorithm, or RFC 9864's fully-specified `Ed25519`
 * for a key declared with the polymorphic `EdDSA` when the key is on
 * Ed25519 (the signature is the same; only the name is more precise).
 */
export function algorithmAccepts(keyAlg: string, headerAlg: string, key: KeyObject): boolean {
  if (keyAlg === headerAlg) return true
  return keyAlg === 'EdDSA' && headerAlg === 'Ed25519' && keyFitsAlgorithm('Ed25519', key)
}

/** The digest and key options `alg` needs with `key`; undefined when the key is not of the kind `alg` requires. */
function verifyParams(alg: string, key: KeyObject, signature: Buffer): { hash: string | null; key: VerifyKey } | undefined {
  if (!keyFitsAlgorithm(alg, key)) return undefined
  switch (alg) {
    case 'RS256':
    case 'RS384':
    case 'RS512':
      return { hash: `sha${alg.slice(2)}`, key }
    case 'PS256':
    case 'PS384':
    case 'PS512': {
      const bits = Number(alg.slice(2))
      return { hash: `sha${bits}`, key: { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: bits / 8 } }
    }
    case 'ES256':
    case 'ES384':
    case 'ES512': {
      const ec = EC_CURVES[alg]
      if (ec === undefined || signature.length !== ec.size) return undefined
      return { hash: ec.hash, key: { key, dsaEncoding: 'ieee-p1363' } }
    }
    default:
      // EdDSA and Ed25519: the curve fixes the hash.
      return { hash: null, key }
  }
}

/**
 * Verifies the signature with a key of the kind `alg` requires; a mismatched
 * key type fails. The work runs on libuv's thread pool (node:crypto's
 * callback form), so the event loop keeps serving other requests meanwhile
 * and a second core verifies too. A signature OpenSSL cannot even parse is
 * a bad signature, never an exception.
 */
export function verifySignature(alg: string, key: KeyObject, data: Buffer, signature: Buffer): Promise<boolean> {
  const params = verifyParams(alg, key, signature)
  if (params === undefined) return Promise.resolve(false)
  return new Promise((resolve) => {
    try {
      cryptoVerify(params.hash, data, params.key, signature, (err, ok) => resolve(err === null && ok))
    } catch {
      resolve(false)
    }
  })
}

export interface ClaimRules {
  readonly issuer: string
  /** `aud` must contain this value; when undefined `aud` need only be well-formed. */
  readonly audience: string | undefined
  /** RFC 7523 update: `aud` must be this single string, not an array. */
  readonly audienceMustBeSingle?: boolean
  /** Epoch seconds. */
  readonly now: number
  /** Seconds; at most 60. */
  readonly skew: number
  /** Claims that must be present, checked before any is compared. */
  readonly required: readonly string[]
  /** Seconds: an `exp` further ahead of `now` than this (plus the skew) is refused. */
  readonly maxExpiresIn?: number
}

const STRINGS = ['iss', 'sub', 'jti'] as const

/** Registered-claim checks in a fixed order: presence, types, then values. */
export function checkClaims(payload: Record<string, unknown>, rules: ClaimRules): void {
  for (const name of rules.required) if (payload[name] === undefined) throw new JwtError(`missing_${name}`)
  const badDate = numericDateProblem(payload)
  if (badDate !== undefined) throw new JwtError(badDate)
  for (const name of STRINGS) {
    const v = payload[name]
    if (v !== undefined && (typeof v !== 'string' || v.length === 0)) throw new JwtError(`bad_${name}`)
  }
  const aud = payload['aud']
  if (aud !== undefined) {
    const single = typeof aud === 'string'
    const list = Array.isArray(aud) && aud.length > 0 && aud.every((a) => typeof a === 'string')
    if (!single && !list) throw new JwtError('bad_aud')
  }

  if (payload['iss'] !== rules.issuer) throw new JwtError('wrong_iss')
  const expected = rules.audience
  if (rules.audienceMustBeSingle) {
    if (aud !== expected) throw new JwtError('wrong_aud')
  } else if (expected !== undefined && !(aud === expected || (Array.isArray(aud) && aud.includes(expected)))) {
    throw new JwtError('wrong_aud')
  }
  const late = lifetimeProblem(payload, rules)
  if (late !== undefined) throw new JwtError(late)
}
