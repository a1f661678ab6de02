/**
 * The signed one-time link an approver follows to the sign-in page, and the
 * sealed cookies that page keeps its state in between the redirects. Both
 * are bound to the broker's signing keys: a link is a JWT signed with the
 * current key and verified against the broker's own JWKS; a cookie is a JWE
 * (`dir`, A256GCM) under a key derived from a signing key, so that its
 * content is both secret (the PKCE verifier) and beyond the browser's reach
 * to change.
 */
import { hkdfSync, randomBytes } from 'node:crypto'
import { EncryptJWT, errors, jwtDecrypt, jwtVerify, SignJWT, type JWTPayload } from 'jose'
import { SIGNING_ALG, type SigningKeys } from '../tokens/keys.js'

/** RFC 8725 §3.11: explicit typing, so that a link never passes as an access token (`at+jwt`), nor one as a link. */
export const APPROVAL_LINK_TYP = 'mandate-approval-link+jwt'

export interface ApprovalLinkDeps {
  /** Mandate's public URL (the config's `issuer`). */
  readonly issuer: string
  readonly keys: SigningKeys
  /** Epoch seconds. */
  readonly now: () => number
}

export interface ApprovalLinks {
  /** `${issuer}/approvals/link?t=<JWT>` for approval `id`, good until `expiresAt` (epoch seconds, the request's expiry). */
  link(id: string, expiresAt: number): Promise<string>
  /** The approval and the link's `jti` of a link's token; throws `InvalidLink` when it is not a valid, unexpired link of this broker. */
  verify(t: string): Promise<{ approval: string; jti: string }>
}

/** A link, or a cookie, that is not one of ours, expired, or altered. */
export class InvalidLink extends Error {
  override readonly name = 'InvalidLink'
}

const APPROVAL_ID = /^apr_[A-Za-z0-9_-]{16,64}$/
const JTI = /^[A-Za-z0-9_-]{22,64}$/

export function createApprovalLinks(deps: ApprovalLinkDeps): ApprovalLinks {
  const audience = `${deps.issuer}/approvals/link`
  // The broker's own published keys, read at each use: a rotation adds one, and a link signed before it still verifies.
  const publicKeyOf = (header: { kid?: string | undefined }) => {
    const key = header.kid === undefined ? undefined : deps.keys.byKid(header.kid)
    if (key === undefined) throw new InvalidLink('unknown kid')
    return key.publicKey
  }
  return {
    async link(id, expiresAt) {
      const key = deps.keys.current
      const token = await new SignJWT({ approval: id })
        .setProtectedHeader({ alg: key.alg, typ: APPROVAL_LINK_TYP, kid: key.kid })
        .setIssuer(deps.issuer)
        .setAudience(audience)
        .setJti(randomBytes(16).toString('base64url'))
        .setIssuedAt(deps.now())
        .setExpirationTime(expiresAt)
        .sign(key.privateKey)
      return `${audience}?t=${token}`
    },
    async verify(t) {
      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(t, publicKeyOf, {
          algorithms: [SIGNING_ALG],
          typ: APPROVAL_LINK_TYP,
          issuer: deps.issuer,
          audience,
          requiredClaims: ['exp', 'iat', 'jti', 'approval'],
          currentDate: new Date(deps.now() * 1000),
          clockTolerance: 0,
        }))
      } catch (err) {
        if (err instanceof errors.JOSEError) throw new InvalidLink(err.code)
        if (err instanceof InvalidLink) throw err
        throw new InvalidLink('malformed')
      }
      const { approval, jti } = payload
      if (typeof approval !== 'string' || !APPROVAL_ID.test(approval) || typeof jti !== 'string' || !JTI.test(jti)) throw new InvalidLink('claims')
      return { approval, jti }
    },
  }
}

/** Seals small JSON objects into cookie values, and opens them: the page's state between requests. */
export interface Sealer {
  /** `claims` sealed for `ttl` seconds. */
  seal(claims: Record<string, unknown>, ttl: number): Promise<string>
  /** The claims, or throws `InvalidLink` when the value was not sealed by this sealer (same purpose), was altered, or has expired. */
  open(value: string): Promise<Record<string, unknown>>
}

/**
 * A sealer for one purpose (`purpose` goes into the key derivation, so that
 * one cookie can never be opened as another): RFC 5869 HKDF-SHA-256 of the
 * signing key's private scalar, one key per signing key, named by its kid.
 */
export function createSealer(keys: SigningKeys, purpose: string, now: () => number): Sealer {
  const derived = new Map<string, Uint8Array>()
  const keyOf = (kid: string): Uint8Array => {
    let key = derived.get(kid)
    if (key === undefined) {
      const signing = keys.byKid(kid)
      if (signing === undefined) throw new InvalidLink('unknown kid')
      const d = signing.privateKey.export({ format: 'jwk' }).d!
      key = new Uint8Array(hkdfSync('sha256', Buffer.from(d, 'base64url'), 'mandate-approval-page', `mandate ${purpose} cookie`, 32))
      derived.set(kid, key)
    }
    return key
  }
  return {
    async seal(claims, ttl) {
      const kid = keys.current.kid
      const t = now()
      return new EncryptJWT(claims)
        .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid })
        .setIssuedAt(t)
        .setExpirationTime(t + ttl)
        .encrypt(keyOf(kid))
    },
    async open(value) {
      try {
        const { payload } = await jwtDecrypt(value, (header) => keyOf(header.kid ?? ''), {
          keyManagementAlgorithms: ['dir'],
          contentEncryptionAlgorithms: ['A256GCM'],
          requiredClaims: ['exp'],
          currentDate: new Date(now() * 1000),
          clockTolerance: 0,
        })
        return payload
      } catch (err) {
        if (err instanceof errors.JOSEError || err instanceof InvalidLink) throw new InvalidLink(err instanceof errors.JOSEError ? err.code : err.message)
        throw err
      }
    },
  }
}
