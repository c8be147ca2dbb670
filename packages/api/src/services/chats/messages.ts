import type { Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { AnalyticsService } from '../analytics.ts'
import type { RateLimits } from '../rate-limits.ts'
import { toMessage, type ChatMessagesEvent } from './events.ts'
import type { SyncedMessage } from './fanout.ts'
import type { createLiveSync } from './live-sync.ts'
import { appendMessages, asStored, lockChat } from './store.ts'
import { chatNotFound, type ChatReads } from './reads.ts'

export type MessageView = SyncedMessage

export interface NewMessageInput {
  id: string
  role: string
  content: string
  metadata?: Record<string, unknown>
}

export interface ChatMessageDeps {
  db: Db
  reads: Pick<ChatReads, 'requireMembership'>
  /** Announces each send to the user members' live subscriptions. */
  live: Pick<ReturnType<typeof createLiveSync>, 'announce'>
  /** Told after a send stored new messages (`first_message_sent`); it never fails the send. */
  analytics?: Pick<AnalyticsService, 'messageSent'>
  /** Counts `sendMessages` calls per user (CHAT_RATE_LIMIT_PER_MINUTE); without it sends are not limited. */
  rateLimits?: Pick<RateLimits, 'hit'>
}

/** Messages: sending them (with their live-sync feed rows) and pulling them. */
export function createChatMessages({ db, reads: { requireMembership }, live, analytics, rateLimits }: ChatMessageDeps) {
  return {
    /**
     * Appends messages with the next seqs, under a lock on the chat row. A message
     * whose id is already in this chat is returned as stored (a resend); an id used
     * in another chat is a conflict. Every call counts against the sender's rate
     * limit, a resend too: it still takes the chat's row lock.
     */
    async sendMessages(userId: string, input: { chatId: string, messages: NewMessageInput[] }): Promise<ChatMessagesEvent> {
      await rateLimits?.hit('chat-messages', userId)
      const unique = input.messages.map(message => ({ ...message, id: asStored(message.id) }))
        .filter((message, index, all) => all.findIndex(other => other.id === message.id) === index)
      const { rows, heads, created } = await db.transaction().execute(async (trx) => {
        const chat = await lockChat(trx, input.chatId)
        const member = chat && await trx.selectFrom('chat_members').select('id')
          .where('chat_id', '=', chat.id).where('member_type', '=', 'user').where('member_id', '=', userId).where('deleted_at', 'is', null)
          .executeTakeFirst()
        if (!chat || !member)
          throw chatNotFound()

        const existing = await trx.selectFrom('messages').selectAll().where('id', 'in', unique.map(message => message.id)).execute()
        const elsewhere = existing.filter(row => row.chat_id !== chat.id)
        if (elsewhere.length > 0) {
          // Only ids of the caller's own messages are named, so a 409 never reveals what others wrote elsewhere.
          throw new ApiError(409, 'MESSAGE_ID_CONFLICT', 'Message ids must be unique; some are already used in another chat', {
            ids: elsewhere.filter(row => row.sender_id === userId).map(row => row.id),
          })
        }
        const known = new Set(existing.map(row => row.id))
        const fresh = unique.filter(message => !known.has(message.id))
        if (fresh.length === 0)
          return { rows: existing, heads: undefined, created: [] }

        const appended = await appendMessages(trx, chat.id, fresh.map(message => ({ ...message, senderId: userId })))
        if (!appended)
          throw chatNotFound()
        return { rows: [...existing, ...appended.rows], heads: appended.heads, created: appended.rows }
      })

      if (heads)
        await live.announce(input.chatId, created.map(toMessage), heads)
      if (created.length > 0)
        await analytics?.messageSent(userId)
      const byId = new Map(rows.map(row => [row.id, toMessage(row)]))
      const messages = unique.map(message => byId.get(message.id)!).sort((a, b) => a.seq - b.seq)
      return { chatId: input.chatId, messages, fromSeq: messages[0]!.seq, toSeq: messages.at(-1)!.seq }
    },

    /** Messages after `afterSeq`, oldest first. */
    async pullMessages(userId: string, input: { chatId: string, afterSeq: number, limit: number }): Promise<{ chatId: string, messages: MessageView[], lastSeq: number }> {
      const chat = await requireMembership(userId, input.chatId)
      const rows = await db.selectFrom('messages').selectAll()
        .where('chat_id', '=', chat.id).where('seq', '>', input.afterSeq).where('deleted_at', 'is', null)
        .orderBy('seq').limit(input.limit).execute()
      return { chatId: chat.id, messages: rows.map(toMessage), lastSeq: chat.last_seq }
    },
  }
}
