/** Hostile forward-auth checks (RFC 6750) and Shared Signals polls (RFC 8936). */
import { describeHostile } from './describe-hostile.js'

describeHostile('edge')
