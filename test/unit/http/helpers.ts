/**
 * Shared helpers for the HTTP tests: the OAuth error assertion CONTRIBUTING.md "Tests" asks
 * for, a raw JWS signer (so a test controls every header and claim, and can
 * build tokens jose refuses to sign), and a collector of every credential a
 * test file used, to prove none of them reached a log line.
 */
import { createHmac, KeyObject, sign as cryptoSign } from 'node:crypto'
import type { CryptoKey, JWTPayload } from 'jose'
import { expect } from 'vitest'
import {
  AUDIENCE,
  BROKER,
  GRANT_TYPE_TOKEN_EXCHANGE,
  TOKEN_TYPE,
  USER_ISSUER,
  startTestBroker,
  type TestBroker,
  type TestBrokerOptions,
} from '../../support/broker.js'

export interface OAuthErrorBody {
  readonly error: string
  readonly error_description?: string
  readonly [name: string]: unknown
}

/**
 * RFC 6749 §5.2 error answer: the status, the `error` code, `Cache-Control:
 * no-store`, a JSON body, no `access_token`; a 401 names its scheme.
 */
export async function expectOAuthError(res: Response, status: number, code: string): Promise<OAuthErrorBody> {
  const text = await res.text()
  let body: OAuthErrorBody
  try {
    body = JSON.parse(text) as OAuthErrorBody
  } catch {
    throw new Error(`expected a JSON error body, got ${res.status}: ${text.slice(0, 200)}`)
  }
  expect({ status: res.status, error: body.error }, text.slice(0, 300)).toEqual({ status, error: code })
  expect(res.headers.get('cache-control') ?? '').toMatch(/(^|,)\s*no-store\s*(,|$)/)
  expect(res.headers.get('content-type') ?? '').toMatch(/^application\/json/)
  expect(body).not.toHaveProperty('access_token')
  expect(text).not.toContain('access_token')
  if (status === 401) expect(res.headers.get('www-authenticate') ?? '').toMatch(/^Basic /)
  return body
}

export interface TokenResponse {
  readonly access_token: string
  readonly issued_token_type: string
  readonly token_type: string
  readonly expires_in: number
  readonly scope: string
}

