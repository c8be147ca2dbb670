import { sql } from 'kysely'

import type { Db } from '@airi/db'

import { keysetPages, pagesById, pagesPerParent, singlePage, type ExportTables } from '../account-export/index.ts'

/** A chat the user is or was in; `visible` while they are a member and it is not deleted. */
interface Membership {
  chat_id: string
  visible: boolean
}

/**
 * The user's part of the chats domain for an account export. Every chat they are or
 * were a member of: in one they can still open, the whole conversation as they see it
 * (everyone's live messages, their own deleted ones too, and its members); in one they
 * left or that was deleted, only what they wrote there and their own membership.
 * Plus the replies they asked for and their live-sync feed.
 */
export function chatExportTables(db: Db, userId: string): ExportTables {
  const memberships = () => keysetPages(async (after: Membership | undefined, limit) => db.selectFrom('chat_members')
    .innerJoin('chats', 'chats.id', 'chat_members.chat_id')
    .select('chat_members.chat_id')
    .select(sql<boolean>`bool_or(chat_members.deleted_at is null and chats.deleted_at is null)`.as('visible'))
    .where('chat_members.member_type', '=', 'user').where('chat_members.member_id', '=', userId)
    .$if(after !== undefined, query => query.where('chat_members.chat_id', '>', after!.chat_id))
    .groupBy('chat_members.chat_id').orderBy('chat_members.chat_id').limit(limit).execute())

  async function* chats() {
    for await (const page of memberships())
      yield await db.selectFrom('chats').selectAll().where('id', 'in', page.map(chat => chat.chat_id)).orderBy('id').execute()
  }

  const members = ({ chat_id, visible }: Membership) => pagesById(async (afterId, limit) => db.selectFrom('chat_members').selectAll()
    .where('chat_id', '=', chat_id)
    .where(eb => eb.and([eb('member_type', '=', 'user'), eb('member_id', '=', userId)]).or(eb.lit(visible).and('deleted_at', 'is', null)))
    .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
    .orderBy('id').limit(limit).execute())

  // Along the (chat_id, seq) key.
  const messages = ({ chat_id, visible }: Membership) => keysetPages(async (after: { seq: number } | undefined, limit) => db.selectFrom('messages').selectAll()
    .where('chat_id', '=', chat_id)
    .where(eb => eb('sender_id', '=', userId).or(eb.lit(visible).and('deleted_at', 'is', null)))
    .$if(after !== undefined, query => query.where('seq', '>', after!.seq))
    .orderBy('seq').limit(limit).execute())

  const replies = ({ chat_id }: Membership) => pagesById(async (afterId, limit) => db.selectFrom('chat_replies').selectAll()
    .where('chat_id', '=', chat_id).where('user_id', '=', userId)
    .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
    .orderBy('id').limit(limit).execute())

  return {
    chats: chats(),
    chat_members: pagesPerParent(memberships(), members),
    messages: pagesPerParent(memberships(), messages),
    chat_replies: pagesPerParent(memberships(), replies),
    chat_sync_heads: singlePage(() => db.selectFrom('chat_sync_heads').selectAll().where('user_id', '=', userId).execute()),
    chat_sync_feed: keysetPages(async (after: { seq: number } | undefined, limit) => db.selectFrom('chat_sync_feed').selectAll()
      .where('user_id', '=', userId)
      .$if(after !== undefined, query => query.where('seq', '>', after!.seq))
      .orderBy('seq').limit(limit).execute()),
  }
}
