/**
 * FOR BENCHMARKS ONLY. The @mandate/verifier part of `npm run
 * bench:revocation`, against real brokers (`mandate serve --dev` with a
 * `resource_servers` entry, processes of their own; run `npm run build`
 * first, which also builds the package's dist/ that this imports):
 *
 * Kill to first refusal: a verifier in this process follows broker B's
 * revocation feed (server-sent events) as resource server `rs/bench`; a
 * token minted by B is revoked (by `jti`) through broker A's admin API, and
 * `verifier.verify` is called until it rejects with `revoked`; timed from A's
 * 201 (and from the kill's request). With PostgreSQL and Redis, A and B share
 * them, so the kill crosses Redis and then B's feed, as between two
 * instances; without them A and B are one embedded broker.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createVerifier, VerifierError, type Verifier } from '@mandate/verifier'
import { ownBacking } from './backing.js'
import { ADMIN, AUDIENCE, mint, row, startBroker, stopBroker, type Broker } from './forward-auth.js'

const RS_ID = 'rs/bench'

/** Lets the event loop run (the feed's socket), without a timer's minimum delay. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

/** Whether the verifier accepts `token` now: true, false when refused as revoked; throws on any other refusal. */
async function accepts(verifier: Verifier, token: string): Promise<boolean> {
  try {
    await verifier.verify(token, { scopes: ['demo:read'] })
    return true
  } catch (err) {
    if (err instanceof VerifierError && err.reason === 'revoked') return false
    throw err
  }
}

export async function verifierBench(quick: boolean): Promise<void> {
  const kills = quick ? 30 : 200
  const secret = randomBytes(24).toString('base64url')
  const dir = mkdtempSync(join(tmpdir(), 'mandate-bench-verifier-'))
  const config = join(dir, 'mandate.yaml')
  writeFileSync(
    config,
    `resource_servers:\n  - id: ${RS_ID}\n    audiences: [${AUDIENCE}]\n    authentication: { method: client_secret_basic, secret_sha256: ${createHash('sha256').update(secret).digest('hex')} }\n`,
  )
  const backing = await ownBacking({ redis: true })
  const shared = typeof backing === 'string' ? undefined : backing
  const env = { ...shared?.env }
  const brokers: Broker[] = []
  let verifier: Verifier | undefined
  try {
    const followed = await startBroker(env, config)
    brokers.push(followed)
    const admin = shared === undefined ? followed : await startBroker(env, config)
    if (admin !== followed) brokers.push(admin)
    const where =
      shared === undefined
        ? 'one embedded broker (no PostgreSQL + Redis): its feed'
        : 'killed at one broker, followed at another: PostgreSQL + Redis, then the feed'
    // The dev broker's issuer (its metadata's, e.g. http://localhost:PORT), which the verifier holds its metadata to.
    const { issuer } = (await (await fetch(`${followed.base}/.well-known/oauth-authorization-server`)).json()) as { issuer: string }
    verifier = createVerifier({ issuer, audience: AUDIENCE, credentials: { clientId: RS_ID, clientSecret: secret } })
    await verifier.ready()
    for (let i = 0; i < 3; i++) await accepts(verifier, await mint(followed)) // warm-up

    const from201: number[] = []
    const fromRequest: number[] = []
    for (let i = 0; i < kills; i++) {
      const token = await mint(followed)
      if (!(await accepts(verifier, token))) throw new Error('a fresh token is refused')
      const jti = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti
      const sent = performance.now()
      const kill = await fetch(`${admin.base}/admin/revocations`, { method: 'POST', headers: ADMIN, body: JSON.stringify({ jti, reason: `bench ${i}` }) })
      const acked = performance.now()
      await kill.arrayBuffer()
      if (kill.status !== 201) throw new Error(`kill: ${kill.status}`)
      for (;;) {
        const ok = await accepts(verifier, token)
        const now = performance.now()
        if (!ok) {
          from201.push(now - acked)
          fromRequest.push(now - sent)
          break
        }
        if (now - acked > 5_000) throw new Error('no refusal within 5 s of the kill')
        await turn()
      }
    }
    console.log(`\n@mandate/verifier: a kill to the first refusal by verify() (${kills} kills, ${where})`)
    row('from the kill’s 201', from201)
    row('from the kill’s request', fromRequest)
  } finally {
    await verifier?.close()
    for (const b of brokers) await stopBroker(b)
    await shared?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  }
}
