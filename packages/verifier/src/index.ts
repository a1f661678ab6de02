/**
 * @mandate/verifier: verify Mandate access tokens at a resource server,
 * locally, against the broker's keys and a live mirror of its revocation
 * list. See the README for the example and every option.
 */
export { createVerifier } from './verifier.js'
export type { AuthenticateResult, BearerRequest, RequiredScopes, VerifiedToken, Verifier, VerifierOptions } from './verifier.js'
export type { Credentials } from './credentials.js'
export { VerifierError } from './errors.js'
export type { VerifierErrorCode, VerifierReason } from './errors.js'
export { metadataUrl } from './discovery.js'
export { FEED_METADATA_MEMBER } from './feed-wire.js'
export type { BrokerMetadata } from './discovery.js'
export { protectedResourceMetadata, protectedResourceMetadataUrl } from './resource-metadata.js'
export type { ProtectedResourceMetadata } from './resource-metadata.js'
export type { VerifierLogger } from './feed.js'
export { createMemoryDpopReplayStore } from './dpop-auth.js'
export type { DpopOptions, DpopReplayStore, MemoryDpopReplayOptions } from './dpop-auth.js'
export { accessTokenHash, createDpopNonces, DpopError, DPOP_ALGORITHMS, dpopHeaderValue, verifyDpopProof } from './dpop.js'
export type { DpopCheck, DpopErrorCode, DpopNonceOptions, DpopNonces, DpopProof } from './dpop.js'
export { actorsOf, ASYMMETRIC_ALGORITHMS } from './claims.js'
export type { ActClaim, AgentId, ConfirmationClaim, AsymmetricAlgorithm, Jti, MandateClaims, MayActClaim, Subject, SubjectIdentifier } from './claims.js'
