/**
 * The kill switch's part of step 5 (docs/ARCHITECTURE.md "The kill switch"): the question the
 * exchange and the flows beside it ask the revocation list, and the refusal its answer calls for.
 */
import { instancesOf, type Subject } from './claims.js'
import { OAuthError, SUBJECT_TOKEN_UNACCEPTABLE } from './errors.js'
import type { Grant } from './policy-eval.js'
import type { LifecycleStanding } from './lifecycle.js'
import type { AgentPolicy } from '../policy/port.js'
import type { RevocationQuery, RevocationStore, RevocationVerdict } from '../revocation/port.js'
import type { AuthenticatedClient } from '../tokens/port.js'

/**
 * Step 5 for the flows beside the exchange (CIBA, ID-JAG): the kill switch (the agent and its instance, the user, every
 * ancestor) and the agent's standing, from memory; the refusal, or undefined. The exchange makes the same
 * two checks inline, each in its own telemetry step.
 */
export function standingRefusal(
  deps: { readonly revocations: RevocationStore; readonly lifecycle?: LifecycleStanding | undefined },
  policy: AgentPolicy,
  grant: Pick<Grant, 'userIssuer' | 'actors' | 'ancestors' | 'parentAct'>,
  sub: Subject,
  subjectIssuedAt: number,
  now: number,
  instance?: string,
): OAuthError | undefined {
  const verdict = deps.revocations.check(revocationQuery({ agent: policy.agent, instance }, sub, grant, subjectIssuedAt))
  return revocationRefusal(verdict) ?? deps.lifecycle?.refusal(policy, now)
}

/** Step 5's question: the requester and its instance, the user, and every older hop (with the instance it named) and ancestor. */
export function revocationQuery(
  client: Pick<AuthenticatedClient, 'agent' | 'instance'>,
  sub: Subject,
  grant: Pick<Grant, 'userIssuer' | 'actors' | 'ancestors' | 'parentAct'>,
  subjectIssuedAt: number,
): RevocationQuery {
  return {
    agent: client.agent,
    instance: client.instance,
    sub,
    subIssuer: grant.userIssuer,
    actors: grant.actors.slice(1),
    actorInstances: grant.parentAct === undefined ? [] : instancesOf(grant.parentAct),
    ancestors: grant.ancestors,
    subjectIssuedAt,
  }
}

/** The refusal a revocation verdict calls for: an unknown state fails closed (503), a killed agent is `unauthorized_client`. */
export function revocationRefusal(verdict: RevocationVerdict): OAuthError | undefined {
  switch (verdict.state) {
    case 'clear':
      return undefined
    case 'unknown':
      return new OAuthError('temporarily_unavailable', 'revocation state is unknown; try again', {
        detail: verdict.detail,
        retryAfter: 1,
      })
    case 'revoked':
      return verdict.what === 'agent'
        ? new OAuthError('unauthorized_client', 'agent is suspended', { detail: verdict.detail })
        : new OAuthError('invalid_request', SUBJECT_TOKEN_UNACCEPTABLE, { detail: verdict.detail })
  }
}
