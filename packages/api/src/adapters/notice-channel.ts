import { randomUUID } from 'node:crypto'

import type { Logger } from '../logger.ts'
import type { PubSub, Unsubscribe } from './ports.ts'

/** Notices kept for another try while pub/sub refuses them; beyond that the oldest goes (logged). */
const UNSENT_LIMIT = 1000

/** A notice as its publisher gives it (the channel adds `origin`); distributes over a union of notices. */
export type Unsent<T> = T extends unknown ? Omit<T, 'origin'> : never

export interface NoticeChannelOptions<T extends { origin: string }> {
  pubsub: PubSub
  logger: Logger
  channel: string
  /** The payload's codec (`pubsubMessage`): `parse` drops and logs malformed ones. */
  message: { create: (value: T) => string, parse: (raw: string, logger: Logger) => T | undefined }
  /** What a notice is, for the logs ("chat sync notice"). */
  what: string
  /** Fields that name a notice in the logs. */
  logFields: (value: Unsent<T>) => Record<string, unknown>
  /**
   * Unsent notices with the same key replace each other (only the newest matters, e.g.
   * a user's balance); without it every unsent notice is kept and sent in order.
   */
  keyOf?: (value: Unsent<T>) => string
  retryMs?: number
}

/**
 * Notices between instances over one pub/sub channel. An instance subscribes once,
 * while anyone listens, and hears only the others' notices (`origin`). A notice
 * pub/sub refuses is tried again every `retryMs` until it goes through, since the
 * others have no other way to hear of it; nothing runs while every publish succeeds.
 */
export function createNoticeChannel<T extends { origin: string }>({ pubsub, logger, channel, message, what, logFields, keyOf, retryMs = 1000 }: NoticeChannelOptions<T>) {
  const origin = randomUUID()
  const listeners = new Set<(notice: T) => void>()
  let subscription: Promise<Unsubscribe> | undefined

  // Insertion order is sending order; without `keyOf` every notice gets a key of its own.
  const unsent = new Map<string, string>()
  let sequence = 0
  let retry: NodeJS.Timeout | undefined
  function retryLater(): void {
    retry = setTimeout(() => void flush(), retryMs)
    retry.unref()
  }
  async function flush(): Promise<void> {
    retry = undefined
    for (const [key, raw] of unsent) {
      try {
        await pubsub.publish(channel, raw)
        // A newer notice under the same key queued meanwhile stays for the next round.
        if (unsent.get(key) === raw)
          unsent.delete(key)
      }
      catch {
        retryLater()
        return
      }
    }
  }

  return {
    /** This instance's name in the notices it publishes. */
    origin,

    /** Publishes a notice (from this instance); a refused one is retried until it goes through. */
    async publish(value: Unsent<T>): Promise<void> {
      const raw = message.create({ ...value, origin } as unknown as T)
      if (unsent.size === 0) {
        try {
          await pubsub.publish(channel, raw)
          return
        }
        catch (error) {
          logger.warn({ err: error, ...logFields(value) }, `could not publish a ${what}; will retry`)
        }
      }
      // Behind earlier unsent ones, so the others hear of them in order.
      const key = keyOf?.(value) ?? String(sequence++)
      unsent.delete(key)
      unsent.set(key, raw)
      if (unsent.size > UNSENT_LIMIT) {
        unsent.delete(unsent.keys().next().value!)
        logger.warn({ limit: UNSENT_LIMIT }, `dropped an unsent ${what}`)
      }
      if (!retry)
        retryLater()
    },

    /**
     * Calls `listener` with every notice another instance publishes, until the
     * returned function is called. Resolves once the channel is subscribed.
     */
    async listen(listener: (notice: T) => void): Promise<() => Promise<void>> {
      // Wrapped, so one function listening twice is two listeners.
      const entry = (value: T) => listener(value)
      listeners.add(entry)
      subscription ??= pubsub.subscribe(channel, (raw) => {
        const parsed = message.parse(raw, logger)
        if (parsed && parsed.origin !== origin) {
          for (const notify of listeners)
            notify(parsed)
        }
      })
      const current = subscription
      try {
        await current
      }
      catch (error) {
        // Let the next listener subscribe afresh.
        listeners.delete(entry)
        if (subscription === current)
          subscription = undefined
        throw error
      }
      let active = true
      return async () => {
        if (!active)
          return
        active = false
        listeners.delete(entry)
        if (listeners.size === 0 && subscription === current) {
          subscription = undefined
          await (await current)()
        }
      }
    },

    /** Calls `listener` whenever notices may have been lost (the pub/sub connection came back). */
    onResubscribed(listener: () => void): () => void {
      return pubsub.onResubscribed?.(listener) ?? (() => {})
    },

    /** Calls `listener` whenever notices stop arriving (the pub/sub connection dropped; also at once if it is down). */
    onDown(listener: () => void): () => void {
      return pubsub.onDown?.(listener) ?? (() => {})
    },
  }
}

