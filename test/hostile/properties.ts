/**
 * The suite's properties: one per class of hostile input, so that a class
 * the broker mishandles does not hide the others (a property stops at its
 * first counterexample). `runs` are the cases of a normal `npm test`;
 * `npm run fuzz` scales them up.
 */
import fc from 'fast-check'
import {
  clientFaults,
  clientJwtFaults,
  formBodyFaults,
  formByteFaults,
  one,
  several,
  subjectFaults,
  tokenCase,
  tokenParamFaults,
  tokenParamFaultsOf,
  tokenRouteCase,
  bearerFaults,
  adminRevokeCase,
  adminListCase,
  adminLiftCase,
  adminAuditCase,
  adminAgentsCase,
  adminAgentCase,
  adminExplainCase,
  adminAttestCase,
  routeCase,
  forwardAuthCase,
  ssfPollCase,
  TOKEN_JUNK_ANSWERS,
  TOKEN_ROUTE_JUNK_ANSWERS,
  type HostileContext,
} from './arbitraries.js'
import type { HostileCase } from './harness.js'
import { dpopHeaderCase, idJagCase, identityOf, subjectProofCase, svidCase } from './identity.js'

/**
 * Test files of the suite; `admin` runs on a broker whose revocations and
 * audit queries are on PostgreSQL, `edge` (forward auth, Shared Signals poll)
 * on one that also has a poll receiver (`HOSTILE_SSF`: SETs need the database).
 */
export type HostileGroup = 'token-requests' | 'token-jwts' | 'oauth' | 'admin' | 'edge' | 'identity'

/** The `ssf` config of the `edge` group's broker: rs/api polls (RFC 8936). */
export const HOSTILE_SSF = {
  receivers: [{ name: 'rs-api', audience: 'https://rs.test/events', delivery: { method: 'poll', resource_server: 'rs/api' } }],
}

/**
 * What broker a group runs against; `identity`: one that also trusts a SPIFFE
 * trust domain and an ID-JAG issuer and wants DPoP nonces (test/hostile/identity.ts).
 */
export function brokerFor(group: HostileGroup): { readonly postgres: boolean; readonly ssf?: Record<string, unknown>; readonly identity?: boolean } {
  return group === 'edge' ? { postgres: true, ssf: HOSTILE_SSF } : group === 'identity' ? { postgres: false, identity: true } : { postgres: group === 'admin' }
}

export interface HostileProperty {
  readonly name: string
  readonly group: HostileGroup
  readonly runs: number
  cases(ctx: HostileContext): fc.Arbitrary<HostileCase>
}

const none = fc.constant([] as const)

