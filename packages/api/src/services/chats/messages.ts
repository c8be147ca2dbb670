import type { Transaction } from 'kysely'

import type { Database, Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { AnalyticsService } from '../analytics.ts'
import type { RateLimits } from '../rate-limits.ts'
import { toMessage, type ChatMessagesEvent } from './events.ts'
import type { SyncedMessage } from './fanout.ts'
import { chunks, type createLiveSync } from './live-sync.ts'
import { chatNotFound, type ChatReads } from './reads.ts'

export type MessageView = SyncedMessage

export interface NewMessageInput {
  id: string
  role: string
  content: string
  metadata?: Record<string, unknown>
}

/**
 * The id as Postgres keeps it: text travels as UTF-8, where an unpaired surrogate
 * becomes U+FFFD. Looking ids up in this form keeps a resend matching its stored row.
 * (Routers refuse such ids; this keeps the service right for any other caller.)
 */
function asStored(id: string): string {
  return id.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
}

/** Users per query of the feed head upsert in a send. */
const USERS_PER_QUERY = 1000

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
  /**
   * Appends "`chatId` got `fromSeq`..`toSeq`" to the feed of every user member.
   * Each head row stays locked until the send commits, so feed seqs commit in
   * order; rows are locked in user id order, so two sends never deadlock.
   */
  async function appendToFeeds(trx: Transaction<Database>, chatId: string, fromSeq: number, toSeq: number): Promise<Map<string, number>> {
    const members = await trx.selectFrom('chat_members').select('member_id')
      .where('chat_id', '=', chatId).where('member_type', '=', 'user').where('deleted_at', 'is', null)
      .orderBy('member_id').execute()
    const heads = new Map<string, number>()
    for (const batch of chunks(members.map(row => row.member_id), USERS_PER_QUERY)) {
      const rows = await trx.insertInto('chat_sync_heads').values(batch.map(userId => ({ user_id: userId, last_seq: 1 })))
        .onConflict(oc => oc.column('user_id').doUpdateSet({ last_seq: eb => eb('chat_sync_heads.last_seq', '+', 1) }))
        .returning(['user_id', 'last_seq']).execute()
      await trx.insertInto('chat_sync_feed')
        .values(rows.map(row => ({ user_id: row.user_id, seq: row.last_seq, chat_id: chatId, from_seq: fromSeq, to_seq: toSeq })))
        .execute()
      for (const row of rows)
        heads.set(row.user_id, row.last_seq)
    }
    return heads
  }

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
        const chat = await trx.selectFrom('chats').selectAll().where('id', '=', input.chatId).where('deleted_at', 'is', null).forUpdate().executeTakeFirst()
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

        const created = await trx.insertInto('messages').values(fresh.map((message, index) => ({
          id: message.id,
          chat_id: chat.id,
          seq: chat.last_seq + index + 1,
          sender_id: userId,
          role: message.role,
          content: message.content,
          metadata: message.metadata ? JSON.stringify(message.metadata) : null,
        }))).returningAll().execute()
        await trx.updateTable('chats').set({ last_seq: chat.last_seq + fresh.length, updated_at: new Date() }).where('id', '=', chat.id).execute()
        const heads = await appendToFeeds(trx, chat.id, chat.last_seq + 1, chat.last_seq + fresh.length)
        return { rows: [...existing, ...created], heads, created }
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
