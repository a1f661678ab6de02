/**
 * What a verifier learns from the broker's RFC 8414 authorization server
 * metadata: where its signing keys are, where its revocation feed is, which
 * algorithms its access tokens are signed with.
 */
import { ASYMMETRIC_ALGORITHMS, type AsymmetricAlgorithm } from './claims.js'
import { fetchJson, isAllowedUrl, Unreachable, type FetchJsonOptions } from './fetch-json.js'
import { isRecord } from './codec.js'
import { FEED_METADATA_MEMBER } from './feed-wire.js'

export interface BrokerMetadata {
  readonly issuer: string
  readonly jwksUri: string
  readonly revocationFeedEndpoint: string
  /** RFC 7662, when the broker offers it (a resource server may ask about a token it cannot verify itself). */
  readonly introspectionEndpoint: string | undefined
  /** `access_token_signing_alg_values_supported` ∩ the asymmetric algorithms: what a token's `alg` must be. */
  readonly algorithms: readonly AsymmetricAlgorithm[]
}

/** A metadata document is a few kilobytes. */
const MAX_METADATA_BYTES = 64 * 1024

/**
 * RFC 8414 §3.1: the well-known segment goes between the host and the
 * issuer's path (a terminating `/` removed), so that several issuers can share
 * a host. Throws `TypeError` on an issuer that is no valid issuer identifier
 * (§2: https, no query, no fragment; http only on a loopback host here).
 */
export function metadataUrl(issuer: string): string {
  if (!isAllowedUrl(issuer)) throw new TypeError('issuer must be an https URL (http only on a loopback host), without credentials or fragment')
  const url = new URL(issuer)
  if (url.search !== '') throw new TypeError('issuer must have no query (RFC 8414 §2)')
  const path = url.pathname.replace(/\/$/, '')
  return `${url.origin}/.well-known/oauth-authorization-server${path}`
}

/**
 * Fetches and checks the metadata. Throws `Unreachable` when the document
 * cannot be had or is not one this verifier can trust: an `issuer` other than
 * the one configured (§3.3, which stops a metadata impersonation), or a
 * missing or non-https endpoint.
 */
export async function discover(issuer: string, options: Omit<FetchJsonOptions, 'maxBytes'>): Promise<BrokerMetadata> {
  const url = metadataUrl(issuer)
  const json = await fetchJson(url, 'application/json', { ...options, maxBytes: MAX_METADATA_BYTES })
  if (!isRecord(json)) throw new Unreachable(`${url}: not a JSON object`)
  // RFC 8414 §3.3: identical to the issuer the URL was built from, or the document is not used.
  if (json['issuer'] !== issuer) throw new Unreachable(`${url}: issuer is not ${issuer}`)
  const endpoint = (name: string, required: boolean): string | undefined => {
    const value = json[name]
    if (value === undefined && !required) return undefined
    if (!isAllowedUrl(value)) throw new Unreachable(`${url}: ${name} is ${value === undefined ? 'missing' : 'not an https URL'}`)
    return value
  }
  const jwksUri = endpoint('jwks_uri', true)!
  const revocationFeedEndpoint = endpoint(FEED_METADATA_MEMBER, true)!
  const introspectionEndpoint = endpoint('introspection_endpoint', false)
  const listed = json['access_token_signing_alg_values_supported']
  // Pinned to what the broker says it signs with, and never anything but asymmetric (RFC 8725 §3.1): no guessing when it says nothing.
  const algorithms = Array.isArray(listed) ? ASYMMETRIC_ALGORITHMS.filter((a) => (listed as unknown[]).includes(a)) : []
  if (algorithms.length === 0) throw new Unreachable(`${url}: access_token_signing_alg_values_supported names no asymmetric algorithm`)
  return { issuer, jwksUri, revocationFeedEndpoint, introspectionEndpoint, algorithms }
}
