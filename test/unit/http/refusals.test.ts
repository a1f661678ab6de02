/**
 * 503s from an outage are logged as one aggregated line per interval (the
 * refusal log), not one error line per request; each request keeps its
 * request line, at info.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { basic, SECRET, startTestBroker, type TestBroker } from '../../support/broker.js'
import { exchange, expectOAuthError } from './helpers.js'

const brokers: TestBroker[] = []
afterEach(async () => {
  for (const b of brokers.splice(0)) await b.close()
})

const secretAgent = () => basic('secret-agent', SECRET)
const refusedLines = (b: TestBroker) => b.logs().filter((l) => l['msg'] === 'requests refused')
const errorLines = (b: TestBroker) => b.logs().filter((l) => l['level'] === 'error')

describe('refusals from an outage', () => {
  it('are logged as one aggregated line, not an error line per request; each request line is at info', async () => {
    const b = await startTestBroker({ logLevel: 'debug' })
    brokers.push(b)
    const user = await b.userToken()
    const append = b.audit.append
    b.audit.append = (event) => (event.type === 'token.issued' ? Promise.reject(new Error('database gone')) : append(event))
    for (let i = 0; i < 20; i++) await expectOAuthError(await b.token(exchange(user), secretAgent()), 503, 'temporarily_unavailable')
    expect(errorLines(b)).toEqual([])
    // The first at once; the other 19 are counted for the next line (at the end of the interval, or at close).
    expect(refusedLines(b)).toEqual([
      expect.objectContaining({ level: 'warn', refused: 1, causes: { 'audit log unavailable; nothing was issued; try again': 1 } }),
    ])
    const requestLines = b.logs().filter((l) => l['msg'] === 'request' && l['status'] === 503)
    expect(requestLines).toHaveLength(20)
    expect(new Set(requestLines.map((l) => l['level']))).toEqual(new Set(['info']))
    b.mandate.refusals.unavailable.close()
    expect(refusedLines(b)[1]).toMatchObject({ refused: 19, causes: { 'audit log unavailable; nothing was issued; try again': 19 } })
  })
})
