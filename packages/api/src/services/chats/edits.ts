import type { Transaction } from 'kysely'

import type { Database, Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { RateLimits } from '../rate-limits.ts'
import { toMessage, type DeletedMessage } from './events.ts'
import type { SyncedMessage } from './fanout.ts'
import type { createLiveSync } from './live-sync.ts'
import { chatNotFound } from './reads.ts'
import { appendToFeeds, asStored, lockChat } from './store.ts'

export interface ChatEditDeps {
  db: Db
  live: Pick<ReturnType<typeof createLiveSync>, 'announceChange'>
  /** Edits and deletions count against the sender's chat limit (CHAT_RATE_LIMIT_PER_MINUTE). */
  rateLimits?: Pick<RateLimits, 'hit'>
}

const notInChat = (ids: string[]) => new ApiError(404, 'MESSAGE_NOT_FOUND', 'Some messages are not in this chat', { field: 'messageIds', ids })

/**
 * Edits and deletions of stored messages. Each is a feed entry of every user
 * member, like a send: devices hear of it live, and a device that resumes from an
 * older position receives it then.
 */
export function createChatEdits({ db, live, rateLimits }: ChatEditDeps) {
  /** The chat locked for a write by `userId`, a live member of it (404 otherwise). */
  async function lockAsMember(trx: Transaction<Database>, userId: string, chatId: string) {
    const chat = await lockChat(trx, chatId)
    const member = chat && await trx.selectFrom('chat_members').select('id')
      .where('chat_id', '=', chat.id).where('member_type', '=', 'user').where('member_id', '=', userId).where('deleted_at', 'is', null)
      .executeTakeFirst()
    if (!chat || !member)
      throw chatNotFound()
    return chat
  }

  return {
    /** Changes the content of one of the caller's own user messages. */
    async editMessage(userId: string, input: { chatId: string, messageId: string, content: string }): Promise<{ message: SyncedMessage }> {
      await rateLimits?.hit('chat-messages', userId)
      const id = asStored(input.messageId)
      const { row, heads } = await db.transaction().execute(async (trx) => {
        const chat = await lockAsMember(trx, userId, input.chatId)
        const message = await trx.selectFrom('messages').selectAll().where('id', '=', id).where('chat_id', '=', chat.id)
          .where('deleted_at', 'is', null).executeTakeFirst()
        if (!message)
          throw new ApiError(404, 'MESSAGE_NOT_FOUND', 'No such message in this chat', { field: 'messageId' })
        if (message.sender_id !== userId || message.role !== 'user')
          throw new ApiError(403, 'FORBIDDEN', 'Only your own messages can be edited', { field: 'messageId' })
        const metadata = { ...(message.metadata as Record<string, unknown> | null), edited: true }
        const row = await trx.updateTable('messages').set({ content: input.content, metadata: JSON.stringify(metadata), updated_at: new Date() })
          .where('id', '=', message.id).returningAll().executeTakeFirstOrThrow()
        const heads = await appendToFeeds(trx, chat.id, row.seq, row.seq, { kind: 'edited', messageIds: [row.id] })
        return { row, heads }
      })
      const message = toMessage(row)
      await live.announceChange(input.chatId, { kind: 'edited', messages: [message] }, heads)
      return { message }
    },

    /**
     * Soft-deletes messages of one chat: the caller's own, or any of a bot chat
     * the caller created. All or nothing: an id that is not a message of the
     * chat, or one the caller may not delete, changes nothing. Ids deleted before
     * are left out of `deleted` (a repeated call deletes nothing more).
     */
    async deleteMessages(userId: string, input: { chatId: string, messageIds: string[] }): Promise<{ deleted: string[] }> {
      await rateLimits?.hit('chat-messages', userId)
      const ids = [...new Set(input.messageIds.map(asStored))]
      const result = await db.transaction().execute(async (trx) => {
        const chat = await lockAsMember(trx, userId, input.chatId)
        const found = await trx.selectFrom('messages').select(['id', 'seq', 'sender_id', 'deleted_at']).where('id', 'in', ids).where('chat_id', '=', chat.id).execute()
        const missing = ids.filter(id => !found.some(row => row.id === id))
        if (missing.length > 0)
          throw notInChat(missing)
        // Deleted already (a repeated call): nothing to do for those.
        const rows = found.filter(row => row.deleted_at === null)
        if (rows.length === 0)
          return { deleted: [], heads: undefined }
        const ownsChat = chat.type === 'bot' && chat.creator_id === userId
        const forbidden = rows.filter(row => row.sender_id !== userId && !ownsChat)
        if (forbidden.length > 0)
          throw new ApiError(403, 'FORBIDDEN', 'Only your own messages, or any message of your own bot chat, can be deleted', { field: 'messageIds', ids: forbidden.map(row => row.id) })
        const now = new Date()
        const live = rows.map(row => row.id)
        await trx.updateTable('messages').set({ deleted_at: now, updated_at: now }).where('id', 'in', live).execute()
        const seqs = rows.map(row => row.seq)
        const heads = await appendToFeeds(trx, chat.id, Math.min(...seqs), Math.max(...seqs), { kind: 'deleted', messageIds: live })
        return { deleted: rows.sort((a, b) => a.seq - b.seq).map((row): DeletedMessage => ({ id: row.id, chatId: chat.id, seq: row.seq })), heads }
      })
      if (result.heads)
        await live.announceChange(input.chatId, { kind: 'deleted', messages: result.deleted }, result.heads)
      return { deleted: result.deleted.map(message => message.id) }
    },
  }
}
