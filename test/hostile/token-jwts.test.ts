/** Hostile JWTs at the token endpoint: subject tokens, client assertions and workload actor tokens. */
import { describeHostile } from './describe-hostile.js'

describeHostile('token-jwts')