/** A 200 token response; fails with the error body otherwise. */
export async function expectToken(res: Response): Promise<TokenResponse> {
  const text = await res.text()
  expect(res.status, text.slice(0, 300)).toBe(200)
  expect(res.headers.get('cache-control') ?? '').toMatch(/(^|,)\s*no-store\s*(,|$)/)
  return JSON.parse(text) as TokenResponse
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')

/**
 * Signs a compact JWS over exactly `header` and `payload` (no defaults, no
 * validation), with RS*, ES256 or an HMAC secret. For tokens jose would not
 * produce.
 */
export function signJws(header: Record<string, unknown>, payload: Record<string, unknown>, key: CryptoKey | KeyObject | Uint8Array): string {
  const input = `${b64(header)}.${b64(payload)}`
  if (key instanceof Uint8Array) return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`
  const ko = key instanceof KeyObject ? key : KeyObject.from(key)
  const alg = header['alg']
  const sig = alg === 'ES256' ? cryptoSign('sha256', Buffer.from(input), { key: ko, dsaEncoding: 'ieee-p1363' }) : cryptoSign('sha256', Buffer.from(input), ko)
  return `${input}.${sig.toString('base64url')}`
}

/** An unsigned `alg: none` token; `signature` lets a test put junk where the signature goes. */
export function unsignedJws(payload: Record<string, unknown>, signature = '', header: Record<string, unknown> = { alg: 'none', typ: 'at+jwt' }): string {
  return `${b64(header)}.${b64(payload)}.${signature}`
}

/** The claims a user token from the test user issuer carries by default, at `now`. */
export function userClaims(now: number, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const claims: Record<string, unknown> = {
    iss: USER_ISSUER,
    sub: 'alice',
    aud: BROKER,
    iat: now,
    exp: now + 3600,
    jti: `u-${Math.random().toString(36).slice(2)}`,
    scope: 'read write',
    ...overrides,
  }
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k]
  return claims
}

/** A user token signed with the user issuer's real key over exactly these claims and header extras. */
export function rawUserToken(b: TestBroker, overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}): string {
  return signJws({ alg: 'RS256', kid: b.users.kid, typ: 'at+jwt', ...header }, userClaims(b.now(), overrides), b.users.privateKey)
}

/** Flips one character in the middle of a JWS signature (not the last one, whose low bits may be padding). */
export function alterSignature(jwt: string): string {
  const [h, p, s] = jwt.split('.') as [string, string, string]
  const i = Math.floor(s.length / 2)
  const c = s[i] === 'A' ? 'B' : 'A'
  return `${h}.${p}.${s.slice(0, i)}${c}${s.slice(i + 1)}`
}

/** An exchange form built field by field; `undefined` leaves a field out. */
export function form(fields: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v
  return out
}

export function exchange(subjectToken: string, extra: Record<string, string | string[] | undefined> = {}): Record<string, string | string[]> {
  return form({
    grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: TOKEN_TYPE.accessToken,
    audience: AUDIENCE,
    ...extra,
  })
}

const SENSITIVE_FIELDS = ['subject_token', 'actor_token', 'client_assertion', 'client_secret']

/**
 * A test broker whose every credential (form fields that carry one, the
 * Authorization header, every issued `access_token`) is remembered, so the
 * file can end by proving none of them was logged.
 */
export interface TrackedBroker extends TestBroker {
  /** Remembers `value` as a credential and returns it. */
  secret<T extends string>(value: T): T
  secrets(): readonly string[]
}

export async function startTrackedBroker(options: TestBrokerOptions = {}): Promise<TrackedBroker> {
  const b = await startTestBroker(options)
  const seen = new Set<string>()
  const secret = <T extends string>(value: T): T => {
    if (value.length >= 8) {
      seen.add(value)
      const parts = value.split('.')
      // A JWS's signature alone is as telling as the whole token.
      if (parts.length === 3 && parts[2]!.length >= 16) seen.add(parts[2]!)
    }
    return value
  }
  return {
    ...b,
    secret,
    secrets: () => [...seen],
    async token(fields, headers = {}) {
      for (const name of SENSITIVE_FIELDS) {
        const v = fields[name]
        for (const x of v === undefined ? [] : Array.isArray(v) ? v : [v]) secret(x)
      }
      for (const [k, v] of Object.entries(headers)) {
        if (k.toLowerCase() === 'authorization') secret(secret(v).replace(/^\S+\s+/, ''))
      }
      const res = await b.token(fields, headers)
      if (res.status === 200) {
        const body = (await res.clone().json()) as { access_token?: unknown }
        if (typeof body.access_token === 'string') secret(body.access_token)
      }
      return res
    },
  }
}

/**
 * The broker's log holds none of the credentials the file used, and every
 * request line carries a `request_id`.
 */
export function expectCleanLogs(b: TrackedBroker): void {
  const lines = b.logs()
  const requestLines = lines.filter((l) => l['msg'] === 'request')
  expect(requestLines.length).toBeGreaterThan(0)
  for (const l of requestLines) expect(typeof l['request_id'] === 'string' && l['request_id'] !== '', JSON.stringify(l)).toBe(true)
  for (const l of lines.filter((x) => x['msg'] === 'request refused' || x['msg'] === 'request failed')) {
    expect(typeof l['request_id'], JSON.stringify(l)).toBe('string')
  }
  const text = lines.map((l) => JSON.stringify(l)).join('\n')
  const leaked = b.secrets().filter((s) => text.includes(s))
  expect(leaked).toEqual([])
  expect(b.secrets().length).toBeGreaterThan(0)
}

export type { JWTPayload }
