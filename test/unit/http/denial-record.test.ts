/**
 * A denied exchange's record keeps the audiences and scopes asked for, so that an owner can read why
 * (`mandate audit show`), but never a credential pasted into one of those fields.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { basic, SECRET, startTestBroker, type TestBroker } from '../../support/broker.js'

describe('a denied exchange’s record', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker()
  })
  afterAll(() => b.close())

  it('keeps an audience and scope as asked, and names a token sent in their place by its length only', async () => {
    const userToken = await b.userToken({ scope: 'read' })
    const asked = await b.token(b.exchangeForm(userToken, { audience: 'https://nope.test', scope: 'read' }), basic('secret-agent', SECRET))
    expect(asked.status).toBe(400)
    expect(
      b.audit
        .events()
        .filter((e) => e.type === 'token.denied')
        .at(-1),
    ).toMatchObject({ audiences: ['https://nope.test'], scopes: ['read'] })

    const pasted = await b.token(b.exchangeForm(userToken, { audience: userToken, scope: userToken }), basic('secret-agent', SECRET))
    expect(pasted.status).toBe(400)
    const record = b.audit
      .events()
      .filter((e) => e.type === 'token.denied')
      .at(-1) as { audiences?: readonly string[]; scopes?: readonly string[] }
    expect(record.audiences).toEqual([`<${userToken.length} chars>`])
    expect(record.scopes).toEqual([`<${userToken.length} chars>`])
    expect(JSON.stringify(b.audit.events())).not.toContain(userToken.split('.')[2]!)
  })
})
