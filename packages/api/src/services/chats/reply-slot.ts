import { sql } from 'kysely'

import type { Db } from '@airi/db'

import type { Clock } from '../../clock.ts'
import { ApiError, isUniqueViolation } from '../../errors.ts'
import type { LlmGateway } from '../llm-gateway/index.ts'

/** The `chat_replies` row a reply starts with. */
export interface SlotClaim {
  id: string
  callId: string
  chatId: string
  userId: string
  characterId: string
  answersId: string
  regeneratesId: string | null
  model: string
}

const inProgress = (replyId: string) => new ApiError(409, 'REPLY_IN_PROGRESS', 'A reply in this chat is still being made; stop it or wait for it to end', { replyId })

/**
 * A chat's one streaming slot: the reply's `chat_replies` row, which the partial
 * unique index on streaming rows lets only one reply per chat hold.
 */
export function createReplySlots({ db, gateway, clock }: { db: Db, gateway: Pick<LlmGateway, 'staleAfterMs'>, clock: Clock }) {
  const insert = (row: SlotClaim) => db.insertInto('chat_replies').values({
    id: row.id,
    call_id: row.callId,
    chat_id: row.chatId,
    user_id: row.userId,
    character_id: row.characterId,
    answers_id: row.answersId,
    regenerates_id: row.regeneratesId,
    model: row.model,
    status: 'streaming',
  }).execute()

  return {
    /**
     * Claims the slot (409 when another reply holds it). A row left streaming by an
     * instance that died is failed first, once no call of it could still run.
     */
    async claim(row: SlotClaim): Promise<void> {
      try {
        await insert(row)
        return
      }
      catch (error) {
        if (!isUniqueViolation(error))
          throw error
      }
      const staleMs = await gateway.staleAfterMs()
      const freed = await db.updateTable('chat_replies').set({ status: 'failed', error_code: 'INTERRUPTED', error_message: 'The server making this reply stopped', ended_at: new Date() })
        .where('chat_id', '=', row.chatId).where('status', '=', 'streaming')
        .where('created_at', '<', new Date(clock.now() - staleMs)).executeTakeFirst()
      if (Number(freed.numUpdatedRows) > 0) {
        try {
          await insert(row)
          return
        }
        catch (error) {
          if (!isUniqueViolation(error))
            throw error
        }
      }
      const holder = await db.selectFrom('chat_replies').select('id').where('chat_id', '=', row.chatId).where('status', '=', 'streaming').executeTakeFirst()
      throw inProgress(holder?.id ?? '')
    },

    /**
     * Claims the slot before the chat has been read, for a new user message: the
     * row goes in only when the caller is a user member of the live bot chat, the
     * message id is unused and the slot is free. False otherwise, whatever the
     * reason: the caller then reads the chat and claims the usual way.
     */
    async claimAhead(row: SlotClaim): Promise<boolean> {
      try {
        const { numAffectedRows } = await sql`
          INSERT INTO chat_replies (id, call_id, chat_id, user_id, character_id, answers_id, regenerates_id, model, status)
          SELECT ${row.id}, ${row.callId}, ${row.chatId}, ${row.userId}, ${row.characterId}, ${row.answersId}, ${row.regeneratesId}, ${row.model}, 'streaming'
          WHERE EXISTS (
            SELECT 1 FROM chats JOIN chat_members ON chat_members.chat_id = chats.id
            WHERE chats.id = ${row.chatId} AND chats.type = 'bot' AND chats.deleted_at IS NULL
              AND chat_members.member_type = 'user' AND chat_members.member_id = ${row.userId} AND chat_members.deleted_at IS NULL
          ) AND NOT EXISTS (SELECT 1 FROM messages WHERE id = ${row.answersId})`.execute(db)
        return Number(numAffectedRows ?? 0) > 0
      }
      catch (error) {
        if (isUniqueViolation(error))
          return false
        throw error
      }
    },

    /** Gives up a slot whose reply did not start. */
    async release(replyId: string): Promise<void> {
      await db.deleteFrom('chat_replies').where('id', '=', replyId).where('status', '=', 'streaming').execute()
    },
  }
}
