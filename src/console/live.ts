/**
 * What the console shows as it happens: kills and lifts (every instance's,
 * as this instance's revocation mirror applies them), quarantines (kills
 * the anomaly rules made), bursts of refused token requests and new
 * approval requests (those this instance recorded: the delegation log's
 * commits are seen by the process that wrote them). One subscription each,
 * shared by every open page.
 */
import { ANOMALY_ACTOR } from '../core/anomaly.js'
import type { AuditEvent, AuditEventType } from '../audit/port.js'
import type { Revocation, RevocationTarget } from '../revocation/port.js'
import type { RevocationListener, SubscribeOptions } from '../revocation/service.js'

export type LiveKind = 'kill' | 'lift' | 'quarantine' | 'denials' | 'approval'

export interface LiveEvent {
  readonly kind: LiveKind
  /** One line, in words. */
  readonly text: string
  /** The console page about it. */
  readonly href: string
}

export interface ConsoleLive {
  /** Returns the unsubscribe. */
  subscribe(listener: (event: LiveEvent) => void): () => void
  /** Open subscriptions (for the per-process bound on open event streams). */
  size(): number
  close(): void
}

export interface ConsoleLiveOptions {
  readonly revocations: { subscribe(listener: RevocationListener, options?: SubscribeOptions): () => void }
  /** The SQL delegation log's commits of these types; absent (no database): no denial bursts nor approvals. */
  readonly onDurable?: ((types: readonly AuditEventType[], listener: (event: AuditEvent) => void) => () => void) | undefined
  /** Epoch seconds. */
  readonly now: () => number
  /** Refusals of one agent within `burstWindow` seconds that make a burst worth showing. */
  readonly burstThreshold?: number
  readonly burstWindow?: number
}

/** How a kill's target reads. */
export function describeTarget(t: RevocationTarget): string {
  switch (t.kind) {
    case 'jti':
      return `token ${t.jti}`
    case 'chain':
      return `chain ${t.jti}`
    case 'agent':
      return `agent ${t.agent}`
    case 'sub':
      return `user ${t.sub}`
    case 'agent_sub':
      return `agent ${t.agent} for user ${t.sub}`
    case 'instance':
      return `instance ${t.instance} of agent ${t.agent}`
  }
}

/** A revocation record the mirror applied, as the event it is; a record applied again (the stream's echo of a local one) says nothing new. */
function revocationEvent(r: Revocation): LiveEvent {
  const href = `/console/kills/${r.id}`
  const target = describeTarget(r.target)
  if (r.liftedAt !== undefined) return { kind: 'lift', text: `Lifted: ${target} (by ${r.liftedBy ?? 'someone'})`, href }
  if (r.createdBy === ANOMALY_ACTOR) return { kind: 'quarantine', text: `Quarantined: ${target}: ${r.reason}`, href }
  return { kind: 'kill', text: `Killed: ${target}: ${r.reason} (by ${r.createdBy})`, href }
}

export function createConsoleLive(options: ConsoleLiveOptions): ConsoleLive {
  const listeners = new Set<(event: LiveEvent) => void>()
  const emit = (event: LiveEvent) => {
    for (const l of [...listeners]) l(event)
  }
  // Ids (and whether lifted) already told: a record reaches the mirror twice when made here (applied, then echoed by the stream).
  const told = new Set<string>()
  const stopRevocations = options.revocations.subscribe((r) => {
    const key = `${r.id}:${r.liftedAt === undefined ? 'made' : 'lifted'}`
    if (told.has(key)) return
    if (told.size > 10_000) told.clear()
    told.add(key)
    emit(revocationEvent(r))
  })

  const threshold = options.burstThreshold ?? 5
  const window = options.burstWindow ?? 10
  // Per agent: the window's start, its refusals so far, whether this window was told already.
  const bursts = new Map<string, { start: number; count: number; told: boolean; errors: Set<string> }>()
  const stopAudit = options.onDurable?.(['token.denied', 'approval.requested'], (e) => {
    if (e.type === 'approval.requested') {
      emit({ kind: 'approval', text: `Approval asked: ${e.agent} for ${e.sub}`, href: '/console/approvals' })
      return
    }
    if (e.type !== 'token.denied') return
    const now = options.now()
    let b = bursts.get(e.agent)
    if (b === undefined || now - b.start >= window) bursts.set(e.agent, (b = { start: now, count: 0, told: false, errors: new Set() }))
    b.count++
    b.errors.add(e.error)
    if (b.count >= threshold && !b.told) {
      b.told = true
      emit({
        kind: 'denials',
        text: `${e.agent}: ${b.count} token requests refused within ${window} s (${[...b.errors].join(', ')})`,
        href: `/console/agents/${encodeURIComponent(e.agent)}`,
      })
    }
    if (bursts.size > 10_000) bursts.clear()
  })

  return {
    subscribe(listener) {
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
    size: () => listeners.size,
    close() {
      stopRevocations()
      stopAudit?.()
      listeners.clear()
    },
  }
}
