/** `defaults` with every limit `overrides` sets; an unset one (undefined) keeps its default. */
export function withDefaults<T extends object>(defaults: T, overrides: Partial<T> | undefined): T {
  return { ...defaults, ...Object.fromEntries(Object.entries(overrides ?? {}).filter(([, value]) => value !== undefined)) }
}

/**
 * Open sockets by a key (user id, address), each key capped at `max`, on this
 * instance. Entries go when they reach 0, so the map holds only who is connected.
 */
export class SocketCounts {
  private readonly counts = new Map<string, number>()

  constructor(readonly max: number) {}

  /** Whether `key` already holds its `max` sockets. */
  full(key: string): boolean {
    return (this.counts.get(key) ?? 0) >= this.max
  }

  /** Counts one more socket for `key`; the returned release is safe to call more than once. */
  add(key: string): () => void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
    let released = false
    return () => {
      if (released)
        return
      released = true
      const left = (this.counts.get(key) ?? 1) - 1
      if (left > 0)
        this.counts.set(key, left)
      else
        this.counts.delete(key)
    }
  }
}
