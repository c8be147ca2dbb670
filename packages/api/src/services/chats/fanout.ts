import { z } from 'zod'

import { channels } from '../../adapters/keys.ts'
import { pubsubMessage } from '../../adapters/messages.ts'
import { createNoticeChannel } from '../../adapters/notice-channel.ts'
import type { PubSub } from '../../adapters/ports.ts'
import type { Logger } from '../../logger.ts'
import type { ChatSyncFeedKind } from '@airi/db'
import type { ChatChange, DeletedMessage, MemoryChange, ReplyDelta, ReplyEnd } from './events.ts'

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
 * next event (deliver it) or whether it missed something (read the feed). An edit
 * or deletion is such a feed entry too (`kind`), over the messages it names.
 */
export interface FeedNotice {
  type?: 'feed'
  /** The instance that published it (it has delivered to its own subscribers already). */
  origin: string
  chatId: string
  /** `messages` (default): new messages `fromSeq..toSeq`; `edited` / `deleted`: the messages `messageIds`. */
  kind?: ChatSyncFeedKind
  fromSeq: number
  toSeq: number
  feeds: Array<[userId: string, feedSeq: number]>
  /** The messages (new or edited), when they are small enough to ride along; otherwise each instance reads them once. */
  messages?: SyncedMessage[]
  /** Edited or deleted messages' ids. */
  messageIds?: string[]
  /** Deleted messages (always small enough to ride along). */
  deleted?: DeletedMessage[]
}

/** Text of a reply being made, for every subscription of `users` (not stored). */
export interface ReplyDeltaNotice extends ReplyDelta {
  type: 'reply'
  origin: string
  users: string[]
}

/**
 * A reply ended. For each user, the feed seq of the entry that carries the stored
 * message (0: none), so the end is delivered after it.
 */
export interface ReplyEndNotice extends ReplyEnd {
  type: 'reply.end'
  origin: string
  feeds: Array<[userId: string, feedSeq: number]>
}

/** "Stop reply `replyId`": heard by the instance that makes it. */
export interface ReplyStopNotice {
  type: 'reply.stop'
  origin: string
  chatId: string
  replyId: string
}

/** `userId`'s memories changed: for every subscription of theirs. */
export interface MemoryNotice extends MemoryChange {
  type: 'memory'
  origin: string
  userId: string
}

/** A chat changed for `users` (each gets the same change): for every subscription of theirs. */
export interface ChatNotice extends ChatChange {
  type: 'chat'
  origin: string
  users: string[]
}

export type ChatSyncNotice = FeedNotice | ReplyDeltaNotice | ReplyEndNotice | ReplyStopNotice | MemoryNotice | ChatNotice

const seq = z.number().int().min(1)
const feeds = z.array(z.tuple([z.string().min(1), z.number().int().min(0)]))
const syncedMessage = z.object({
  id: z.string(),
  chatId: z.string(),
  seq,
  senderId: z.string(),
  role: z.string(),
  content: z.string(),
  metadata: z.record(z.string(), z.unknown()).nullable(),
  createdAt: z.coerce.date(),
})
const replyStatus = z.enum(['complete', 'stopped', 'failed'])
const notice = pubsubMessage<ChatSyncNotice>(z.union([
  z.object({
    type: z.literal('feed').optional(),
    origin: z.string().min(1),
    chatId: z.string().min(1),
    kind: z.enum(['messages', 'edited', 'deleted']).optional(),
    fromSeq: seq,
    toSeq: seq,
    feeds: z.array(z.tuple([z.string().min(1), seq])),
    messages: z.array(syncedMessage).optional(),
    messageIds: z.array(z.string()).optional(),
    deleted: z.array(z.object({ id: z.string(), chatId: z.string(), seq })).optional(),
  }).refine(value => value.fromSeq <= value.toSeq, 'fromSeq after toSeq'),
  z.object({
    type: z.literal('reply'),
    origin: z.string().min(1),
    chatId: z.string().min(1),
    replyId: z.string().min(1),
    users: z.array(z.string().min(1)),
    offset: z.number().int().min(0),
    delta: z.string(),
  }),
  z.object({
    type: z.literal('reply.end'),
    origin: z.string().min(1),
    chatId: z.string().min(1),
    replyId: z.string().min(1),
    feeds,
    messageId: z.string().nullable(),
    status: replyStatus,
    error: z.object({ code: z.string(), message: z.string() }).optional(),
  }),
  z.object({
    type: z.literal('reply.stop'),
    origin: z.string().min(1),
    chatId: z.string().min(1),
    replyId: z.string().min(1),
  }),
  z.object({
    type: z.literal('memory'),
    origin: z.string().min(1),
    userId: z.string().min(1),
    characterId: z.string().min(1),
    change: z.enum(['added', 'updated', 'deleted', 'settings']),
    memories: z.array(z.object({
      id: z.string(),
      characterId: z.string(),
      content: z.string(),
      importance: z.number().int(),
      source: z.enum(['auto', 'user']),
      createdAt: z.coerce.date(),
      updatedAt: z.coerce.date(),
      lastUsedAt: z.coerce.date().nullable(),
    })),
    ids: z.array(z.string()),
    messageId: z.string().nullable(),
    enabled: z.boolean().optional(),
  }),
  z.object({
    type: z.literal('chat'),
    origin: z.string().min(1),
    users: z.array(z.string().min(1)),
    change: z.enum(['created', 'updated', 'deleted']),
    chatId: z.string().min(1),
    chat: z.object({
      id: z.string().min(1),
      type: z.enum(['private', 'bot', 'group', 'channel']),
      title: z.string().nullable(),
      creatorId: z.string(),
      lastSeq: z.number().int().min(0),
      createdAt: z.coerce.date(),
      updatedAt: z.coerce.date(),
      members: z.array(z.object({ type: z.enum(['user', 'character']), id: z.string() })),
    }).nullable(),
  }),
]), 'chat sync notice')
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
    logFields: value => (value.type === 'memory' ? { userId: value.userId } : { chatId: value.chatId }),
    retryMs,
  })
}

export type ChatFanout = ReturnType<typeof createChatFanout>
