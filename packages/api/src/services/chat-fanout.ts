import { z } from 'zod'

import { channels } from '../adapters/keys.ts'
import type { PubSub, Unsubscribe } from '../adapters/ports.ts'
import type { Logger } from '../logger.ts'

/** "Chat {chatId} has messages up to {toSeq}": a doorbell, never the messages themselves. */
export interface ChatDoorbell {
  chatId: string
  fromSeq: number
  toSeq: number
}

const doorbellSchema = z.object({
  chatId: z.string().min(1),
  fromSeq: z.number().int().min(1),
  toSeq: z.number().int().min(1),
}).refine(bell => bell.toSeq >= bell.fromSeq, 'toSeq must not be below fromSeq')

export function createChatDoorbellMessage(bell: ChatDoorbell): string {
  return JSON.stringify(doorbellSchema.parse(bell))
}

/** The doorbell in a pub/sub message, or undefined (logged) when malformed. */
export function parseChatDoorbellMessage(raw: string, logger: Logger): ChatDoorbell | undefined {
  try {
    return doorbellSchema.parse(JSON.parse(raw))
  }
  catch (error) {
    logger.warn({ err: error, raw }, 'dropping malformed chat doorbell')
    return undefined
  }
}

type Listener = (bell: ChatDoorbell) => void

/**
 * Rings every connection of a user, on every instance. Each instance keeps one
 * pub/sub subscription per user with local listeners (the in-process registry),
 * however many connections that user has here; the pub/sub port carries the ring
 * across instances (and back to this one).
 */
export function createChatFanout({ pubsub, logger }: { pubsub: PubSub, logger: Logger }) {
  const local = new Map<string, { listeners: Set<Listener>, subscription: Promise<Unsubscribe> }>()

  return {
    async ring(userIds: Iterable<string>, bell: ChatDoorbell): Promise<void> {
      const message = createChatDoorbellMessage(bell)
      await Promise.all([...new Set(userIds)].map(userId => pubsub.publish(channels.chatBroadcast(userId), message).catch((error: unknown) => {
        // Pub/sub is only a doorbell: the messages are committed, and subscribers catch up.
        logger.warn({ err: error, userId, chatId: bell.chatId }, 'could not ring a chat doorbell')
      })))
    },

    /** Calls `listener` for every doorbell of `userId` until the returned function is called. */
    async listen(userId: string, listener: Listener): Promise<() => Promise<void>> {
      let entry = local.get(userId)
      if (!entry) {
        const listeners = new Set<Listener>()
        const subscription = pubsub.subscribe(channels.chatBroadcast(userId), (raw) => {
          const bell = parseChatDoorbellMessage(raw, logger)
          if (bell) {
            for (const notify of listeners)
              notify(bell)
          }
        })
        entry = { listeners, subscription }
        local.set(userId, entry)
      }
      const current = entry
      current.listeners.add(listener)
      try {
        await current.subscription
      }
      catch (error) {
        // Let the next listener try to subscribe afresh.
        current.listeners.delete(listener)
        if (local.get(userId) === current)
          local.delete(userId)
        throw error
      }
      return async () => {
        current.listeners.delete(listener)
        if (current.listeners.size === 0 && local.get(userId) === current) {
          local.delete(userId)
          await (await current.subscription)()
        }
      }
    },

    /** Users with at least one listening connection on this instance. */
    listeningUsers(): number {
      return local.size
    },
  }
}

export type ChatFanout = ReturnType<typeof createChatFanout>
