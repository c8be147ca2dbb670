import type { Message } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { MemoryItem } from '../memory/index.ts'
import type { SyncedMessage } from './fanout.ts'
import type { ChatView } from './reads.ts'

/** A run of consecutive messages of one chat (what `sendMessages` returns). */
export interface ChatMessagesEvent {
  chatId: string
  messages: SyncedMessage[]
  fromSeq: number
  toSeq: number
}

/**
 * What `chats.onMessages` pushes. The first event of every subscription is `ready`:
 * it carries no messages, only its id (the position the subscription starts from),
 * so a client holds a position to resume from before anything else arrives.
 */
export type ChatSyncEvent =
  | { type: 'ready', messages: [] }
  | ({ type: 'messages' } & ChatMessagesEvent)
  /** Stored messages whose content changed (`chats.editMessage`); a feed entry, replayed on resume. */
  | { type: 'edited', chatId: string, messages: SyncedMessage[] }
  /** Messages soft-deleted (`chats.deleteMessages`): only their ids and seqs; a feed entry, replayed on resume. */
  | { type: 'deleted', chatId: string, messages: DeletedMessage[] }
  /** The user's balance after a top-up, refund or grant; not in the feed, so its id is the position it arrived at. */
  | { type: 'balance', balance: number, messages: [] }
  /** Text of a reply being made (`offset`: characters before `delta`); not stored, not replayed. */
  | ({ type: 'reply', messages: [] } & ReplyDelta)
  /** A reply ended: stored as `messageId` (complete, stopped) or not at all (failed). Comes after the stored message. */
  | ({ type: 'reply.end', messages: [] } & ReplyEnd)
  /** The user's memories of a character changed (on any device, or by extraction); not stored, not replayed. */
  | ({ type: 'memory', messages: [] } & MemoryChange)
  /** A chat of the user was created, changed (renamed, members) or deleted, or they joined or left it; not stored, not replayed. */
  | ({ type: 'chat', messages: [] } & ChatChange)

export interface DeletedMessage {
  id: string
  chatId: string
  seq: number
}

export type ReplyStatus = 'streaming' | 'complete' | 'stopped' | 'failed'

export interface ReplyDelta {
  chatId: string
  replyId: string
  offset: number
  delta: string
}

export interface ReplyEnd {
  chatId: string
  replyId: string
  messageId: string | null
  status: Exclude<ReplyStatus, 'streaming'>
  error?: { code: string, message: string }
}

/**
 * Memories of one character changed. A memory screen applies it as it comes and
 * re-reads its list after a reconnect (nothing of it is replayed).
 */
export interface MemoryChange {
  characterId: string
  /** `settings`: memory was turned on or off for the character (`enabled`); no memory changed. */
  change: 'added' | 'updated' | 'deleted' | 'settings'
  /** The memories as they are now (`added`, `updated`); empty for `deleted` and `settings`. */
  memories: MemoryItem[]
  /** Every memory the change touched. */
  ids: string[]
  /** For memories extraction made: the assistant message whose turn they came from (a "remembered" note goes under it). */
  messageId: string | null
  /** With `settings`: whether memory is now on for the character. */
  enabled?: boolean
}

/**
 * A chat as one user's chat list sees it: `created` (new, or they were added),
 * `updated` (renamed, members changed) or `deleted` (deleted, or they left or were
 * removed). A chat list applies it as it comes and re-reads `chats.list` after a
 * reconnect (nothing of it is replayed).
 */
export interface ChatChange {
  change: 'created' | 'updated' | 'deleted'
  chatId: string
  /** The chat as it is now; null for `deleted`. */
  chat: ChatView | null
}

export type MessagesEvent = Extract<ChatSyncEvent, { type: 'messages' }>
/** What a feed entry delivers. */
export type FeedEvent = Extract<ChatSyncEvent, { type: 'messages' | 'edited' | 'deleted' }>

export function toMessage(row: Message): SyncedMessage {
  return {
    id: row.id,
    chatId: row.chat_id,
    seq: row.seq,
    senderId: row.sender_id,
    role: row.role,
    content: row.content,
    metadata: (row.metadata as Record<string, unknown> | null) ?? null,
    createdAt: row.created_at,
  }
}

export const invalidCursor = () => new ApiError(400, 'INVALID_CURSOR', 'lastEventId is not a cursor this server issued', { field: 'lastEventId' })

/**
 * An event id: the user's feed seq in decimal. It stays a few bytes however many
 * chats the user has, and a client that reconnects with it as `lastEventId`
 * resumes exactly after that event.
 */
export function encodeChatCursor(feedSeq: number): string {
  return String(feedSeq)
}

export function decodeChatCursor(cursor: string): number {
  if (!/^(?:0|[1-9]\d{0,15})$/.test(cursor) || !Number.isSafeInteger(Number(cursor)))
    throw invalidCursor()
  return Number(cursor)
}

export function eventOf(messages: SyncedMessage[]): MessagesEvent | null {
  return messages.length === 0 ? null : { type: 'messages', chatId: messages[0]!.chatId, messages, fromSeq: messages[0]!.seq, toSeq: messages.at(-1)!.seq }
}
