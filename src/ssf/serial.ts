/**
 * Runs `work` once at a time; a trigger while it runs asks for one more run
 * after it. The returned promise settles after a run that began at or after
 * the call. `work` must not reject.
 */
export function serial(work: () => Promise<void>): () => Promise<void> {
  let current: Promise<void> | undefined
  let next: Promise<void> | undefined
  const trigger = (): Promise<void> => {
    if (current === undefined) {
      current = work().finally(() => {
        current = undefined
      })
      return current
    }
    next ??= current.then(() => {
      next = undefined
      return trigger()
    })
    return next
  }
  return trigger
}
