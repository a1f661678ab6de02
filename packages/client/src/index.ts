/**
 * `@mandate/client`: how an agent runtime gets Mandate tokens.
 *
 * ```ts
 * const mandate = createClient({ issuer, clientId: 'files-agent', auth: clientSecret(process.env.MANDATE_CLIENT_SECRET!) })
 * const { accessToken } = await mandate.getToken({ subjectToken: userToken, audience: 'https://files.example', scope: 'files:read' })
 * ```
 */
export { createClient } from './client.js'
export type {
  Actor,
  AudienceFor,
  CacheOptions,
  ClientOptions,
  Clock,
  DelegateRequest,
  FetchOptions,
  GetTokenRequest,
  MandateClient,
  MandateToken,
  TokenRequest,
} from './client.js'
export type { ApprovalRequest, ApprovedToken, AuthorizationDetail, PendingApproval, WaitOptions } from './approval.js'
export type { DpopOption } from './dpop.js'
export { clientSecret, privateKeyJwt, workloadIdentity } from './auth.js'
export type { AssertionAlgorithm, ClientAuth, PrivateKeyJwtOptions, WorkloadTokenSource } from './auth.js'
export { MandateClientError } from './errors.js'
export type { RetryOptions } from './retry.js'
