import { createHash, generateKeyPairSync, randomBytes, sign, timingSafeEqual } from 'node:crypto'
import type { AgentId } from '../core/claims.js'
import { TOKEN_TYPE } from '../core/claims.js'
import { CLIENT_AUTH_FAILED, loggable, OAuthError } from '../core/errors.js'
import type { AgentPolicy, PolicyStore } from '../policy/port.js'
import { UpstreamUnavailable } from './fetch-limited.js'
import { checkClaims, checkHeader, decodeJws, JwtError, verifySignature } from './jws.js'
import type { AdmissionStore } from '../admission/port.js'
import { admissionRefusal, admissionUnavailable } from '../core/admission.js'
import type { AuthenticatedClient, ClientAuthenticator, ClientCredentials } from './port.js'
import { unverifiedIssuer, verifyDecodedJwt, type IssuerRegistry } from './upstream.js'

export interface ClientAuthOptions {
  /** This broker's issuer identifier: the only `aud` a client assertion may carry (RFC 7523 update). */
  readonly issuer: string
  /** Where assertions are spent by `spend`. */
  readonly admission: AdmissionStore
  /** Issuers trusted for workload identities, and no other role. */
  readonly workloads: IssuerRegistry
  /** Epoch seconds. */
  readonly now: () => number
  readonly skew: number
  /** Longest an assertion may still be valid when presented, in seconds. */
  readonly assertionMaxLifetime: number
  /** Longest a workload identity token may still be valid when presented, in seconds. */
  readonly workloadTokenMaxLifetime: number
}

export const ACTOR_TOKEN_UNACCEPTABLE = 'actor_token is invalid or not acceptable'

/** `typ` values a client assertion may carry: none, JWT, or the RFC 7523 update's explicit type. */
const ASSERTION_TYP = [undefined, 'jwt', 'client-authentication+jwt']
const ASSERTION_REQUIRED = ['iss', 'sub', 'aud', 'exp', 'jti'] as const
const WORKLOAD_REQUIRED = ['iss', 'sub', 'aud', 'exp', 'iat'] as const
const ACTOR_TOKEN_TYPES: ReadonlySet<string> = new Set([TOKEN_TYPE.jwt, TOKEN_TYPE.accessToken])

/** SHA-256 of a client secret, as policies store it. */
export function hashClientSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest()
}

/** A new client secret: 256 bits from the CSPRNG, base64url. */
export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url')
}

/**
 * Agent authentication (DESIGN.md step 2). Every failure is the same
 * `invalid_client` with a fixed description; the check that failed is in
 * `detail`. An unknown agent costs the same work as a known one with a wrong
 * secret or signature, so timing tells nothing either.
 */
