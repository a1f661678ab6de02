/**
 * The issuers Mandate trusts, in their three roles (user subjects, workload
 * actors, ID-JAG grants), each with its key resolver: held in memory for a local issuer
 * (tests, the dev issuer), fetched over HTTP for every other.
 */
import type { JSONWebKeySet } from 'jose'
import type { Logger } from '../telemetry/log.js'
import {
  createIssuerRegistry,
  createLocalKeyResolver,
  createRemoteKeyResolver,
  keepKeySetsFresh,
  type IssuerRegistry,
  type JwksPolicy,
  type KeyResolver,
  type KeySetStatus,
  type TrustedIssuer,
} from './upstream.js'

/** A trusted issuer with its public keys in hand. */
export interface LocalIssuer {
  readonly trusted: TrustedIssuer
  readonly jwks: JSONWebKeySet
}

export type IssuerRole = 'subjects' | 'workloads' | 'id_jag'

/** One trusted issuer's key set, for readiness. */
export interface IssuerKeysStatus extends KeySetStatus {
  readonly issuer: string
  readonly role: IssuerRole
}

export interface IssuerTrust {
  readonly users: IssuerRegistry
  readonly workloads: IssuerRegistry
  /** Issuers of ID-JAGs (draft-ietf-oauth-identity-assertion-authz-grant); empty: the JWT bearer grant is not served. */
  readonly idJag: IssuerRegistry
  /** Whether any issuer is trusted for ID-JAGs. */
  readonly idJagServed: boolean
  /** Issuers whose users a token may name (user subjects, then ID-JAG issuers), configured first, then local ones. */
  readonly userIssuers: readonly string[]
  /** Every issuer's key set as known now (no network). */
  status(): IssuerKeysStatus[]
  /** Fetches the remote key sets at once and whenever due (see `keepKeySetsFresh`); returns the stop. */
  keepFresh(): () => void
}

export interface IssuerTrustOptions {
  /** Configured issuers, by role (their keys fetched). */
  readonly subjects: readonly TrustedIssuer[]
  readonly workloads: readonly TrustedIssuer[]
  readonly idJag: readonly TrustedIssuer[]
  /** Issuers whose keys are held in memory, by role; one also configured uses these keys. */
  readonly localSubjects: readonly LocalIssuer[]
  readonly localWorkloads: readonly LocalIssuer[]
  readonly jwksPolicy: JwksPolicy
  /** Epoch milliseconds. */
  readonly clock: () => number
  readonly logger: Logger
}

export function buildIssuerTrust(options: IssuerTrustOptions): IssuerTrust {
  const local = new Map([...options.localSubjects, ...options.localWorkloads].map((l) => [l.trusted.issuer, l.jwks]))
  const keySets: { readonly issuer: string; readonly role: IssuerRole; readonly keys: KeyResolver }[] = []
  const resolverFor =
    (role: IssuerRole) =>
    (t: TrustedIssuer): KeyResolver => {
      const jwks = local.get(t.issuer)
      const keys = jwks === undefined ? createRemoteKeyResolver(t, options.jwksPolicy, options.clock, options.logger) : createLocalKeyResolver(jwks)
      keySets.push({ issuer: t.issuer, role, keys })
      return keys
    }
  const subjects = [...options.subjects, ...options.localSubjects.map((l) => l.trusted)]
  const workloads = [...options.workloads, ...options.localWorkloads.map((l) => l.trusted)]
  return {
    users: createIssuerRegistry(subjects, resolverFor('subjects')),
    workloads: createIssuerRegistry(workloads, resolverFor('workloads')),
    idJag: createIssuerRegistry(options.idJag, resolverFor('id_jag')),
    idJagServed: options.idJag.length > 0,
    userIssuers: [...subjects, ...options.idJag].map((t) => t.issuer),
    status: () => keySets.map((k) => ({ issuer: k.issuer, role: k.role, ...k.keys.status() })),
    keepFresh: () => keepKeySetsFresh(keySets.map((k) => k.keys)),
  }
}
