import { randomUUID } from 'node:crypto'

import { z } from 'zod'

import { channels } from '../../adapters/keys.ts'
import { pubsubMessage } from '../../adapters/messages.ts'
import type { PubSub, Unsubscribe } from '../../adapters/ports.ts'
import type { Logger } from '../../logger.ts'

/** "`userId`'s balance is now `balance`": one per announced write, for every instance. */
export interface BalanceNotice {
  /** The instance that published it (it has told its own subscribers already). */
  origin: string
  userId: string
  balance: number
}

const notice = pubsubMessage<BalanceNotice>(z.object({
  origin: z.string().min(1),
  userId: z.string().min(1),
  balance: z.number().int().min(0),
}), 'balance notice')
export const createBalanceNoticeMessage = notice.create
/** The notice in a pub/sub message, or undefined (logged) when malformed. */
export const parseBalanceNoticeMessage = notice.parse

/** Users whose unsent notice is kept for another try while pub/sub refuses it; beyond that the oldest goes (logged). */
const UNSENT_LIMIT = 1000

/**
 * Carries balance notices between instances over one pub/sub channel, subscribed
 * once per instance while anyone listens. A notice pub/sub refuses is kept (only
 * the newest per user matters) and tried again every `retryMs` until it goes
 * through; nothing runs while every publish succeeds.
 */
export function createBalanceFanout({ pubsub, logger, retryMs = 1000 }: { pubsub: PubSub, logger: Logger, retryMs?: number }) {
  const origin = randomUUID()
  const listeners = new Set<(notice: BalanceNotice) => void>()
  let subscription: Promise<Unsubscribe> | undefined
  const unsent = new Map<string, string>()
  let retry: NodeJS.Timeout | undefined

  async function flush(): Promise<void> {
    retry = undefined
    for (const [userId, raw] of unsent) {
      try {
        await pubsub.publish(channels.balance(), raw)
        // A newer notice queued meanwhile stays for the next round.
        if (unsent.get(userId) === raw)
          unsent.delete(userId)
      }
      catch {
        retry = setTimeout(() => void flush(), retryMs)
        retry.unref()
        return
      }
    }
  }

  return {
    /** Publishes `userId`'s new balance (from this instance); a refused one is retried until it goes through. */
    async publish(userId: string, balance: number): Promise<void> {
      const raw = createBalanceNoticeMessage({ origin, userId, balance })
      if (unsent.size === 0) {
        try {
          await pubsub.publish(channels.balance(), raw)
          return
        }
        catch (error) {
          logger.warn({ err: error, userId }, 'could not publish a balance notice; will retry')
        }
      }
      unsent.delete(userId)
      unsent.set(userId, raw)
      if (unsent.size > UNSENT_LIMIT) {
        unsent.delete(unsent.keys().next().value!)
        logger.warn({ limit: UNSENT_LIMIT }, 'dropped an unsent balance notice')
      }
      if (!retry) {
        retry = setTimeout(() => void flush(), retryMs)
        retry.unref()
      }
    },

    /** Calls `listener` with every notice another instance publishes, until the returned function is called. */
    async listen(listener: (notice: BalanceNotice) => void): Promise<() => Promise<void>> {
      const entry = (value: BalanceNotice) => listener(value)
      listeners.add(entry)
      subscription ??= pubsub.subscribe(channels.balance(), (raw) => {
        const parsed = parseBalanceNoticeMessage(raw, logger)
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
  }
}

export type BalanceFanout = ReturnType<typeof createBalanceFanout>
