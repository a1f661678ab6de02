import { createHash, generateKeyPairSync, randomBytes, sign, timingSafeEqual, type KeyObject } from 'node:crypto'
import { CREDENTIAL_TOO_OLD, DEFAULT_CREDENTIAL_WARN_BEFORE, DEFAULT_MAX_CREDENTIAL_AGE, type CredentialAgeRule } from '../core/credential-age.js'
import { MAX_CLIENT_SECRETS } from '../policy/schema.js'
import { keyThumbprint, type CredentialLedger, type CredentialRef } from './credential-ledger.js'
import type { AgentId } from '../core/claims.js'
import { INSTANCE_ID, TOKEN_TYPE } from '../core/claims.js'
import { CLIENT_AUTH_FAILED, loggable, OAuthError } from '../core/errors.js'
import type { AgentAuthentication, PolicyStore } from '../policy/port.js'
import { UpstreamUnavailable } from './fetch-limited.js'
import { algorithmAccepts, ASYMMETRIC_ALGORITHMS, checkClaims, checkHeader, decodeJws, JwtError, verifySignature, type JwsHeader } from './jws.js'
import type { AdmissionStore, AssertionUse } from '../admission/port.js'
import { admissionRefusal, admissionUnavailable } from '../core/admission.js'
import type { AuthenticatedCaller, AuthenticatedClient, ClientAuthenticator, ClientCredentials, ResourceServer } from './port.js'
import { unverifiedIssuer, verifyDecodedJwt, type IssuerRegistry, type KeyResolver } from './upstream.js'
import type { SpiffeBundles } from './spiffe-bundle.js'
import { createSvidVerifier } from './spiffe-svid.js'

export interface ClientAuthOptions {
  /** This broker's issuer identifier: the only `aud` a client assertion may carry (RFC 7523 update). */
  readonly issuer: string
  /** Where spent client assertions are remembered (and rate-limit buckets kept). */
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
  /** Configured resource servers; their `rs/` ids can never be agent ids. */
  readonly resourceServers?: readonly ResourceServer[]
  /** The key set a `private_key_jwt` client publishes at its `jwks_uri` (one resolver per URI, kept by the caller). */
  readonly clientKeySets?: (jwksUri: string) => KeyResolver
  /** Where an agent's use of each credential is recorded, and its age read; absent: credentials do not age. */
  readonly ledger?: CredentialLedger
  /** `max_credential_age` and its warning, where a policy sets none. */
  readonly credentialAge?: CredentialAgeRule
  /** The bundles of the SPIFFE trust domains (config `trust.spiffe`); absent: every JWT-SVID is refused. */
  readonly spiffe?: SpiffeBundles
}

/** Who a client id names, an agent (its policy) or a resource server, with how it authenticates. */
type Caller = { readonly kind: 'agent'; readonly agent: AgentId } | { readonly kind: 'resource_server'; readonly server: ResourceServer }
interface Principal {
  readonly id: string
  readonly authentication: AgentAuthentication
  readonly caller: Caller
  /** The policy's own `max_credential_age`, seconds. */
  readonly maxCredentialAge?: number | undefined
}
type Principals = (id: string) => Principal | undefined

function agents(policies: PolicyStore): Principals {
  return (id) => {
    const p = policies.get(id as AgentId)
    return p === undefined
      ? undefined
      : { id: p.agent, authentication: p.authentication, caller: { kind: 'agent', agent: p.agent }, maxCredentialAge: p.maxCredentialAge }
  }
}

/** `typ` values a client assertion may carry: none, JWT, or the RFC 7523 update's explicit type. */
const ASSERTION_TYP = [undefined, 'jwt', 'client-authentication+jwt']
const ASSERTION_REQUIRED = ['iss', 'sub', 'aud', 'exp', 'jti'] as const
const WORKLOAD_REQUIRED = ['iss', 'sub', 'aud', 'exp', 'iat'] as const
const ACTOR_TOKEN_TYPES: ReadonlySet<string> = new Set([TOKEN_TYPE.jwt, TOKEN_TYPE.accessToken])

/**
 * An instance identifier from a verified credential, bounded before it goes
 * into tokens, logs, headers and SQL: one that does not fit `INSTANCE_ID`
 * fails the authentication (fail closed: an instance kill could not name it).
 */
function attestedInstance(value: string): string {
  if (!INSTANCE_ID.test(value)) throw new JwtError('instance_not_acceptable')
  return value
}

