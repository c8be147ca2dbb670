import type { WebSocket } from 'ws'

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

/** What the keep-alive keeps for a socket: when its client last sent anything, and when it was sent `PING` since (0: not). */
export interface KeptAlive {
  socket: Pick<WebSocket, 'send' | 'terminate'>
  lastSeen: number
  pingedAt: number
}

/**
 * tRPC's keep-alive (its client answers `PING` with `PONG`) for many sockets on
 * one timer instead of two per socket: a check every half `pongWaitMs` pings the
 * sockets quiet for `pingMs` and cuts those still quiet `pongWaitMs` after their
 * ping, so either wait can run up to half `pongWaitMs` longer. The timer runs
 * only while sockets are kept.
 */
export class KeepAlive<T extends KeptAlive> {
  private readonly kept = new Set<T>()
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly pingMs: number, private readonly pongWaitMs: number) {}

  add(state: T): void {
    state.lastSeen = Date.now()
    state.pingedAt = 0
    this.kept.add(state)
    this.timer ??= setInterval(() => this.check(), this.pongWaitMs / 2).unref()
  }

  /** The client sent something: it is alive. */
  heard(state: T): void {
    state.lastSeen = Date.now()
    state.pingedAt = 0
  }

  delete(state: T): void {
    this.kept.delete(state)
    if (this.kept.size === 0) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }

  private check(): void {
    const now = Date.now()
    for (const state of this.kept) {
      if (state.pingedAt === 0) {
        if (now - state.lastSeen >= this.pingMs) {
          state.pingedAt = now
          state.socket.send('PING')
        }
      }
      else if (now - state.pingedAt >= this.pongWaitMs) {
        state.socket.terminate()
      }
    }
  }
}
