/**
 * Ports for the infrastructure the services need. Each has a Redis adapter (used
 * when REDIS_URL is set, shared by every instance) and an in-process adapter (the
 * embedded default); one contract suite (`contract.test.ts`) runs against both.
 */

export interface Cache {
  get: (key: string) => Promise<string | null>
  /** Stores `value`; with `ttlSeconds` it expires after that many seconds. */
  set: (key: string, value: string, ttlSeconds?: number) => Promise<void>
  del: (...keys: string[]) => Promise<void>
}

export type MessageHandler = (message: string) => void
export type Unsubscribe = () => Promise<void>

export interface PubSub {
  publish: (channel: string, message: string) => Promise<void>
  /** Delivers every later message on `channel` to `handler` until the returned function is called. */
  subscribe: (channel: string, handler: MessageHandler) => Promise<Unsubscribe>
}

export interface WindowHit {
  /** Hits in the current window, this one included. */
  count: number
  /** Milliseconds until the window resets. */
  resetInMs: number
}

export interface MeterSettlement {
  /** Whole Flux taken out of the debt by this call (to be debited by the caller). */
  settledFlux: number
  /** Units left in the debt after settling; always below `unitsPerFlux`. */
  debt: number
}

/** Operations that must be atomic across every instance (Lua scripts on Redis). */
export interface AtomicCounters {
  /** Fixed-window counter: counts a hit in the window that `key` names. */
  hitWindow: (key: string, windowSeconds: number) => Promise<WindowHit>
  /**
   * Flux-meter settle: adds `units` to the debt, refreshes its TTL, takes every whole
   * Flux (`unitsPerFlux` units each) out of it and reports how many were taken.
   */
  settleDebt: (key: string, units: number, unitsPerFlux: number, ttlSeconds: number) => Promise<MeterSettlement>
  /** Adds `units` to the debt without settling (puts units back after a failed debit). */
  addDebt: (key: string, units: number, ttlSeconds: number) => Promise<number>
  /** Current debt in units (0 when none). */
  peekDebt: (key: string) => Promise<number>
}

export interface Adapters {
  kind: 'redis' | 'memory'
  cache: Cache
  pubsub: PubSub
  counters: AtomicCounters
  /** Readiness check; rejects when the backing store cannot be reached. */
  ping: () => Promise<void>
  close: () => Promise<void>
}
