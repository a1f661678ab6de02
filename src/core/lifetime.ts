/**
 * A JWT's time claims judged against a clock: one home for the rules the
 * subject verifier applies to a presented token (tokens/jws.ts) and that
 * `policy explain` applies to a described one. Pure: `now` comes in.
 */

/** Why a token's time claims do not hold now; the codes are the verifier's `JwtError` codes. */
export type LifetimeProblem = 'bad_exp' | 'bad_iat' | 'bad_nbf' | 'expired' | 'exp_too_far' | 'not_yet_valid' | 'issued_in_future'

export interface LifetimeRules {
  /** Epoch seconds. */
  readonly now: number
  /** Seconds of clock difference tolerated either way. */
  readonly skew: number
  /** Seconds: an `exp` further ahead of `now` than this (plus the skew) is refused. */
  readonly maxExpiresIn?: number | undefined
}

const TIME_CLAIMS = ['exp', 'iat', 'nbf'] as const

/** RFC 7519 §2 NumericDate: seconds since the epoch, fractions allowed; JSON.parse turns 1e400 into Infinity. */
export function numericDateProblem(payload: Readonly<Record<string, unknown>>): LifetimeProblem | undefined {
  for (const name of TIME_CLAIMS) {
    const v = payload[name]
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) return `bad_${name}`
  }
  return undefined
}

/**
 * RFC 7519 §4.1.4 (`exp`), §4.1.5 (`nbf`) with the skew, a longest lifetime
 * ahead, and no `iat` in the future; absent claims are not judged (whether one
 * is required is the caller's rule). The claims must be NumericDates already.
 */
export function lifetimeProblem(payload: Readonly<Record<string, unknown>>, rules: LifetimeRules): LifetimeProblem | undefined {
  const { now, skew } = rules
  const exp = payload['exp'] as number | undefined
  const nbf = payload['nbf'] as number | undefined
  const iat = payload['iat'] as number | undefined
  if (exp !== undefined && now - skew >= exp) return 'expired'
  if (exp !== undefined && rules.maxExpiresIn !== undefined && exp > now + rules.maxExpiresIn + skew) return 'exp_too_far'
  if (nbf !== undefined && nbf > now + skew) return 'not_yet_valid'
  if (iat !== undefined && iat > now + skew) return 'issued_in_future'
  return undefined
}