/** A principal that proved who it is, the credential it proved it with, and the assertion to spend. */
interface Authenticated {
  readonly principal: Principal
  readonly assertion: AssertionUse | undefined
  readonly credential: CredentialRef
}

/**
 * Whether `presented` equals any of `expected`, in time that depends on
 * neither which one matched nor how many there are: every slot up to the
 * most a policy may hold is compared (empty ones against `filler`), with
 * no early exit.
 */
export function matchesAnySecret(presented: Buffer, expected: readonly Buffer[], filler: Buffer): boolean {
  let matched = 0
  for (let i = 0; i < MAX_CLIENT_SECRETS; i++) {
    const candidate = expected[i]
    // A filler compare always runs, so a list of one costs what a list of five does.
    const equal = timingSafeEqual(presented, candidate ?? filler) ? 1 : 0
    matched |= candidate === undefined ? 0 : equal
  }
  return matched === 1
}

/** SHA-256 of a client secret, as policies store it. */
export function hashClientSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest()
}

/** A new client secret: 256 bits from the CSPRNG, base64url. */
export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url')
}

/**
 * Client authentication of agents (docs/ARCHITECTURE.md, step 2) and of resource servers,
 * by the same checks. Every failure is the same `invalid_client` with a fixed
 * description; the check that failed is in `detail`. An unknown client costs
 * the same work as a known one with a wrong secret or signature, so timing
 * tells nothing either. The token endpoint looks up agents only: a resource
 * server's credentials never get it a token.
 */
