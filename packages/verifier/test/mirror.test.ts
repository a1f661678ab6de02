/**
 * The in-memory revocation index and the record codec, on users as (issuer,
 * subject): two trusted IdPs may both have an "alice", and killing one never
 * touches the other; a kill recorded before kills named an issuer (`iss:
 * null`) keeps holding that `sub` at every issuer.
 */
import { randomUUID } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import type { AgentId, Jti, Subject } from '../src/claims.js'
import { createRevocationMirror } from '../src/mirror.js'
import type { Revocation, RevocationQuery, RevocationTarget, TokenFacts } from '../src/revocation.js'
import { decodeRevocation, encodeRevocation } from '../src/codec.js'

const T0 = 1_800_000_000
const IDP_A = 'https://idp-a.example'
const IDP_B = 'https://idp-b.example'
const alice = 'alice' as Subject
const agent = 'calendar-bot' as AgentId
const other = 'mail-bot' as AgentId

function kill(target: RevocationTarget, over: Partial<Revocation> = {}): Revocation {
  return { id: randomUUID(), target, reason: 'r', createdBy: 'ops', createdAt: T0, expiresAt: undefined, liftedAt: undefined, liftedBy: undefined, ...over }
}

/** A first-hop request by `requester` for alice at `iss`, her token issued after every kill here. */
const query = (iss: string, requester = agent): RevocationQuery => ({
  agent: requester,
  sub: alice,
  subIssuer: iss,
  actors: [],
  ancestors: [],
  subjectIssuedAt: T0 + 10,
})
/** A token for alice at `iss`, held by `holder`, delegated from `above`, issued before every kill here. */
const token = (iss: string, holder = agent, above: AgentId[] = []): TokenFacts => ({
  jti: randomUUID() as Jti,
  sub: alice,
  subIssuer: iss,
  actors: [holder, ...above],
  chain: above.map(() => randomUUID() as Jti),
  iat: T0 - 10,
})

function mirrorOf(...records: Revocation[]) {
  const m = createRevocationMirror(() => T0 + 20)
  m.replaceAll(records)
  return m
}

describe('revocation mirror: a user is (issuer, sub)', () => {
  it('a user kill at one issuer stops that user and leaves the same name at another issuer alone', () => {
    const m = mirrorOf(kill({ kind: 'sub', sub: alice, iss: IDP_A }))
    expect(m.check(query(IDP_A))).toMatchObject({ state: 'revoked', what: 'subject' })
    expect(m.checkToken(token(IDP_A))).toMatchObject({ state: 'revoked' })
    expect(m.check(query(IDP_B))).toEqual({ state: 'clear' })
    expect(m.checkToken(token(IDP_B))).toEqual({ state: 'clear' })
  })

  it('an agent kill for one user stops the agent for that user at that issuer only', () => {
    const m = mirrorOf(kill({ kind: 'agent_sub', agent, sub: alice, iss: IDP_A }))
    expect(m.check(query(IDP_A))).toMatchObject({ state: 'revoked', what: 'agent' })
    expect(m.check(query(IDP_B))).toEqual({ state: 'clear' })
    expect(m.check(query(IDP_A, other))).toEqual({ state: 'clear' })
    // Up the chain as well: a token alice@A's killed agent delegated is dead, alice@B's is not.
    expect(m.checkToken(token(IDP_A, other, [agent]))).toMatchObject({ state: 'revoked' })
    expect(m.checkToken(token(IDP_B, other, [agent]))).toEqual({ state: 'clear' })
  })

  it('a kill naming no issuer (recorded before kills named one) holds the sub at every issuer', () => {
    const user = mirrorOf(kill({ kind: 'sub', sub: alice, iss: null }))
    const pair = mirrorOf(kill({ kind: 'agent_sub', agent, sub: alice, iss: null }))
    for (const iss of [IDP_A, IDP_B]) {
      expect(user.check(query(iss))).toMatchObject({ state: 'revoked', what: 'subject' })
      expect(user.checkToken(token(iss))).toMatchObject({ state: 'revoked' })
      expect(pair.check(query(iss))).toMatchObject({ state: 'revoked', what: 'agent' })
      expect(pair.checkToken(token(iss, other, [agent]))).toMatchObject({ state: 'revoked' })
    }
    expect(pair.check(query(IDP_A, other))).toEqual({ state: 'clear' })
  })

  it("lifting alice@A's kill leaves alice@B's in force, and each keeps its own pre-kill tokens dead", () => {
    const atA = kill({ kind: 'sub', sub: alice, iss: IDP_A })
    const atB = kill({ kind: 'sub', sub: alice, iss: IDP_B })
    const m = mirrorOf(atA, atB)
    m.apply({ ...atA, liftedAt: T0 + 5, liftedBy: 'ops' })
    expect(m.check(query(IDP_A))).toEqual({ state: 'clear' })
    expect(m.check(query(IDP_B))).toMatchObject({ state: 'revoked' })
    expect(m.checkToken(token(IDP_A))).toMatchObject({ state: 'revoked' })
  })
})

