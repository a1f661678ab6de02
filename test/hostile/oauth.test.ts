/** Hostile introspection (RFC 7662) and revocation (RFC 7009) requests. */
import { describeHostile } from './describe-hostile.js'

describeHostile('oauth')