export function createClientAuthenticator(options: ClientAuthOptions): ClientAuthenticator {
  // Long, not split: a factory whose short methods share the principals it looks up and the dummy secret and key that keep a miss as slow as a hit.
  const dummyHash = randomBytes(32)
  const dummy = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const dummySignature = sign('sha256', Buffer.from('x'), { key: dummy.privateKey, dsaEncoding: 'ieee-p1363' })
  const fail = (detail: string) => new OAuthError('invalid_client', CLIENT_AUTH_FAILED, { detail })

  function secretBasic(principals: Principals, clientId: string, secret: string): Authenticated {
    const principal = principals(clientId)
    const auth = principal?.authentication
    const presented = hashClientSecret(secret)
    const matches = matchesAnySecret(presented, auth?.method === 'client_secret_basic' ? auth.secretHashes : [], dummyHash)
    if (principal === undefined) throw fail(`unknown client`)
    if (auth?.method !== 'client_secret_basic') throw fail(`${clientId} does not use client_secret_basic`)
    if (!matches) throw fail(`wrong secret for ${clientId}`)
    return { principal, assertion: undefined, credential: { kind: 'secret', id: presented.toString('hex') } }
  }

  /** The key a client's own JWK set (its `jwks_uri`) holds for this header; `UpstreamUnavailable` when the set cannot be had. */
  async function publishedKey(jwksUri: string, header: JwsHeader): Promise<KeyObject> {
    if (options.clientKeySets === undefined) throw new JwtError('jwks_uri_not_supported')
    return options.clientKeySets(jwksUri).resolve(header)
  }

  async function privateKeyJwt(principals: Principals, assertion: string, clientId: string | undefined): Promise<Authenticated> {
    const now = options.now()
    try {
      const decoded = decodeJws(assertion)
      const iss = unverifiedIssuer(decoded.payload)
      const principal = principals(iss)
      const auth = principal?.authentication
      // Exactly one signature verification whatever fails before it, so that
      // timing does not tell an unknown client from a known one (docs/ARCHITECTURE.md, step 2).
      let failure: string | undefined
      let key = dummy.publicKey
      try {
        if (clientId !== undefined && clientId !== iss) throw new JwtError('client_id_mismatch')
        if (principal === undefined) throw new JwtError('unknown_client')
        if (auth?.method !== 'private_key_jwt') throw new JwtError('client_does_not_use_private_key_jwt')
        checkHeader(decoded.header, { algorithms: ASYMMETRIC_ALGORITHMS, typ: ASSERTION_TYP })
        if (auth.jwksUri !== undefined) {
          key = await publishedKey(auth.jwksUri, decoded.header)
        } else {
          const { alg, kid } = decoded.header
          const candidates = auth.keys.filter((k) => algorithmAccepts(k.alg, alg, k.key) && (kid === undefined || k.kid === kid))
          if (candidates.length !== 1) throw new JwtError(candidates.length === 0 ? 'unknown_kid' : 'ambiguous_key')
          key = candidates[0]!.key
        }
      } catch (err) {
        if (!(err instanceof JwtError)) throw err
        failure = err.code
      }
      if (failure !== undefined || principal === undefined) {
        await verifySignature('ES256', key, decoded.signingInput, dummySignature)
        throw new JwtError(failure ?? 'unknown_client')
      }
      if (!(await verifySignature(decoded.header.alg, key, decoded.signingInput, decoded.signature))) {
        throw new JwtError('bad_signature')
      }
      const { payload } = decoded
      checkClaims(payload, {
        issuer: principal.id,
        audience: options.issuer,
        audienceMustBeSingle: true,
        now,
        skew: options.skew,
        required: ASSERTION_REQUIRED,
      })
      if (payload['sub'] !== principal.id) throw new JwtError('sub_not_iss')
      const exp = payload['exp'] as number
      if (exp - now > options.assertionMaxLifetime) throw new JwtError('assertion_lifetime_too_long')
      const iat = payload['iat'] as number | undefined
      // Any earlier acceptance happened no earlier than both bounds checked then: iat at most `skew`
      // ahead of the broker's clock, exp at most the longest lifetime ahead. Client clocks may run fast,
      // so iat alone would let a spent assertion pass after the replay store lost its memory.
      const earliestUse = Math.max(exp - options.assertionMaxLifetime, iat === undefined ? -Infinity : iat - options.skew)
      // Agent and resource-server ids never coincide, so neither can spend the other's jti.
      const assertionUse = { key: `${principal.id}:${payload['jti'] as string}`, earliestUse: earliestUse * 1000, expiresAt: (exp + options.skew) * 1000 }
      return { principal, assertion: assertionUse, credential: { kind: 'key', id: keyThumbprint(key) } }
    } catch (err) {
      if (err instanceof JwtError) throw fail(`assertion: ${err.code}`)
      if (err instanceof UpstreamUnavailable) {
        throw new OAuthError('temporarily_unavailable', 'client keys unavailable; try again', { detail: err.message, retryAfter: 5 })
      }
      throw err
    }
  }

  /**
   * Records the use of an agent's credential in the ledger and refuses one
   * older than `max_credential_age` (the policy's, else the config's). The
   * caller proved it holds the credential, so saying why it is refused
   * tells an attacker nothing a stolen credential does not.
   */
  function aged(a: Authenticated): Caller {
    const { principal, credential } = a
    if (options.ledger === undefined || principal.caller.kind !== 'agent') return principal.caller
    const global = options.credentialAge ?? { maxAge: DEFAULT_MAX_CREDENTIAL_AGE, warnBefore: DEFAULT_CREDENTIAL_WARN_BEFORE }
    const rule = principal.maxCredentialAge === undefined ? global : { ...global, maxAge: principal.maxCredentialAge }
    const { state, firstSeen } = options.ledger.use(principal.id, credential, options.now(), rule)
    if (state === 'too_old') {
      throw new OAuthError('invalid_client', CREDENTIAL_TOO_OLD, { detail: `${credential.kind} ${credential.id.slice(0, 12)} first seen ${firstSeen}` })
    }
    return principal.caller
  }

  const verifySvid = createSvidVerifier()
  /** A SPIFFE JWT-SVID (draft-ietf-oauth-spiffe-client-auth): agents only; not aged, the SVID rotates by itself. */
  async function spiffeJwt(policies: PolicyStore, assertion: string, clientId: string | undefined): Promise<AuthenticatedClient> {
    try {
      if (options.spiffe === undefined) throw new JwtError('no_trust_domains')
      const {
        policy,
        assertion: use,
        spiffeId,
      } = await verifySvid(assertion, clientId, policies, {
        bundles: options.spiffe,
        audiences: [options.issuer, `${options.issuer}/oauth2/token`],
        now: options.now(),
        skew: options.skew,
        maxLifetime: options.assertionMaxLifetime,
      })
      // The SPIFFE ID names the workload the SVID was attested for: the instance (a parsed one always fits INSTANCE_ID).
      return { agent: policy.agent, method: 'spiffe_jwt', assertion: use, instance: attestedInstance(spiffeId) }
    } catch (err) {
      if (err instanceof JwtError) throw fail(`spiffe: ${err.code}`)
      throw err
    }
  }

  async function workloadIdentity(policies: PolicyStore, token: string, tokenType: string, clientId: string | undefined): Promise<AuthenticatedClient> {
    // The actor token is only ever the agent's whole client authentication (http/client-credentials.ts):
    // refusing it is a failed client authentication, RFC 6749 §5.2 invalid_client, like a wrong secret.
    if (!ACTOR_TOKEN_TYPES.has(tokenType)) throw fail(`actor_token_type ${loggable(tokenType)}`)
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
      // The running copy: the issuer's `instance_claim` when it names one (every copy may share the `sub`), else the `sub`.
      const claim = trusted.issuer.instanceClaim
      const instance = claim === undefined ? payload['sub'] : payload[claim]
      if (typeof instance !== 'string') throw new JwtError('missing_instance_claim')
      return { agent: policy.agent, method: 'workload_identity', assertion: undefined, instance: attestedInstance(instance) }
    } catch (err) {
      if (err instanceof JwtError) throw fail(`actor_token: ${err.code}`)
      if (err instanceof UpstreamUnavailable) {
        throw new OAuthError('temporarily_unavailable', 'workload issuer keys unavailable; try again', {
          detail: err.message,
          retryAfter: 5,
        })
      }
      throw err
    }
  }

  const servers = new Map<string, Principal>(
    (options.resourceServers ?? []).map((server) => [
      server.id,
      { id: server.id, authentication: server.authentication, caller: { kind: 'resource_server', server } },
    ]),
  )
  const serversOr = (policies: PolicyStore | undefined): Principals => {
    const ofAgents = policies === undefined ? undefined : agents(policies)
    return (id) => servers.get(id) ?? ofAgents?.(id)
  }

  return {
    async spend(client) {
      if (client.assertion === undefined) return
      const decision = await options.admission.admit({ assertion: client.assertion, buckets: [] }).catch((cause: unknown) => {
        throw admissionUnavailable(cause)
      })
      const refusal = admissionRefusal(decision)
      if (refusal !== undefined) throw refusal
    },
    async authenticate(credentials: ClientCredentials, policies: PolicyStore): Promise<AuthenticatedClient> {
      const { method } = credentials
      switch (method) {
        case 'client_secret_basic':
        case 'private_key_jwt': {
          const authenticated =
            method === 'client_secret_basic'
              ? secretBasic(agents(policies), credentials.clientId, credentials.secret)
              : await privateKeyJwt(agents(policies), credentials.assertion, credentials.clientId)
          const caller = aged(authenticated)
          const { assertion } = authenticated
          if (caller.kind !== 'agent') throw fail('not an agent')
          return { agent: caller.agent, method, assertion }
        }
        case 'workload_identity':
          return workloadIdentity(policies, credentials.actorToken, credentials.actorTokenType, credentials.clientId)
        case 'spiffe_jwt':
          return spiffeJwt(policies, credentials.assertion, credentials.clientId)
        case 'none':
          throw fail('no client authentication')
      }
    },

    async authenticateCaller(credentials: ClientCredentials, policies: PolicyStore | undefined): Promise<AuthenticatedCaller> {
      switch (credentials.method) {
        case 'client_secret_basic':
        case 'private_key_jwt': {
          const authenticated =
            credentials.method === 'client_secret_basic'
              ? secretBasic(serversOr(policies), credentials.clientId, credentials.secret)
              : await privateKeyJwt(serversOr(policies), credentials.assertion, credentials.clientId)
          const caller = aged(authenticated)
          const { assertion } = authenticated
          return caller.kind === 'agent' ? { kind: 'agent', agent: caller.agent, assertion } : { kind: 'resource_server', server: caller.server, assertion }
        }
        case 'workload_identity': {
          // Only agents have workload identities; without policies, this is a refusal like any other.
          if (policies === undefined) throw fail('resource servers do not use workload identity')
          const client = await workloadIdentity(policies, credentials.actorToken, credentials.actorTokenType, credentials.clientId)
          return { kind: 'agent', agent: client.agent, assertion: client.assertion }
        }
        case 'spiffe_jwt': {
          // Resource servers authenticate by key or secret; a SPIFFE ID names agents only.
          if (policies === undefined) throw fail('resource servers do not use SPIFFE')
          const client = await spiffeJwt(policies, credentials.assertion, credentials.clientId)
          return { kind: 'agent', agent: client.agent, assertion: client.assertion }
        }
        case 'none':
          throw fail('no client authentication')
      }
    },
  }
}
