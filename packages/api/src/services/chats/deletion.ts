import type { Db } from '@airi/db'

/** What account deletion removes of the chats domain. */
export function createChatDeletion(db: Db) {
  return {
    /**
     * Account deletion (priority 30): private and bot chats go (soft) with this
     * user's messages; in groups and channels only the membership goes.
     */
    async deleteAllForUser(userId: string): Promise<void> {
      const now = new Date()
      await db.transaction().execute(async (trx) => {
        const memberships = await trx.selectFrom('chat_members')
          .innerJoin('chats', 'chats.id', 'chat_members.chat_id')
          .select(['chats.id', 'chats.type'])
          .where('chat_members.member_type', '=', 'user').where('chat_members.member_id', '=', userId)
          .where('chat_members.deleted_at', 'is', null)
          .execute()
        const personal = memberships.filter(chat => chat.type === 'private' || chat.type === 'bot').map(chat => chat.id)
        if (personal.length > 0) {
          await trx.updateTable('chats').set({ deleted_at: now, updated_at: now }).where('id', 'in', personal).where('deleted_at', 'is', null).execute()
          await trx.updateTable('messages').set({ deleted_at: now, updated_at: now })
            .where('chat_id', 'in', personal).where('sender_id', '=', userId).where('deleted_at', 'is', null).execute()
        }
        await trx.updateTable('chat_members').set({ deleted_at: now })
          .where('member_type', '=', 'user').where('member_id', '=', userId).where('deleted_at', 'is', null).execute()
        // A send racing this may still append a row; with no membership left, it is never read.
        await trx.deleteFrom('chat_sync_heads').where('user_id', '=', userId).execute()
        await trx.deleteFrom('chat_sync_feed').where('user_id', '=', userId).execute()
      })
    },
  }
}
