import { z } from 'zod'

import { channels } from '../../adapters/keys.ts'
import { pubsubMessage } from '../../adapters/messages.ts'
import { createNoticeChannel } from '../../adapters/notice-channel.ts'
import type { PubSub } from '../../adapters/ports.ts'
import type { Logger } from '../../logger.ts'

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

/**
 * Carries chat sync notices between instances over one pub/sub channel, subscribed
 * once per instance however many subscriptions and users it serves. A refused notice
 * is retried, behind earlier ones, so the others hear of sends in order.
 */
export function createChatFanout({ pubsub, logger, retryMs = 1000 }: { pubsub: PubSub, logger: Logger, retryMs?: number }) {
  return createNoticeChannel<ChatSyncNotice>({
    pubsub,
    logger,
    channel: channels.chatSync(),
    message: notice,
    what: 'chat sync notice',
    logFields: value => ({ chatId: value.chatId }),
    retryMs,
  })
}

export type ChatFanout = ReturnType<typeof createChatFanout>
