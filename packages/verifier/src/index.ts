/** @mandate/verifier: verify Mandate access tokens at a resource server. */
export const PACKAGE_NAME = '@mandate/verifier'
