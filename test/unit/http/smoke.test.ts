import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { basic, SECRET, startTestBroker, type TestBroker } from '../../support/broker.js'

describe('token endpoint smoke', () => {
  let b: TestBroker
  beforeAll(async () => {
    b = await startTestBroker()
  })
  afterAll(() => b.close())

  it('issues a token for a secret agent', async () => {
    const res = await b.token(b.exchangeForm(await b.userToken(), { scope: 'read' }), basic('secret-agent', SECRET))
    expect(res.status).toBe(200)
    const body = (await res.json()) as { access_token: string }
    expect(decodeJwt(body.access_token)).toMatchObject({ sub: 'alice', client_id: 'secret-agent', act: { sub: 'secret-agent' } })
  })
})