export const PROPERTIES: readonly HostileProperty[] = [
  {
    name: 'token: valid requests with junk headers and variations that change nothing',
    group: 'token-requests',
    runs: 800,
    cases: (ctx) => tokenCase(ctx, () => none),
  },
  {
    name: 'token: faulty parameters',
    group: 'token-requests',
    runs: 1500,
    cases: (ctx) => tokenCase(ctx, (agent) => one(tokenParamFaults(agent))),
  },
  {
    name: 'token: NUL, lone surrogates, invalid UTF-8 and bad percent-encoding in the form',
    group: 'token-requests',
    runs: 1200,
    cases: (ctx) => tokenCase(ctx, () => one(formByteFaults())),
  },
  {
    name: 'token: wrong content types, empty, junk and oversize bodies',
    group: 'token-requests',
    runs: 1000,
    cases: (ctx) => tokenCase(ctx, () => one(formBodyFaults(ctx, TOKEN_JUNK_ANSWERS))),
  },
  {
    name: 'token: client authentication faults',
    group: 'token-requests',
    runs: 1500,
    cases: (ctx) => tokenCase(ctx, () => one(clientFaults(ctx, 'token'))),
  },
  {
    name: 'token: several faults at once',
    group: 'token-requests',
    runs: 1500,
    cases: (ctx) =>
      tokenCase(ctx, (agent) =>
        several(
          tokenParamFaults(agent),
          formByteFaults(),
          formBodyFaults(ctx, TOKEN_JUNK_ANSWERS),
          clientFaults(ctx, 'token'),
          subjectFaults(ctx, agent, 'form'),
          subjectFaults(ctx, agent, 'claims'),
          clientJwtFaults(ctx, 'assertion', 'claims'),
          clientJwtFaults(ctx, 'workload', 'form'),
        ),
      ),
  },
  {
    name: 'token: subject_token encoding, header, key and signature faults',
    group: 'token-jwts',
    runs: 1200,
    cases: (ctx) => tokenCase(ctx, (agent) => one(subjectFaults(ctx, agent, 'form'))),
  },
  {
    name: 'token: subject_token claim faults',
    group: 'token-jwts',
    runs: 1500,
    cases: (ctx) => tokenCase(ctx, (agent) => one(subjectFaults(ctx, agent, 'claims'))),
  },
  {
    name: 'token: client_assertion encoding, header, key and signature faults',
    group: 'token-jwts',
    runs: 1000,
    cases: (ctx) => tokenCase(ctx, () => one(clientJwtFaults(ctx, 'assertion', 'form'))),
  },
  {
    name: 'token: client_assertion claim faults',
    group: 'token-jwts',
    runs: 1000,
    cases: (ctx) => tokenCase(ctx, () => one(clientJwtFaults(ctx, 'assertion', 'claims'))),
  },
  {
    name: 'token: workload actor_token encoding, header, key and signature faults',
    group: 'token-jwts',
    runs: 700,
    cases: (ctx) => tokenCase(ctx, () => one(clientJwtFaults(ctx, 'workload', 'form'))),
  },
  {
    name: 'token: workload actor_token claim faults',
    group: 'token-jwts',
    runs: 700,
    cases: (ctx) => tokenCase(ctx, () => one(clientJwtFaults(ctx, 'workload', 'claims'))),
  },
  {
    name: 'introspect: live, foreign and dead tokens, with junk around them',
    group: 'oauth',
    runs: 800,
    cases: (ctx) => tokenRouteCase(ctx, 'introspect', none),
  },
  {
    name: 'introspect: faults in client authentication, the token parameter and the form',
    group: 'oauth',
    runs: 1500,
    cases: (ctx) => {
      const families = [
        clientFaults(ctx, 'introspect'),
        clientJwtFaults(ctx, 'assertion', 'form'),
        clientJwtFaults(ctx, 'workload', 'claims'),
        bearerFaults('introspect'),
        tokenParamFaultsOf(),
        formByteFaults(),
        formBodyFaults(ctx, TOKEN_ROUTE_JUNK_ANSWERS),
      ]
      return tokenRouteCase(ctx, 'introspect', fc.oneof({ weight: 3, arbitrary: one(fc.oneof(...families)) }, { weight: 1, arbitrary: several(...families) }))
    },
  },
  {
    name: 'revoke: dead and foreign tokens, and faults in client authentication, the token parameter and the form',
    group: 'oauth',
    runs: 1200,
    cases: (ctx) => {
      const families = [
        clientFaults(ctx, 'revoke'),
        clientJwtFaults(ctx, 'assertion', 'claims'),
        clientJwtFaults(ctx, 'workload', 'form'),
        bearerFaults('revoke'),
        tokenParamFaultsOf(),
        formByteFaults(),
        formBodyFaults(ctx, TOKEN_ROUTE_JUNK_ANSWERS),
      ]
      return tokenRouteCase(
        ctx,
        'revoke',
        fc.oneof({ weight: 1, arbitrary: none }, { weight: 3, arbitrary: one(fc.oneof(...families)) }, { weight: 1, arbitrary: several(...families) }),
      )
    },
  },
  { name: 'admin: POST /admin/revocations with bodies it must refuse', group: 'admin', runs: 1000, cases: (ctx) => adminRevokeCase(ctx) },
  { name: 'admin: GET /admin/revocations with query junk', group: 'admin', runs: 600, cases: () => adminListCase() },
  { name: 'admin: DELETE /admin/revocations/:id with ids that name nothing', group: 'admin', runs: 500, cases: () => adminLiftCase() },
  { name: 'admin: GET /admin/audit with query junk', group: 'admin', runs: 1000, cases: () => adminAuditCase() },
  { name: 'admin: GET /admin/agents with query junk', group: 'admin', runs: 600, cases: () => adminAgentsCase() },
  { name: 'admin: GET /admin/agents/:id with ids good, unknown and hostile', group: 'admin', runs: 300, cases: () => adminAgentCase() },
  { name: 'admin: POST /admin/policy/explain with bodies good and bad', group: 'admin', runs: 600, cases: (ctx) => adminExplainCase(ctx) },
  { name: 'admin: POST /admin/agents/:id/attest with ids and bodies good and bad', group: 'admin', runs: 400, cases: (ctx) => adminAttestCase(ctx) },
  { name: 'routes: wrong methods, unknown paths, junk queries on public routes', group: 'admin', runs: 1200, cases: () => routeCase() },
  {
    name: 'forward-auth: live tokens with junk around them, every method at ext-authz',
    group: 'edge',
    runs: 500,
    cases: (ctx) => forwardAuthCase(ctx, { query: false, bearer: false, target: false }),
  },
  {
    name: 'forward-auth: hostile query strings (missing, repeated, huge audience; bad scope syntax; bad percent-encoding)',
    group: 'edge',
    runs: 700,
    cases: (ctx) => forwardAuthCase(ctx, { query: true, bearer: false, target: true }),
  },
  {
    name: 'forward-auth: hostile Authorization (other schemes, repeated, huge, bad b64token, dead tokens, Mandate JWTs from parts)',
    group: 'edge',
    runs: 1500,
    cases: (ctx) => forwardAuthCase(ctx, { query: false, bearer: true, target: true }),
  },
  {
    name: 'forward-auth: faults in the query and the Authorization header at once',
    group: 'edge',
    runs: 500,
    cases: (ctx) => forwardAuthCase(ctx, { query: true, bearer: true, target: true }),
  },
  { name: 'ssf poll: valid polls with junk around them', group: 'edge', runs: 300, cases: (ctx) => ssfPollCase(ctx, { auth: false, body: false }) },
  {
    name: 'ssf poll: hostile JSON bodies (wrong types, unknown members, deep, huge, ack and setErrs junk, maxEvents out of range)',
    group: 'edge',
    runs: 800,
    cases: (ctx) => ssfPollCase(ctx, { auth: false, body: true }),
  },
  {
    name: 'ssf poll: bad client credentials, with bodies good and bad',
    group: 'edge',
    runs: 500,
    cases: (ctx) => ssfPollCase(ctx, { auth: true, body: true }),
  },
  {
    name: 'dpop: hostile proofs in the DPoP header (typ, alg, jwk, claims, htu, iat, size, junk, several, UTF-8, depth, replay, nonce)',
    group: 'identity',
    runs: 600,
    cases: (ctx) => dpopHeaderCase(identityOf(ctx)),
  },
  {
    name: 'dpop: hostile subject_token_dpop for a DPoP-bound subject token (the proof faults, ath, another key)',
    group: 'identity',
    runs: 400,
    cases: (ctx) => subjectProofCase(identityOf(ctx)),
  },
  {
    name: 'spiffe: JWT-SVID client assertions with encoding, header, key and signature faults',
    group: 'identity',
    runs: 400,
    cases: (ctx) => svidCase(identityOf(ctx), 'form'),
  },
  {
    name: 'spiffe: JWT-SVID client assertions with claim faults (sub, aud, exp, jti, trust domain)',
    group: 'identity',
    runs: 400,
    cases: (ctx) => svidCase(identityOf(ctx), 'claims'),
  },
  {
    name: 'id-jag: JWT bearer assertions with encoding, header, key and signature faults',
    group: 'identity',
    runs: 400,
    cases: (ctx) => idJagCase(identityOf(ctx), 'form'),
  },
  {
    name: 'id-jag: JWT bearer assertions with claim faults (iss, aud, client_id, lifetime, jti, scope, resource) and requests beyond them',
    group: 'identity',
    runs: 500,
    cases: (ctx) => idJagCase(identityOf(ctx), 'claims'),
  },
]

/** Cases a normal run generates. */
export const TOTAL_RUNS = PROPERTIES.reduce((n, p) => n + p.runs, 0)
