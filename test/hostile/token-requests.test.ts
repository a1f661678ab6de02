/** Hostile token requests: parameters, bytes, bodies and client authentication, one class at a time and several at once. */
import { describeHostile } from './describe-hostile.js'

describeHostile('token-requests')
