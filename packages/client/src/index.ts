/** @mandate/client: get Mandate tokens for an agent. */
export const PACKAGE_NAME = '@mandate/client'
