import { sql, type Transaction } from 'kysely'

import type { Chat, ChatSyncFeedKind, Database, Message } from '@airi/db'


/**
 * The id as Postgres keeps it: text travels as UTF-8, where an unpaired surrogate
 * becomes U+FFFD. Looking ids up in this form keeps a resend matching its stored row.
 * (Routers refuse such ids; this keeps the service right for any other caller.)
 */
export function asStored(id: string): string {
  return id.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
}

type Trx = Transaction<Database>

/** A message to append: the seq is given by `appendMessages`. */
export interface MessageToStore {
  id: string
  senderId: string
  role: string
  content: string
  metadata?: Record<string, unknown> | null
}

/** The live chat row, locked until the transaction ends: what orders every write to a chat's messages and feed. */
export async function lockChat(trx: Trx, chatId: string): Promise<Chat | undefined> {
  return trx.selectFrom('chats').selectAll().where('id', '=', chatId).where('deleted_at', 'is', null).forUpdate().executeTakeFirst()
}

/**
 * Appends one entry to the feed of every user member of the chat: new messages
 * `fromSeq..toSeq`, or an edit or deletion of `messageIds`. One statement: the
 * members are read, their heads bumped and the feed rows written by Postgres. Each
 * head row stays locked until the transaction commits, so feed seqs commit in
 * order; heads are taken in user id order, so two writers never deadlock.
 */
export async function appendToFeeds(trx: Trx, chatId: string, fromSeq: number, toSeq: number, change?: { kind: Exclude<ChatSyncFeedKind, 'messages'>, messageIds: string[] }): Promise<Map<string, number>> {
  const { rows } = await sql<{ user_id: string, seq: number }>`
    WITH heads AS (
      INSERT INTO chat_sync_heads (user_id, last_seq)
      SELECT member_id, 1 FROM chat_members
      WHERE chat_id = ${chatId} AND member_type = 'user' AND deleted_at IS NULL
      ORDER BY member_id
      ON CONFLICT (user_id) DO UPDATE SET last_seq = chat_sync_heads.last_seq + 1
      RETURNING user_id, last_seq
    )
    INSERT INTO chat_sync_feed (user_id, seq, chat_id, from_seq, to_seq, kind, message_ids)
    SELECT user_id, last_seq, ${chatId}, ${fromSeq}, ${toSeq}, ${change?.kind ?? 'messages'}, ${change ? sql`${change.messageIds}::text[]` : sql`NULL`} FROM heads
    RETURNING user_id, seq`.execute(trx)
  return new Map(rows.map(row => [row.user_id, Number(row.seq)]))
}

/**
 * Appends messages to a chat locked by `lockChat`, with the next seqs and their
 * feed entries: two statements (the messages with the chat's new `last_seq`, then
 * the feeds).
 */
export async function appendMessages(trx: Trx, chat: Chat, messages: MessageToStore[]): Promise<{ rows: Message[], heads: Map<string, number> }> {
  const rows = await trx
    .with('bumped', db => db.updateTable('chats').set({ last_seq: chat.last_seq + messages.length, updated_at: new Date() }).where('id', '=', chat.id).returning('id'))
    .insertInto('messages').values(messages.map((message, index) => ({
      id: message.id,
      chat_id: chat.id,
      seq: chat.last_seq + index + 1,
      sender_id: message.senderId,
      role: message.role,
      content: message.content,
      metadata: message.metadata ? JSON.stringify(message.metadata) : null,
    }))).returningAll().execute()
  chat.last_seq += messages.length
  const heads = await appendToFeeds(trx, chat.id, rows[0]!.seq, rows.at(-1)!.seq)
  return { rows, heads }
}
