/**
 * Runs one port's suite on each of its adapters: the adapter's backing store
 * is opened once for its `describe` block and removed after it.
 */
import { afterAll, beforeAll } from 'vitest'
import type { AdapterCase } from './adapters.js'

type StoreOf<Case> = Case extends AdapterCase<infer Store> ? Store : never

export function describeEachAdapter<Case extends AdapterCase<{ close(): Promise<void> }>>(
  port: string,
  adapters: readonly Case[],
  suite: (adapter: Case, store: () => StoreOf<Case>) => void,
): void {
  for (const adapter of adapters) {
    adapter.describe(`${port} contract: ${adapter.name}`, () => {
      let store: StoreOf<Case> | undefined
      beforeAll(async () => {
        store = (await adapter.open()) as StoreOf<Case>
      })
      afterAll(async () => {
        await store?.close()
      })
      suite(adapter, () => {
        if (store === undefined) throw new Error(`${adapter.name}: the backing store did not open`)
        return store
      })
    })
  }
}

/** The rejection of `promise`; fails when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected a rejection')
}