export function createClientAuthenticator(options: ClientAuthOptions): ClientAuthenticator {
  const dummyHash = randomBytes(32)
  const dummy = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const dummySignature = sign('sha256', Buffer.from('x'), { key: dummy.privateKey, dsaEncoding: 'ieee-p1363' })
  const fail = (detail: string) => new OAuthError('invalid_client', CLIENT_AUTH_FAILED, { detail })

  function secretBasic(policies: PolicyStore, clientId: string, secret: string): AuthenticatedClient {
    const policy = policies.get(clientId as AgentId)
    const expected = policy?.authentication.method === 'client_secret_basic' ? policy.authentication.secretSha256 : dummyHash
    const matches = timingSafeEqual(hashClientSecret(secret), expected)
    if (policy === undefined) throw fail(`unknown agent`)
    if (policy.authentication.method !== 'client_secret_basic') throw fail(`${clientId} does not use client_secret_basic`)
    if (!matches) throw fail(`wrong secret for ${clientId}`)
    return { agent: policy.agent, method: 'client_secret_basic', assertion: undefined }
  }

  async function privateKeyJwt(policies: PolicyStore, assertion: string, clientId: string | undefined): Promise<AuthenticatedClient> {
    const now = options.now()
    try {
      const decoded = decodeJws(assertion)
      const iss = unverifiedIssuer(decoded.payload)
      const policy = policies.get(iss as AgentId)
      const auth = policy?.authentication
      // Exactly one signature verification whatever fails before it, so that
      // timing does not tell an unknown agent from a known one (DESIGN.md step 2).
      let failure: string | undefined
      let key = dummy.publicKey
      try {
        if (clientId !== undefined && clientId !== iss) throw new JwtError('client_id_mismatch')
        if (policy === undefined) throw new JwtError('unknown_agent')
        if (auth?.method !== 'private_key_jwt') throw new JwtError('agent_does_not_use_private_key_jwt')
        checkHeader(decoded.header, { algorithms: [...new Set(auth.keys.map((k) => k.alg))], typ: ASSERTION_TYP })
        const { alg, kid } = decoded.header
        const candidates = auth.keys.filter((k) => k.alg === alg && (kid === undefined || k.kid === kid))
        if (candidates.length !== 1) throw new JwtError(candidates.length === 0 ? 'unknown_kid' : 'ambiguous_key')
        key = candidates[0]!.key
      } catch (err) {
        if (!(err instanceof JwtError)) throw err
        failure = err.code
      }
      if (failure !== undefined || policy === undefined) {
        await verifySignature('ES256', key, decoded.signingInput, dummySignature)
        throw new JwtError(failure ?? 'unknown_agent')
      }
      if (!(await verifySignature(decoded.header.alg, key, decoded.signingInput, decoded.signature))) {
        throw new JwtError('bad_signature')
      }
      const { payload } = decoded
      checkClaims(payload, {
        issuer: policy.agent,
        audience: options.issuer,
        audienceMustBeSingle: true,
        now,
        skew: options.skew,
        required: ASSERTION_REQUIRED,
      })
      if (payload['sub'] !== policy.agent) throw new JwtError('sub_not_iss')
      const exp = payload['exp'] as number
      if (exp - now > options.assertionMaxLifetime) throw new JwtError('assertion_lifetime_too_long')
      const iat = payload['iat'] as number | undefined
      // Any earlier acceptance happened no earlier than both bounds checked then: iat at most `skew`
      // ahead of the broker's clock, exp at most the longest lifetime ahead. Client clocks may run fast,
      // so iat alone would let a spent assertion pass after the replay store lost its memory.
      const earliestUse = Math.max(exp - options.assertionMaxLifetime, iat === undefined ? -Infinity : iat - options.skew)
      const use = { key: `${policy.agent}:${payload['jti'] as string}`, earliestUse: earliestUse * 1000, expiresAt: (exp + options.skew) * 1000 }
      return { agent: policy.agent, method: 'private_key_jwt', assertion: use }
    } catch (err) {
      if (err instanceof JwtError) throw fail(`assertion: ${err.code}`)
      throw err
    }
  }

  async function workloadIdentity(
    policies: PolicyStore,
    token: string,
    tokenType: string,
    clientId: string | undefined,
  ): Promise<AuthenticatedClient> {
    const refuse = (detail: string) => new OAuthError('invalid_request', ACTOR_TOKEN_UNACCEPTABLE, { detail })
    if (!ACTOR_TOKEN_TYPES.has(tokenType)) throw refuse(`actor_token_type ${loggable(tokenType)}`)
    try {
      const decoded = decodeJws(token)
      const trusted = options.workloads.get(unverifiedIssuer(decoded.payload))
      if (trusted === undefined) throw new JwtError('issuer_not_trusted_for_workloads')
      const now = options.now()
      const { payload } = await verifyDecodedJwt(decoded, {
        issuer: trusted.issuer,
        keys: trusted.keys,
        now,
        skew: options.skew,
        required: WORKLOAD_REQUIRED,
      })
      // A workload token is a bearer credential: a long-lived one is refused, not trusted for a year.
      if ((payload['exp'] as number) - now > options.workloadTokenMaxLifetime) throw new JwtError('workload_token_lifetime_too_long')
      const policy = policies.byWorkload(trusted.issuer.issuer, payload['sub'] as string)
      if (policy === undefined) throw new JwtError('no_agent_for_workload')
      if (clientId !== undefined && clientId !== policy.agent) throw new JwtError('client_id_mismatch')
      return { agent: policy.agent, method: 'workload_identity', assertion: undefined }
    } catch (err) {
      if (err instanceof JwtError) throw refuse(`actor_token: ${err.code}`)
      if (err instanceof UpstreamUnavailable) {
        throw new OAuthError('temporarily_unavailable', 'workload issuer keys unavailable; try again', {
          detail: err.message,
          retryAfter: 5,
        })
      }
      throw err
    }
  }

  return {
    async spend(client: AuthenticatedClient): Promise<void> {
      if (client.assertion === undefined) return
      const decision = await options.admission.admit({ assertion: client.assertion, buckets: [] }).catch((cause: unknown) => {
        throw admissionUnavailable(cause)
      })
      const refusal = admissionRefusal(decision)
      if (refusal !== undefined) throw refusal
    },
    async authenticate(credentials: ClientCredentials, policies: PolicyStore): Promise<AuthenticatedClient> {
      switch (credentials.method) {
        case 'client_secret_basic':
          return secretBasic(policies, credentials.clientId, credentials.secret)
        case 'private_key_jwt':
          return privateKeyJwt(policies, credentials.assertion, credentials.clientId)
        case 'workload_identity':
          return workloadIdentity(policies, credentials.actorToken, credentials.actorTokenType, credentials.clientId)
        case 'none':
          throw fail('no client authentication')
      }
    },
  }
}
