import { watch, type FSWatcher } from 'node:fs'
import type { AgentPolicy, PolicyStore } from './port.js'
import { createPolicyStore, loadPolicies, type PolicyIssue } from './load.js'

export interface ReloadablePolicyStore extends PolicyStore {
  /** Re-reads the directory; swaps the set in only when every file is good. */
  reload(): Promise<{ ok: true; agents: number } | { ok: false; issues: readonly PolicyIssue[] }>
  close(): void
}

export interface WatchEvents {
  /** After every successful reload, with the whole new set. */
  onLoaded?(agents: number, policies: readonly AgentPolicy[]): void
  onRejected?(issues: readonly PolicyIssue[]): void
}

/**
 * A policy store over `dir` that follows edits: a change triggers a reload
 * after `debounceMs` of quiet; a bad edit is reported and the last good set
 * stays in force. Readers always see one complete set.
 */
export function watchPolicies(
  dir: string,
  initial: PolicyStore,
  events: WatchEvents = {},
  debounceMs = 150,
): ReloadablePolicyStore {
  let current = initial
  let timer: NodeJS.Timeout | undefined
  let running: Promise<unknown> = Promise.resolve()

  const reload: ReloadablePolicyStore['reload'] = async () => {
    const result = await loadPolicies(dir)
    if (!result.ok) {
      events.onRejected?.(result.issues)
      return { ok: false, issues: result.issues }
    }
    current = createPolicyStore(result.policies)
    events.onLoaded?.(current.size, result.policies)
    return { ok: true, agents: current.size }
  }

  let watcher: FSWatcher | undefined
  try {
    watcher = watch(dir, { persistent: false }, () => {
      clearTimeout(timer)
      timer = setTimeout(() => {
        // One reload at a time; loadPolicies reports problems as issues, but never let one escape unhandled.
        running = running.then(reload).catch((err: unknown) => events.onRejected?.([
          { file: dir, line: 0, column: 0, field: '', message: `reload failed: ${(err as Error).message}` },
        ]))
      }, debounceMs)
    })
    watcher.on('error', () => undefined)
  } catch {
    watcher = undefined
  }

  return {
    snapshot: () => current,
    get: (agent) => current.get(agent),
    byWorkload: (issuer, subject) => current.byWorkload(issuer, subject),
    get size() {
      return current.size
    },
    reload,
    close() {
      clearTimeout(timer)
      watcher?.close()
    },
  }
}
