/**
 * Signed approval links and the sealed cookies of the approver's pages
 * (src/approvals/link.ts), with keys generated here and a fixed clock: what
 * a link carries, its explicit `typ` (RFC 8725 §3.11), its expiry, key
 * rotation, and cookies that open only for their own purpose and key.
 */
import { decodeJwt, decodeProtectedHeader, SignJWT } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import { APPROVAL_LINK_TYP, createApprovalLinks, createSealer, InvalidLink } from '../../../src/approvals/link.js'
import { generateSigningJwk, signingKeysFromJwks, type SigningKeys } from '../../../src/tokens/keys.js'

const ISSUER = 'https://mandate.test'
const T0 = 1_800_000_000
const ID = 'apr_AAAAAAAAAAAAAAAAAAAAAA'

describe('approval links', () => {
  let keys: SigningKeys
  let now = T0
  beforeAll(async () => {
    keys = await signingKeysFromJwks({ keys: [await generateSigningJwk()] }, T0)
  })
  const links = () => createApprovalLinks({ issuer: ISSUER, keys, now: () => now })
  const tokenOf = (link: string) => new URL(link).searchParams.get('t')!

  it('is {issuer}/approvals/link?t=<JWT> with typ, iss, aud, approval, jti, iat and exp = the request’s expiry', async () => {
    now = T0
    const link = await links().link(ID, T0 + 300)
    expect(link.startsWith(`${ISSUER}/approvals/link?t=`)).toBe(true)
    const t = tokenOf(link)
    expect(decodeProtectedHeader(t)).toEqual({ alg: 'ES256', typ: APPROVAL_LINK_TYP, kid: keys.current.kid })
    expect(decodeJwt(t)).toMatchObject({ iss: ISSUER, aud: `${ISSUER}/approvals/link`, approval: ID, iat: T0, exp: T0 + 300 })
    const verified = await links().verify(t)
    expect(verified.approval).toBe(ID)
    expect(verified.jti).toBe(decodeJwt(t).jti)
  })

  it('each link has its own jti', async () => {
    const [a, b] = await Promise.all([links().link(ID, T0 + 300), links().link(ID, T0 + 300)])
    expect(decodeJwt(tokenOf(a)).jti).not.toBe(decodeJwt(tokenOf(b)).jti)
  })

  it('expires with the request: good one second before, refused at exp', async () => {
    now = T0
    const t = tokenOf(await links().link(ID, T0 + 60))
    now = T0 + 59
    await expect(links().verify(t)).resolves.toMatchObject({ approval: ID })
    now = T0 + 60
    await expect(links().verify(t)).rejects.toThrow(new InvalidLink('ERR_JWT_EXPIRED'))
    now = T0
  })

  it.each([
    ['another typ (an access token)', { typ: 'at+jwt' }, {}],
    ['no typ', { typ: undefined }, {}],
    ['another audience', {}, { aud: `${ISSUER}/oauth2/token` }],
    ['another issuer', {}, { iss: 'https://other.test' }],
    ['no approval', {}, { approval: undefined }],
    ['a malformed approval', {}, { approval: '../x' }],
  ])('refuses a token of the broker’s own key with %s', async (_what, header: Record<string, unknown>, claims: Record<string, unknown>) => {
    const body = { iss: ISSUER, aud: `${ISSUER}/approvals/link`, approval: ID, jti: 'j'.repeat(22), iat: T0, exp: T0 + 60, ...claims }
    const t = await new SignJWT(JSON.parse(JSON.stringify(body)) as Record<string, unknown>)
      .setProtectedHeader(JSON.parse(JSON.stringify({ alg: 'ES256', kid: keys.current.kid, typ: APPROVAL_LINK_TYP, ...header })) as { alg: string })
      .sign(keys.current.privateKey)
    await expect(links().verify(t)).rejects.toBeInstanceOf(InvalidLink)
  })

  it('refuses junk and another key’s signature', async () => {
    await expect(links().verify('junk')).rejects.toBeInstanceOf(InvalidLink)
    const other = await signingKeysFromJwks({ keys: [await generateSigningJwk()] }, T0)
    const foreign = tokenOf(await createApprovalLinks({ issuer: ISSUER, keys: other, now: () => T0 }).link(ID, T0 + 60))
    await expect(links().verify(foreign)).rejects.toBeInstanceOf(InvalidLink)
  })

  it('a link signed before a rotation still verifies while its key is published', async () => {
    const old = await generateSigningJwk()
    const before = await signingKeysFromJwks({ keys: [old] }, T0)
    const t = tokenOf(await createApprovalLinks({ issuer: ISSUER, keys: before, now: () => T0 }).link(ID, T0 + 60))
    const after = await signingKeysFromJwks({ keys: [old, { ...(await generateSigningJwk()), mandate_activates_at: T0 + 1 } as never] }, T0 + 2)
    expect(after.current.kid).not.toBe(before.current.kid)
    await expect(createApprovalLinks({ issuer: ISSUER, keys: after, now: () => T0 + 2 }).verify(t)).resolves.toMatchObject({ approval: ID })
  })
})

describe('sealed cookies', () => {
  let keys: SigningKeys
  let now = T0
  beforeAll(async () => {
    keys = await signingKeysFromJwks({ keys: [await generateSigningJwk()] }, T0)
  })

  it('open to what was sealed, until they expire', async () => {
    const s = createSealer(keys, 'a', () => now)
    const v = await s.seal({ approval: ID, csrf: 'c' }, 600)
    expect(v).not.toContain(ID)
    await expect(s.open(v)).resolves.toMatchObject({ approval: ID, csrf: 'c' })
    now = T0 + 600
    await expect(s.open(v)).rejects.toBeInstanceOf(InvalidLink)
    now = T0
  })

  it('do not open for another purpose, after a change, or under another key', async () => {
    const v = await createSealer(keys, 'a', () => now).seal({ approval: ID }, 600)
    await expect(createSealer(keys, 'b', () => now).open(v)).rejects.toBeInstanceOf(InvalidLink)
    const parts = v.split('.')
    parts[3] = parts[3]!.slice(0, -2) + (parts[3]!.endsWith('AA') ? 'BA' : 'AA')
    await expect(createSealer(keys, 'a', () => now).open(parts.join('.'))).rejects.toBeInstanceOf(InvalidLink)
    const other = await signingKeysFromJwks({ keys: [{ ...(await generateSigningJwk()), kid: keys.current.kid }] }, T0)
    await expect(createSealer(other, 'a', () => now).open(v)).rejects.toBeInstanceOf(InvalidLink)
    await expect(createSealer(keys, 'a', () => now).open('junk')).rejects.toBeInstanceOf(InvalidLink)
  })
})
