/** Hostile identity proofs at the token endpoint: DPoP proofs, SPIFFE JWT-SVIDs and ID-JAGs. */
import { describeHostile } from './describe-hostile.js'

describeHostile('identity')
