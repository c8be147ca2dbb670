import { randomUUID } from 'node:crypto'

import type { LRUCache } from 'lru-cache'

import { createLru } from '../lru.ts'
import { systemClock, type Clock } from '../clock.ts'
import { createChannelJoins, deliver } from './channels.ts'
import type { AdapterHooks, Adapters, AtomicCounters, Cache, PubSub } from './ports.ts'

export interface MemoryAdaptersOptions extends AdapterHooks {
  /**
   * Most entries the cache, and separately the rate-limit windows, hold; the least
   * recently used go first. Meter debts are not capped (dropping one would drop
   * billable units); they leave when their TTL runs out.
   */
  maxEntries?: number
  /** What every TTL is measured against; tests pass a manual clock and advance it. */
  clock?: Clock
}

const DEFAULT_MAX_ENTRIES = 50_000

type CacheEntry =
  | { kind: 'plain', value: string }
  | { kind: 'guarded', value: string | null, version: string }

/** Redis refuses a command on a key of another type; so do we, so both adapters fail alike. */
function wrongType(key: string): Error {
  return new Error(`WRONGTYPE ${key} holds a value of another kind`)
}

// Bounded, with a TTL per entry: an expired entry reads as missing, and once the
// bound is reached the least recently used entry makes room, so keys nobody reads
// again (a rate-limit window of a one-off IP) cannot pile up.
// `ttlResolution: 0` reads the clock on every check, so an advanced clock is seen at once.
function bounded<V extends NonNullable<unknown>>(maxEntries: number, clock: Clock): LRUCache<string, V> {
  return createLru<string, V>(maxEntries, { perf: clock, ttlResolution: 0 })
}

const ttlMs = (seconds: number | undefined): number => (seconds === undefined ? 0 : Math.max(1, Math.round(seconds * 1000)))

/**
 * Meter debts: never evicted for room (that would drop billable units), only at
 * their TTL. Expired entries are swept whenever the map has doubled since the
 * last sweep, so the cost stays constant per write.
 */
class ExpiringCounts {
  private readonly entries = new Map<string, { value: number, expiresAt: number }>()
  private sweepAt = 1024
  private readonly clock: Clock

  constructor(clock: Clock) {
    this.clock = clock
  }

  get(key: string): number | undefined {
    const entry = this.entries.get(key)
    if (entry && entry.expiresAt <= this.clock.now()) {
      this.entries.delete(key)
      return undefined
    }
    return entry?.value
  }

  set(key: string, value: number, ttlMs: number): void {
    this.entries.set(key, { value, expiresAt: this.clock.now() + ttlMs })
    if (this.entries.size >= this.sweepAt) {
      const now = this.clock.now()
      for (const [k, entry] of this.entries) {
        if (entry.expiresAt <= now)
          this.entries.delete(k)
      }
      this.sweepAt = Math.max(1024, this.entries.size * 2)
    }
  }
}

function createMemoryCache({ maxEntries = DEFAULT_MAX_ENTRIES, clock = systemClock }: MemoryAdaptersOptions = {}): Cache {
  const entries = bounded<CacheEntry>(maxEntries, clock)
  return {
    async get(key) {
      const entry = entries.get(key)
      if (entry?.kind === 'guarded')
        throw wrongType(key)
      return entry?.value ?? null
    },
    async set(key, value, ttlSeconds) {
      entries.set(key, { kind: 'plain', value }, { ttl: ttlMs(ttlSeconds) })
    },
    async del(...keys) {
      for (const key of keys)
        entries.delete(key)
    },
    async take(key) {
      const entry = entries.get(key)
      if (entry?.kind === 'guarded')
        throw wrongType(key)
      entries.delete(key)
      return entry?.value ?? null
    },
    async read(key) {
      const entry = entries.get(key)
      if (entry?.kind === 'plain')
        throw wrongType(key)
      return { value: entry?.value ?? null, version: entry?.version ?? '' }
    },
    async fill(key, value, version, ttlSeconds) {
      const entry = entries.get(key)
      if (entry?.kind === 'plain')
        throw wrongType(key)
      if ((entry?.value ?? null) !== null || (entry?.version ?? '') !== version)
        return false
      entries.set(key, { kind: 'guarded', value, version }, { ttl: ttlMs(ttlSeconds) })
      return true
    },
    async invalidate(key, ttlSeconds) {
      entries.set(key, { kind: 'guarded', value: null, version: randomUUID() }, { ttl: ttlMs(ttlSeconds) })
    },
  }
}

export function createMemoryPubSub({ beforeSubscribe }: AdapterHooks = {}): PubSub {
  const joins = createChannelJoins({ open: async channel => beforeSubscribe?.(channel) })
  return {
    async publish(channel, message) {
      // Only to subscriptions in force, on a later tick, as a broker would: a
      // publisher never runs its own handlers re-entrantly.
      for (const handler of joins.handlers(channel, true))
        setImmediate(() => deliver(handler, message))
    },
    subscribe: joins.join,
  }
}

/** JavaScript runs one of these at a time, so each is atomic within the process. */
function createMemoryCounters({ maxEntries = DEFAULT_MAX_ENTRIES, clock = systemClock }: MemoryAdaptersOptions = {}): AtomicCounters {
  const windows = bounded<number>(maxEntries, clock)
  const debts = new ExpiringCounts(clock)
  return {
    async hitWindow(key, windowSeconds) {
      const count = (windows.get(key) ?? 0) + 1
      // The first hit of a window sets its expiry; later hits keep it.
      windows.set(key, count, count === 1 ? { ttl: ttlMs(windowSeconds) } : { noUpdateTTL: true })
      return { count, resetInMs: Math.max(0, Math.ceil(windows.getRemainingTTL(key))) }
    },
    async settleDebt(key, units, unitsPerFlux, ttlSeconds) {
      const total = (debts.get(key) ?? 0) + units
      const settledFlux = Math.floor(total / unitsPerFlux)
      const debt = total - settledFlux * unitsPerFlux
      debts.set(key, debt, ttlMs(ttlSeconds))
      return { settledFlux, debt }
    },
    async addDebt(key, units, ttlSeconds) {
      const debt = (debts.get(key) ?? 0) + units
      debts.set(key, debt, ttlMs(ttlSeconds))
      return debt
    },
    async peekDebt(key) {
      return debts.get(key) ?? 0
    },
  }
}

export function createMemoryAdapters(options: MemoryAdaptersOptions = {}): Adapters {
  return {
    kind: 'memory',
    cache: createMemoryCache(options),
    pubsub: createMemoryPubSub(options),
    counters: createMemoryCounters(options),
    ping: async () => {},
    close: async () => {},
  }
}
