import type { Adapters, AtomicCounters, Cache, MessageHandler, PubSub } from './ports.ts'

interface Entry { value: string, expiresAt: number | undefined }

/** A string store with per-key expiry, checked lazily on read. */
class ExpiringStore {
  private readonly entries = new Map<string, Entry>()

  get(key: string): Entry | undefined {
    const entry = this.entries.get(key)
    if (entry?.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.entries.delete(key)
      return undefined
    }
    return entry
  }

  set(key: string, value: string, ttlMs?: number): void {
    this.entries.set(key, { value, expiresAt: ttlMs === undefined ? undefined : Date.now() + ttlMs })
  }

  delete(key: string): void {
    this.entries.delete(key)
  }

  /** Adds `by` to the integer at `key` (0 when missing), keeping its expiry. */
  increment(key: string, by: number): { value: number, entry: Entry } {
    const entry = this.get(key) ?? { value: '0', expiresAt: undefined }
    const value = Number(entry.value) + by
    entry.value = String(value)
    this.entries.set(key, entry)
    return { value, entry }
  }

  clear(): void {
    this.entries.clear()
  }
}

export function createMemoryCache(store = new ExpiringStore()): Cache {
  return {
    async get(key) {
      return store.get(key)?.value ?? null
    },
    async set(key, value, ttlSeconds) {
      store.set(key, value, ttlSeconds === undefined ? undefined : ttlSeconds * 1000)
    },
    async del(...keys) {
      for (const key of keys)
        store.delete(key)
    },
  }
}

export function createMemoryPubSub(): PubSub {
  const handlers = new Map<string, Set<MessageHandler>>()
  return {
    async publish(channel, message) {
      // Deliver on a later tick, as a broker would, so a publisher never runs its own
      // handlers re-entrantly.
      for (const handler of [...(handlers.get(channel) ?? [])]) {
        setImmediate(() => {
          try {
            handler(message)
          }
          catch {
            // A handler's failure must not stop delivery to the others.
          }
        })
      }
    },
    async subscribe(channel, handler) {
      // Wrap so the same function subscribed twice is two subscriptions.
      const subscription: MessageHandler = message => handler(message)
      const set = handlers.get(channel) ?? new Set()
      set.add(subscription)
      handlers.set(channel, set)
      return async () => {
        set.delete(subscription)
        if (set.size === 0)
          handlers.delete(channel)
      }
    },
  }
}

/** JavaScript runs one of these at a time, so each is atomic within the process. */
export function createMemoryCounters(store = new ExpiringStore()): AtomicCounters {
  return {
    async hitWindow(key, windowSeconds) {
      const { value, entry } = store.increment(key, 1)
      entry.expiresAt ??= Date.now() + windowSeconds * 1000
      return { count: value, resetInMs: Math.max(0, entry.expiresAt - Date.now()) }
    },
    async settleDebt(key, units, unitsPerFlux, ttlSeconds) {
      const { value, entry } = store.increment(key, units)
      entry.expiresAt = Date.now() + ttlSeconds * 1000
      const settledFlux = Math.floor(value / unitsPerFlux)
      const debt = value - settledFlux * unitsPerFlux
      entry.value = String(debt)
      return { settledFlux, debt }
    },
    async addDebt(key, units, ttlSeconds) {
      const { value, entry } = store.increment(key, units)
      entry.expiresAt = Date.now() + ttlSeconds * 1000
      return value
    },
    async peekDebt(key) {
      return Number(store.get(key)?.value ?? 0)
    },
  }
}

export function createMemoryAdapters(): Adapters {
  return {
    kind: 'memory',
    cache: createMemoryCache(),
    pubsub: createMemoryPubSub(),
    counters: createMemoryCounters(),
    ping: async () => {},
    close: async () => {},
  }
}
