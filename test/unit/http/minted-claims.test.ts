/**
 * A minted token carries exactly the claims Mandate defines, on the first hop
 * and on a re-delegation, whatever else the user's token carried: nothing of
 * the subject token is copied but what the exchange decided.
 */
import fc from 'fast-check'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mandateClaims } from '../../../src/tokens/subject.js'
import { basic, BROKER, SECRET, USER_ISSUER } from '../../support/broker.js'
import { exchange, expectCleanLogs, rawUserToken, startTrackedBroker, type TrackedBroker } from './helpers.js'

const FIRST_HOP = ['act', 'aud', 'client_id', 'exp', 'iat', 'iss', 'jti', 'nbf', 'scope', 'sub', 'sub_id']
const REDELEGATED = [...FIRST_HOP, 'chain'].sort()

describe('claims of a minted token', () => {
  let b: TrackedBroker
  beforeAll(async () => {
    b = await startTrackedBroker()
  })
  afterAll(async () => {
    expectCleanLogs(b)
    await b.close()
  })

  const claimName = fc.oneof(
    fc.constantFrom(
      'may_act',
      'cnf',
      'groups',
      'roles',
      'email',
      'azp',
      'client_id',
      'scp',
      'chain',
      'sub_id',
      'entitlements',
      'authorization_details',
      'acr',
      'amr',
      'auth_time',
      'sid',
      'tenant',
      'nbf',
      'jti',
      '__proto__',
      'constructor',
    ),
    fc.string({ minLength: 1, maxLength: 10 }),
  )
  const claimValue = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constantFrom({ sub: 'secret-agent' }, { sub: 'sub-agent' }, { sub: 'secret-agent', iss: 'https://mandate.test' }, ['engineering'], 'read write'),
  )
  const extraClaims = fc.dictionary(claimName, claimValue, { maxKeys: 5 })

  it('holds exactly iss sub sub_id aud client_id act scope iat nbf exp jti (and chain when re-delegated), whatever the user token carries', async () => {
    let issued = 0
    await fc.assert(
      fc.asyncProperty(extraClaims, async (extra) => {
        const subject = rawUserToken(b, { ...extra, iss: USER_ISSUER, sub: 'alice', aud: BROKER, iat: b.now(), exp: b.now() + 3600 })
        const first = await b.token(exchange(b.secret(subject), { scope: 'read' }), basic('secret-agent', SECRET))
        if (first.status !== 200) {
          expect(first.status).toBe(400)
          return
        }
        issued++
        const parent = b.secret(((await first.json()) as { access_token: string }).access_token)
        expect(Object.keys(decodeJwt(parent)).sort()).toEqual(FIRST_HOP)
        const child = await b.token(exchange(parent, { scope: 'read' }), basic('sub-agent', SECRET))
        expect(child.status, await child.clone().text()).toBe(200)
        expect(Object.keys(decodeJwt(b.secret(((await child.json()) as { access_token: string }).access_token))).sort()).toEqual(REDELEGATED)
      }),
      {
        numRuns: 150,
        examples: [[{ may_act: { sub: 'secret-agent' } }], [{ may_act: { sub: 'secret-agent', iss: 'https://mandate.test' }, cnf: { jkt: 'x' } }]],
      },
    )
    // Most runs must reach a token, or the property says little.
    expect(issued).toBeGreaterThan(75)
  })

  it('accepts a parent minted before may_act stopped being copied, whatever its may_act holds, and reads nothing of it', () => {
    const minted = {
      iss: BROKER,
      sub: 'alice',
      sub_id: { format: 'iss_sub', iss: USER_ISSUER, sub: 'alice' },
      aud: 'https://api.test',
      client_id: 'secret-agent',
      act: { sub: 'secret-agent' },
      scope: 'read',
      iat: 1,
      nbf: 1,
      exp: 2,
      jti: 'j',
    }
    for (const mayAct of [{ sub: 'secret-agent' }, { sub: 'someone-else', iss: 'https://elsewhere.test' }, 'not an object', null]) {
      expect(() => mandateClaims({ ...minted, may_act: mayAct })).not.toThrow()
    }
  })
})
