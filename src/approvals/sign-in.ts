/**
 * The approver's sign-in with the upstream OpenID Provider (OpenID Connect
 * Core 1.0 §3.1, authorization code flow, RFC 7636 PKCE S256) through
 * oauth4webapi: the authorization request, then the code exchanged and the
 * ID token validated (issuer, audience, expiry, nonce) into the person the
 * approval page decides as.
 */
import * as oauth from 'oauth4webapi'
import type { Approver } from '../core/approval.js'

export interface ApprovalSignInDeps {
  readonly issuer: string
  readonly clientId: string
  readonly clientSecret: string
  /** `${mandate issuer}/approvals/callback`, registered at the provider. */
  readonly redirectUri: string
  readonly groupsClaim: string
  /** A scope that makes the provider add the groups claim, when it needs one. */
  readonly groupsScope?: string | undefined
  readonly emailClaim: string
}

/** What the page keeps between the authorization request and the callback. */
export interface SignInState {
  readonly state: string
  readonly nonce: string
  readonly verifier: string
}

export interface ApprovalSignIn {
  /** Fresh state, nonce and PKCE verifier, and the provider's authorization URL that carries them. */
  start(): Promise<{ state: SignInState; url: URL }>
  /** The person who signed in; throws (oauth4webapi's errors) when the callback or the ID token is not what `state` expects. */
  finish(callback: URL, state: SignInState): Promise<Approver>
}

/** The provider's URL is https, or http on a loopback host (config/schema.ts), where oauth4webapi must be told so. */
// eslint-disable-next-line @typescript-eslint/no-deprecated -- deprecated to stand out: the config accepts an http issuer on a loopback host only (tests, a local IdP)
const insecureOption = (issuer: URL) => (issuer.protocol === 'http:' ? { [oauth.allowInsecureRequests]: true } : {})

const TIMEOUT_MS = 10_000

export function createApprovalSignIn(deps: ApprovalSignInDeps): ApprovalSignIn {
  const issuer = new URL(deps.issuer)
  const insecure = insecureOption(issuer)
  const client: oauth.Client = { client_id: deps.clientId }
  const auth = oauth.ClientSecretBasic(deps.clientSecret)
  let metadata: Promise<oauth.AuthorizationServer> | undefined
  // Discovered at first use and kept: the broker starts whether or not the provider answers, and a failed discovery is tried again.
  const discover = () => {
    metadata ??= oauth
      .discoveryRequest(issuer, { algorithm: 'oidc', signal: AbortSignal.timeout(TIMEOUT_MS), ...insecure })
      .then((res) => oauth.processDiscoveryResponse(issuer, res))
      .catch((err: unknown) => {
        metadata = undefined
        throw err
      })
    return metadata
  }
  const scope = ['openid', 'email', ...(deps.groupsScope === undefined ? [] : [deps.groupsScope])].join(' ')

  return {
    async start() {
      const as = await discover()
      if (as.authorization_endpoint === undefined) throw new TypeError('the sign-in provider has no authorization_endpoint')
      const state = { state: oauth.generateRandomState(), nonce: oauth.generateRandomNonce(), verifier: oauth.generateRandomCodeVerifier() }
      const url = new URL(as.authorization_endpoint)
      url.search = new URLSearchParams({
        client_id: deps.clientId,
        redirect_uri: deps.redirectUri,
        response_type: 'code',
        scope,
        state: state.state,
        nonce: state.nonce,
        code_challenge: await oauth.calculatePKCECodeChallenge(state.verifier),
        code_challenge_method: 'S256',
      }).toString()
      return { state, url }
    },

    async finish(callback, state) {
      const as = await discover()
      const params = oauth.validateAuthResponse(as, client, callback, state.state)
      const response = await oauth.authorizationCodeGrantRequest(as, client, auth, params, deps.redirectUri, state.verifier, {
        signal: AbortSignal.timeout(TIMEOUT_MS),
        ...insecure,
      })
      const result = await oauth.processAuthorizationCodeResponse(as, client, response, { expectedNonce: state.nonce, requireIdToken: true })
      const claims = oauth.getValidatedIdTokenClaims(result)!
      const email = claims[deps.emailClaim]
      const groups = claims[deps.groupsClaim]
      // An address the provider says it did not verify names nobody: anyone could have typed it in (OpenID Connect Core §5.1).
      const name = typeof email === 'string' && email !== '' && claims['email_verified'] !== false ? email : undefined
      return {
        iss: claims.iss,
        sub: claims.sub,
        names: name === undefined ? [] : [name],
        groups: Array.isArray(groups) ? groups.filter((g): g is string => typeof g === 'string') : [],
        label: `${name ?? claims.sub} (${claims.sub} of ${claims.iss}, signed in)`,
      }
    },
  }
}