describe("revocation record codec (Redis, feed): the user's issuer", () => {
  it('round-trips a user kill with its issuer, and one naming none', () => {
    for (const target of [
      { kind: 'sub', sub: alice, iss: IDP_A },
      { kind: 'agent_sub', agent, sub: alice, iss: IDP_B },
      { kind: 'sub', sub: alice, iss: null },
      { kind: 'agent_sub', agent, sub: alice, iss: null },
    ] as const) {
      const r = kill(target)
      expect(decodeRevocation(encodeRevocation(r))).toStrictEqual(r)
    }
    expect((JSON.parse(encodeRevocation(kill({ kind: 'agent_sub', agent, sub: alice, iss: IDP_A }))) as { target: unknown }).target).toStrictEqual({
      kind: 'agent_sub',
      agent,
      sub: alice,
      iss: IDP_A,
    })
  })

  it('reads a record written before kills named an issuer as "any issuer", and writes it back unchanged', () => {
    const old = `{"id":"${randomUUID()}","target":{"kind":"sub","sub":"alice"},"reason":"r","createdBy":"ops","createdAt":${T0}}`
    const r = decodeRevocation(old)
    expect(r?.target).toStrictEqual({ kind: 'sub', sub: alice, iss: null })
    expect(encodeRevocation(r!)).toBe(old)
  })

  it('refuses an empty issuer or one holding NUL', () => {
    const r = kill({ kind: 'sub', sub: alice, iss: IDP_A })
    for (const iss of ['', 'https://idp\u0000.example', 7]) {
      expect(decodeRevocation(JSON.stringify({ ...r, target: { ...r.target, iss } }))).toBeUndefined()
    }
  })
})

describe('revocation mirror: an instance kill', () => {
  const podA = 'spiffe://example.org/ns/prod/pod-a'
  const podB = 'spiffe://example.org/ns/prod/pod-b'
  const asCopy = (instance: string | undefined, over: Partial<RevocationQuery> = {}): RevocationQuery => ({ ...query(IDP_A), instance, ...over })
  const tokenOf = (instances: TokenFacts['instances'], holder = agent, above: AgentId[] = []): TokenFacts => ({ ...token(IDP_A, holder, above), instances })

  it('refuses the killed copy and no other copy of the agent, nor the agent without an instance', () => {
    const m = mirrorOf(kill({ kind: 'instance', agent, instance: podA }))
    expect(m.check(asCopy(podA))).toEqual({ state: 'revoked', what: 'agent', detail: `agent ${agent} instance ${podA} killed` })
    expect(m.check(asCopy(podB))).toEqual({ state: 'clear' })
    expect(m.check(asCopy(undefined))).toEqual({ state: 'clear' })
    // Another agent's copy with the same instance name is another copy.
    expect(m.check(asCopy(podA, { agent: other }))).toEqual({ state: 'clear' })
  })

  it('kills every token a hop of which the copy asked for, at any depth; the other copy’s live on', () => {
    const m = mirrorOf(kill({ kind: 'instance', agent, instance: podA }))
    expect(m.checkToken(tokenOf([{ agent, instance: podA }]))).toMatchObject({ state: 'revoked' })
    expect(m.checkToken(tokenOf([{ agent, instance: podA }], other, [agent]))).toMatchObject({ state: 'revoked' })
    expect(m.checkToken(tokenOf([{ agent, instance: podB }]))).toEqual({ state: 'clear' })
    expect(m.checkToken(tokenOf(undefined))).toEqual({ state: 'clear' })
    // A sub-agent building on the copy's token is refused as the subject: the chain holds a killed hop.
    expect(m.check(asCopy(undefined, { agent: other, actors: [agent], actorInstances: [{ agent, instance: podA }] }))).toMatchObject({
      state: 'revoked',
      what: 'subject',
    })
  })

  it('once lifted, lets the copy ask again; its tokens from before the kill stay dead', () => {
    const r = kill({ kind: 'instance', agent, instance: podA })
    const m = mirrorOf(r)
    m.apply({ ...r, liftedAt: T0 + 5, liftedBy: 'ops' })
    expect(m.check(asCopy(podA))).toEqual({ state: 'clear' })
    expect(m.checkToken(tokenOf([{ agent, instance: podA }]))).toMatchObject({ state: 'revoked' })
    expect(m.checkToken({ ...tokenOf([{ agent, instance: podA }]), iat: T0 + 6 })).toEqual({ state: 'clear' })
  })

  it('round-trips through the codec and indexes the same', () => {
    const r = kill({ kind: 'instance', agent, instance: podA })
    const m = mirrorOf(decodeRevocation(encodeRevocation(r))!)
    expect(m.check(asCopy(podA))).toMatchObject({ state: 'revoked', what: 'agent' })
  })
})
