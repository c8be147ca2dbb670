import { randomUUID } from 'node:crypto'

import { z } from 'zod'

import { channels } from '../adapters/keys.ts'
import { pubsubMessage } from '../adapters/messages.ts'
import type { PubSub, Unsubscribe } from '../adapters/ports.ts'
import type { Logger } from '../logger.ts'

/** A message as live sync hands it out (the same shape `chats.*` returns). */
export interface SyncedMessage {
  id: string
  chatId: string
  seq: number
  senderId: string
  role: string
  content: string
  metadata: Record<string, unknown> | null
  createdAt: Date
}

/**
 * "Chat `chatId` got `fromSeq`..`toSeq`": one per send, not one per member. It
 * names each user member with the seq the send gave that user's feed, so an
 * instance can tell, for every subscription it holds, whether this is exactly the
 * next event (deliver it) or whether it missed something (read the feed).
 */
export interface ChatSyncNotice {
  /** The instance that published it (it has delivered to its own subscribers already). */
  origin: string
  chatId: string
  fromSeq: number
  toSeq: number
  feeds: Array<[userId: string, feedSeq: number]>
  /** The messages, when they are small enough to ride along; otherwise each instance reads them once. */
  messages?: SyncedMessage[]
}

const seq = z.number().int().min(1)
const notice = pubsubMessage<ChatSyncNotice>(z.object({
  origin: z.string().min(1),
  chatId: z.string().min(1),
  fromSeq: seq,
  toSeq: seq,
  feeds: z.array(z.tuple([z.string().min(1), seq])),
  messages: z.array(z.object({
    id: z.string(),
    chatId: z.string(),
    seq,
    senderId: z.string(),
    role: z.string(),
    content: z.string(),
    metadata: z.record(z.string(), z.unknown()).nullable(),
    createdAt: z.coerce.date(),
  })).optional(),
}).refine(value => value.fromSeq <= value.toSeq, 'fromSeq after toSeq'), 'chat sync notice')
export const createChatSyncNoticeMessage = notice.create
/** The notice in a pub/sub message, or undefined (logged) when malformed. */
export const parseChatSyncNoticeMessage = notice.parse

/** Messages ride along in a notice up to this many characters of JSON; larger sends are read once per instance. */
export const INLINE_MESSAGES_CHARS = 32 * 1024
/** Notices kept for another try while pub/sub refuses them; older ones are dropped (logged). */
const UNSENT_LIMIT = 1000

type Listener = (notice: ChatSyncNotice) => void

/**
 * Carries chat sync notices between instances over one pub/sub channel. An
 * instance subscribes once, while anyone listens on it, however many
 * subscriptions and users it serves.
 */
export function createChatFanout({ pubsub, logger, retryMs = 1000 }: { pubsub: PubSub, logger: Logger, retryMs?: number }) {
  const origin = randomUUID()
  const listeners = new Set<Listener>()
  let subscription: Promise<Unsubscribe> | undefined

  // A notice pub/sub refused is tried again until it goes through: the others have
  // no other way to hear of that send. Nothing runs while every publish succeeds.
  const unsent: string[] = []
  let retry: NodeJS.Timeout | undefined
  async function flush(): Promise<void> {
    retry = undefined
    while (unsent.length > 0) {
      try {
        await pubsub.publish(channels.chatSync(), unsent[0]!)
        unsent.shift()
      }
      catch {
        retry = setTimeout(() => void flush(), retryMs)
        retry.unref()
        return
      }
    }
  }

  return {
    /** This instance's name in the notices it publishes. */
    origin,

    /** Publishes a notice (from this instance); a refused one is retried until it goes through. */
    async publish(value: Omit<ChatSyncNotice, 'origin'>): Promise<void> {
      const raw = createChatSyncNoticeMessage({ ...value, origin })
      if (unsent.length === 0) {
        try {
          await pubsub.publish(channels.chatSync(), raw)
          return
        }
        catch (error) {
          logger.warn({ err: error, chatId: value.chatId }, 'could not publish a chat sync notice; will retry')
        }
      }
      // Behind earlier unsent ones, so the others hear of sends in order.
      unsent.push(raw)
      if (unsent.length > UNSENT_LIMIT) {
        unsent.shift()
        logger.warn({ limit: UNSENT_LIMIT }, 'dropped an unsent chat sync notice')
      }
      if (!retry) {
        retry = setTimeout(() => void flush(), retryMs)
        retry.unref()
      }
    },

    /**
     * Calls `listener` with every notice another instance publishes, until the
     * returned function is called. Resolves once the channel is subscribed.
     */
    async listen(listener: Listener): Promise<() => Promise<void>> {
      // Wrapped, so one function listening twice is two listeners.
      const entry: Listener = value => listener(value)
      listeners.add(entry)
      subscription ??= pubsub.subscribe(channels.chatSync(), (raw) => {
        const parsed = parseChatSyncNoticeMessage(raw, logger)
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

export type ChatFanout = ReturnType<typeof createChatFanout>
