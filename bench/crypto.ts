/**
 * npm run bench:crypto (also in bench:all): where the token endpoint's CPU goes, in ratios measured in
 * one run (these machines are shared and noisy; absolute figures are not
 * comparable across runs). Rounds alternate between cases; each figure is the
 * median of the rounds.
 *
 *   1. Signing: ES256 vs EdDSA, node:crypto one-shot vs jose (WebCrypto).
 *   2. Verifying: the same, plus RS256 (what most IdPs sign user tokens with).
 *   3. The whole exchange in-process (app.request, no sockets), per agent
 *      authentication method, against the crypto floor of the same request
 *      (node:crypto's callback form, 64 at a time on libuv's thread pool, as
 *      the broker does it; the synchronous floor is shown for comparison).
 *   4. invalid_client timing: unknown agent vs wrong secret vs wrong method.
 *   5. Forward auth: verifying the broker's own token with its verification
 *      cached (a token sent again) and not (the cache off: what every check
 *      cost before the cache), and the whole GET /forward-auth in-process.
 *
 * `--quick` runs shorter rounds.
 */
import { generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { cpus } from 'node:os'
import { promisify } from 'node:util'
import { generateKeyPair, jwtVerify, SignJWT } from 'jose'
import { basic, SECRET, startTestBroker } from '../test/support/broker.js'
import { CLIENT_ASSERTION_TYPE_JWT, type MandateClaims } from '../src/core/claims.js'
import { generateSigningJwk, signingKeysFromJwks } from '../src/tokens/keys.js'
import { createTokenMinter } from '../src/tokens/mint.js'
import { createSubjectVerifier } from '../src/tokens/subject.js'
import { createIssuerRegistry } from '../src/tokens/upstream.js'

const quick = process.argv.includes('--quick')
const ROUND_MS = quick ? 300 : 1000
const ROUNDS = quick ? 3 : 5

type Case = { name: string; run: () => unknown; batch?: number }

/** Ops per second of `run` for about ROUND_MS; async cases run `batch` at a time. */
async function measure(c: Case): Promise<number> {
  const batch = c.batch ?? 1
  const t0 = performance.now()
  let n = 0
  while (performance.now() - t0 < ROUND_MS) {
    if (batch === 1) {
      for (let i = 0; i < 50; i++) await c.run()
      n += 50
    } else {
      await Promise.all(Array.from({ length: batch }, c.run))
      n += batch
    }
  }
  return n / ((performance.now() - t0) / 1000)
}

async function compare(title: string, cases: Case[], reference: string): Promise<Map<string, number>> {
  const samples = new Map<string, number[]>(cases.map((c) => [c.name, []]))
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of r % 2 === 0 ? cases : [...cases].reverse()) samples.get(c.name)!.push(await measure(c))
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  const result = new Map([...samples].map(([k, v]) => [k, median(v)]))
  const ref = result.get(reference)!
  console.log(`\n${title} (median of ${ROUNDS} alternating rounds; ratio to "${reference}")`)
  for (const [name, ops] of result) {
    console.log(`  ${name.padEnd(44)} ${Math.round(ops).toString().padStart(8)} /s   ${(ops / ref).toFixed(2)}x`)
  }
  return result
}

