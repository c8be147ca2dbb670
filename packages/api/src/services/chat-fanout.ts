import { z } from 'zod'

import { channels } from '../adapters/keys.ts'
import { pubsubMessage } from '../adapters/messages.ts'
import type { PubSub, Unsubscribe } from '../adapters/ports.ts'
import type { Logger } from '../logger.ts'

/**
 * "This user's sync feed now reaches `head`": a doorbell, never the messages
 * themselves. Each user has a feed of their own, so the ring says nothing about
 * which chat moved; the subscriber reads its feed after its own position.
 */
export interface ChatDoorbell {
  head: number
}

const doorbell = pubsubMessage<ChatDoorbell>(z.object({ head: z.number().int().min(1) }), 'chat doorbell')
export const createChatDoorbellMessage = doorbell.create
/** The doorbell in a pub/sub message, or undefined (logged) when malformed. */
export const parseChatDoorbellMessage = doorbell.parse

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
    /** Rings each user's connections on every instance with that user's new feed head. */
    async ring(heads: Iterable<readonly [userId: string, head: number]>): Promise<void> {
      await Promise.all([...new Map(heads)].map(([userId, head]) => pubsub.publish(channels.chatBroadcast(userId), createChatDoorbellMessage({ head })).catch((error: unknown) => {
        // Pub/sub is only a doorbell: the messages are committed, and subscribers catch up.
        logger.warn({ err: error, userId }, 'could not ring a chat doorbell')
      })))
    },

    /** Rings only this instance's listeners of `userId` (a re-check found their feed moved). */
    ringHere(userId: string, bell: ChatDoorbell): void {
      for (const notify of local.get(userId)?.listeners ?? [])
        notify(bell)
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

    /** How many users have at least one listening connection on this instance. */
    listeningUsers(): number {
      return local.size
    },

    /** The users with at least one listening connection on this instance. */
    listeningUserIds(): string[] {
      return [...local.keys()]
    },
  }
}

export type ChatFanout = ReturnType<typeof createChatFanout>
