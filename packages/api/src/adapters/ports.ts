/**
 * Ports for the infrastructure the services need. Each has a Redis adapter (used
 * when REDIS_URL is set, shared by every instance) and an in-process adapter (the
 * embedded default); one contract suite (`contract.test.ts`) runs against both.
 */

/** A read of a guarded entry (see `Cache.read`). */
interface GuardedRead {
  /** The cached value; null on a miss. */
  value: string | null
  /** Names the last invalidation this read saw; pass it to `fill`. */
  version: string
}

export interface Cache {
  get: (key: string) => Promise<string | null>
  /** Stores `value`; with `ttlSeconds` it expires after that many seconds. */
  set: (key: string, value: string, ttlSeconds?: number) => Promise<void>
  /** Deletes plain and guarded entries alike. */
  del: (...keys: string[]) => Promise<void>
  /**
   * Reads a plain value and deletes it in one atomic step (Redis `GETDEL`): of
   * callers racing for one key, on any instance, exactly one gets the value.
   * For single-use tokens (speech tickets).
   */
  take: (key: string) => Promise<string | null>

  /*
   * Guarded entries: read-through copies of a source of truth (Postgres) that can
   * never go back in time. A reader calls `read`; on a miss it reads the source and
   * calls `fill` with the version `read` returned. A writer changes the source, then
   * calls `invalidate`. A fill is refused when an invalidation ran since its read,
   * so a reader that read the source before a write cannot put the old value back.
   * Guarded keys are used only through these three (and `del`), never `get`/`set`.
   */
  read: (key: string) => Promise<GuardedRead>
  /** Stores `value` unless `key` was invalidated (or filled) since the `read` that returned `version`; true when stored. */
  fill: (key: string, value: string, version: string, ttlSeconds: number) => Promise<boolean>
  /** Drops the value and starts a new version; the marker lives `ttlSeconds`, longer than any read-then-fill takes. */
  invalidate: (key: string, ttlSeconds: number) => Promise<void>
}

export type MessageHandler = (message: string) => void
export type Unsubscribe = () => Promise<void>

export interface PubSub {
  publish: (channel: string, message: string) => Promise<void>
  /**
   * Delivers every later message on `channel` to `handler` until the returned
   * function is called. Resolves only once the channel is confirmed subscribed (a
   * message published after that is delivered); when subscribing fails it rejects
   * and leaves nothing behind, so a later call tries again.
   */
  subscribe: (channel: string, handler: MessageHandler) => Promise<Unsubscribe>
  /**
   * Calls `listener` each time the subscriptions are in force again after the
   * connection carrying them dropped: whatever was published meanwhile was lost.
   * Absent where they never drop (in-process). Returns a function that stops it.
   */
  onResubscribed?: (listener: () => void) => () => void
  /**
   * Calls `listener` each time the connection carrying the subscriptions drops
   * (once per drop, however long it takes to come back), and at once (on a later
   * tick) when it is down as the listener is added: from then until
   * `onResubscribed` nothing published reaches this instance. Absent where they
   * never drop (in-process). Returns a function that stops it.
   */
  onDown?: (listener: () => void) => () => void
}

/** Seams both adapters accept, so tests can inject failures and delays. */
export interface AdapterHooks {
  /** Runs before a channel is subscribed (once per channel, not per handler); a rejection fails that subscribe. */
  beforeSubscribe?: (channel: string) => Promise<void>
}

interface WindowHit {
  /** Hits in the current window, this one included. */
  count: number
  /** Milliseconds until the window resets. */
  resetInMs: number
}

interface MeterSettlement {
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