const payload = Buffer.from(
  JSON.stringify({
    iss: 'https://mandate.example',
    sub: 'alice',
    aud: 'https://api.example',
    client_id: 'agent',
    act: { sub: 'agent' },
    scope: 'read write',
    iat: 1,
    nbf: 1,
    exp: 2,
    jti: crypto.randomUUID(),
  }),
)
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const ed = generateKeyPairSync('ed25519')
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
const sigs = {
  es: sign('sha256', payload, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' }),
  ed: sign(null, payload, ed.privateKey),
  rs: sign('sha256', payload, rsa.privateKey),
}
const joseEs = await generateKeyPair('ES256')
const joseEd = await generateKeyPair('EdDSA')
const joseEsToken = await new SignJWT({ a: 1 }).setProtectedHeader({ alg: 'ES256' }).sign(joseEs.privateKey)

console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}${quick ? ', --quick' : ''}`)

await compare(
  'Signing a token',
  [
    { name: 'node:crypto ES256 sign', run: () => void sign('sha256', payload, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' }) },
    { name: 'node:crypto EdDSA sign', run: () => void sign(null, payload, ed.privateKey) },
    { name: 'jose ES256 SignJWT', run: () => new SignJWT({ a: 1 }).setProtectedHeader({ alg: 'ES256' }).sign(joseEs.privateKey), batch: 64 },
    { name: 'jose EdDSA SignJWT', run: () => new SignJWT({ a: 1 }).setProtectedHeader({ alg: 'EdDSA' }).sign(joseEd.privateKey), batch: 64 },
  ],
  'node:crypto ES256 sign',
)

const v =
  (alg: string | null, key: KeyObject, sig: Buffer, opts: object = {}) =>
  () =>
    void verify(alg, payload, { key, ...opts }, sig)
await compare(
  'Verifying a signature',
  [
    { name: 'node:crypto ES256 verify', run: v('sha256', ec.publicKey, sigs.es, { dsaEncoding: 'ieee-p1363' }) },
    { name: 'node:crypto EdDSA verify', run: v(null, ed.publicKey, sigs.ed) },
    { name: 'node:crypto RS256 verify', run: v('sha256', rsa.publicKey, sigs.rs) },
    { name: 'jose ES256 jwtVerify', run: () => jwtVerify(joseEsToken, joseEs.publicKey), batch: 64 },
  ],
  'node:crypto ES256 verify',
)

// The whole exchange, in-process. Subject tokens are distinct per request in
// the "fresh subject" cases, so the verified-subject cache cannot help.
const b = await startTestBroker({ logLevel: 'warn' })
const N = quick ? 3_000 : 12_000
const subjects = await Promise.all(Array.from({ length: N }, (_, i) => b.userToken({ sub: `user-${i}`, groups: ['engineering'] })))
const assertions = await Promise.all(Array.from({ length: N * ROUNDS * 4 }, () => b.assertion()))
const cachedSubject = await b.userToken()
const auth = basic('secret-agent', SECRET)
let si = 0
let ai = 0
const subject = () => subjects[si++ % N]!
const exchangeSecret = (s: string) => async () => {
  const res = await b.token(b.exchangeForm(s, { scope: 'read' }), auth)
  if (res.status !== 200) throw new Error(`exchange failed: ${res.status} ${await res.text()}`)
}
const exchangeJwt = async () => {
  const res = await b.token(b.exchangeForm(subject(), { scope: 'read', client_assertion_type: CLIENT_ASSERTION_TYPE_JWT, client_assertion: assertions[ai++]! }))
  if (res.status !== 200) throw new Error(`exchange failed: ${res.status} ${await res.text()}`)
}
// Floor: what the exchange cannot avoid: verify the RS256 user token, verify an ES256 assertion, sign one ES256 token.
const floor = () => {
  verify('sha256', payload, rsa.publicKey, sigs.rs)
  verify('sha256', payload, { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, sigs.es)
  sign('sha256', payload, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' })
}
// The same work as the broker does it: node:crypto's callback form, on libuv's thread pool.
const verifyAsync = promisify(verify)
const signAsync = promisify(sign)
const floorPool = async () => {
  await verifyAsync('sha256', payload, rsa.publicKey, sigs.rs)
  await verifyAsync('sha256', payload, { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, sigs.es)
  await signAsync('sha256', payload, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' })
}
const floorPoolSecret = async () => {
  await verifyAsync('sha256', payload, rsa.publicKey, sigs.rs)
  await signAsync('sha256', payload, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' })
}
await compare(
  'Token exchange in-process (Hono app.request, memory adapters)',
  [
    { name: 'floor: RS256 verify + ES256 verify + sign', run: floorPool, batch: 64 },
    { name: 'floor: RS256 verify + ES256 sign', run: floorPoolSecret, batch: 64 },
    { name: 'floor, synchronous calls on the event loop', run: floor },
    { name: 'exchange, secret, fresh subject', run: () => exchangeSecret(subject())(), batch: 64 },
    { name: 'exchange, secret, cached subject', run: exchangeSecret(cachedSubject), batch: 64 },
    { name: 'exchange, private_key_jwt, fresh subject', run: exchangeJwt, batch: 64 },
  ],
  'floor: RS256 verify + ES256 verify + sign',
)

// Forward auth checks the same token many times: its verification is cached (SHA-256 keyed, until exp), its revocation is not.
const selfKeys = await signingKeysFromJwks({ keys: [await generateSigningJwk()] })
const nowS = () => Math.floor(Date.now() / 1000)
const ownToken = await createTokenMinter(selfKeys).mint({
  iss: 'https://mandate.example',
  sub: 'alice',
  sub_id: { format: 'iss_sub', iss: 'https://idp.example', sub: 'alice' },
  aud: 'https://api.example',
  client_id: 'agent',
  act: { sub: 'agent' },
  scope: 'read write',
  iat: nowS(),
  nbf: nowS(),
  exp: nowS() + 3600,
  jti: crypto.randomUUID(),
} as unknown as MandateClaims)
const ownVerifier = (cacheSize: number) =>
  createSubjectVerifier({
    selfIssuer: 'https://mandate.example',
    selfKeys,
    users: createIssuerRegistry([], () => {
      throw new TypeError('no user issuers here')
    }),
    now: nowS,
    skew: 30,
    maxAge: 86_400,
    cacheSize,
  })
const uncached = ownVerifier(0)
const cached = ownVerifier(10_000)
const verified = (v: typeof cached) => async () => {
  if ((await v.verifyOwn(ownToken)) === undefined) throw new Error('verifyOwn refused a live token')
}
const fwdToken = ((await (await b.token(b.exchangeForm(cachedSubject, { scope: 'read' }), auth)).json()) as { access_token: string }).access_token
const forwardAuth = async () => {
  const res = await b.mandate.app.request(`/forward-auth?audience=${encodeURIComponent('https://api.test')}&scope=read`, {
    headers: { authorization: `Bearer ${fwdToken}` },
  })
  if (res.status !== 200) throw new Error(`forward auth refused: ${res.status}`)
}
await compare(
  "Forward auth: the broker's own token, verified (verifyOwn) and checked (GET /forward-auth, app.request)",
  [
    { name: 'node:crypto ES256 verify', run: v('sha256', ec.publicKey, sigs.es, { dsaEncoding: 'ieee-p1363' }) },
    { name: 'verifyOwn, cache off (verified each time)', run: verified(uncached) },
    { name: 'verifyOwn, a token sent again (cached)', run: verified(cached) },
    { name: 'GET /forward-auth, a token sent again', run: forwardAuth },
  ],
  'node:crypto ES256 verify',
)
// Client authentication failures must not tell an unknown agent from a wrong
// secret by timing: same body, same work. Per-request cost of each, as ratios.
// The failed-authentication back-off would answer 429 after the free failures: the clock moves past every block
// (5 min at most) before each try, so that each one is tried.
const refuse = (headers: Record<string, string>) => async () => {
  b.advance(301)
  const res = await b.token(b.exchangeForm(cachedSubject, { scope: 'read' }), headers)
  if (res.status !== 401) throw new Error(`expected 401, got ${res.status}`)
}
await compare(
  'invalid_client timing (ratio near 1.00 means indistinguishable)',
  [
    { name: 'wrong secret for a known agent', run: refuse(basic('secret-agent', 'not-the-secret')) },
    { name: 'unknown agent', run: refuse(basic('no-such-agent', 'not-the-secret')) },
    { name: 'known agent that uses another method', run: refuse(basic('jwt-agent', 'not-the-secret')) },
  ],
  'wrong secret for a known agent',
)

await b.close()
