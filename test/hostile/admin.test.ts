/** Hostile admin API requests and wrong methods, unknown paths and junk queries on every route (PostgreSQL-backed revocations and audit queries). */
import { describeHostile } from './describe-hostile.js'

describeHostile('admin')
