/**
 * RFC 9728 OAuth 2.0 Protected Resource Metadata: the document a resource
 * server publishes so that a client (an agent) can find the authorization
 * server that issues tokens for it, and the scopes it knows.
 */
import { parseScope } from './claims.js'
import { isAllowedUrl } from './fetch-json.js'

export interface ProtectedResourceMetadata {
  /** Where to serve it on this resource server (RFC 9728 §3.1), e.g. `/.well-known/oauth-protected-resource/api`. */
  readonly path: string
  /** Its full URL: the `resource_metadata` of a challenge (§5.1). */
  readonly url: string
  /** The §2 document, to send as JSON. */
  readonly document: {
    readonly resource: string
    readonly authorization_servers: readonly string[]
    readonly scopes_supported?: readonly string[]
    readonly bearer_methods_supported: readonly ['header']
  }
}

const WELL_KNOWN = '/.well-known/oauth-protected-resource'

function resourceUrl(resource: string): URL {
  // §1.2: a URL with the https scheme and no fragment (http on a loopback host, for development).
  if (!isAllowedUrl(resource)) throw new TypeError('resource must be an https URL without fragment (http only on a loopback host)')
  const url = new URL(resource)
  if (url.search !== '') throw new TypeError('resource must have no query (RFC 9728 §3.1 says it is not recommended; Mandate refuses it)')
  return url
}

/** RFC 9728 §3.1: the well-known segment between the host and the resource's path (a terminating `/` removed). */
function wellKnownPath(url: URL): string {
  return `${WELL_KNOWN}${url.pathname.replace(/\/$/, '')}`
}

/** The URL of `resource`'s metadata (RFC 9728 §3.1). Throws `TypeError` on a resource that is no https URL. */
export function protectedResourceMetadataUrl(resource: string): string {
  const url = resourceUrl(resource)
  return `${url.origin}${wellKnownPath(url)}`
}

/**
 * The RFC 9728 §2 document of `resource`, protected by tokens of `issuer`,
 * and where to serve it. Bearer tokens are taken in the `Authorization`
 * header only (RFC 6750 §2.1). Throws `TypeError` on a malformed argument.
 */
export function protectedResourceMetadata(options: {
  readonly issuer: string
  readonly resource: string
  readonly scopesSupported?: readonly string[]
}): ProtectedResourceMetadata {
  const url = resourceUrl(options.resource)
  if (!isAllowedUrl(options.issuer)) throw new TypeError('issuer must be an https URL')
  const scopes = options.scopesSupported
  if (scopes !== undefined)
    for (const s of scopes) if (typeof s !== 'string' || parseScope(s)?.length !== 1) throw new TypeError(`malformed scope: ${JSON.stringify(s)}`)
  const path = wellKnownPath(url)
  return {
    path,
    url: `${url.origin}${path}`,
    document: {
      resource: options.resource,
      authorization_servers: [options.issuer],
      ...(scopes === undefined ? {} : { scopes_supported: [...new Set(scopes)] }),
      bearer_methods_supported: ['header'],
    },
  }
}
