import { sql, type Kysely, type Transaction } from 'kysely'

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
 * Appends messages to a live chat, with the next seqs and their feed entries, in
 * one statement: the chat row's update takes its lock (a concurrent append waits,
 * then reads the new `last_seq`), so outside a transaction it is the whole append
 * in one round trip. Undefined when the chat is missing or deleted.
 */
export async function appendMessages(db: Kysely<Database>, chatId: string, messages: MessageToStore[]): Promise<{ rows: Message[], heads: Map<string, number> } | undefined> {
  const count = messages.length
  const { rows } = await sql<Message & { heads: Array<[string, number]> }>`
    WITH bumped AS (
      UPDATE chats SET last_seq = last_seq + ${count}, updated_at = ${new Date()}
      WHERE id = ${chatId} AND deleted_at IS NULL
      RETURNING id, last_seq - ${count} AS base
    ),
    added AS (
      INSERT INTO messages (id, chat_id, seq, sender_id, role, content, metadata)
      SELECT m.id, bumped.id, bumped.base + m.ord, m.sender_id, m.role, m.content, m.metadata
      FROM bumped, unnest(
        ${messages.map(message => message.id)}::text[],
        ${messages.map(message => message.senderId)}::text[],
        ${messages.map(message => message.role)}::text[],
        ${messages.map(message => message.content)}::text[],
        ${messages.map(message => message.metadata ? JSON.stringify(message.metadata) : null)}::jsonb[]
      ) WITH ORDINALITY AS m(id, sender_id, role, content, metadata, ord)
      RETURNING *
    ),
    heads AS (
      INSERT INTO chat_sync_heads (user_id, last_seq)
      SELECT member_id, 1 FROM chat_members JOIN bumped ON chat_members.chat_id = bumped.id
      WHERE member_type = 'user' AND chat_members.deleted_at IS NULL
      ORDER BY member_id
      ON CONFLICT (user_id) DO UPDATE SET last_seq = chat_sync_heads.last_seq + 1
      RETURNING user_id, last_seq
    ),
    feed AS (
      INSERT INTO chat_sync_feed (user_id, seq, chat_id, from_seq, to_seq, kind, message_ids)
      SELECT heads.user_id, heads.last_seq, bumped.id, bumped.base + 1, bumped.base + ${count}, 'messages', NULL FROM heads, bumped
      RETURNING user_id, seq
    )
    SELECT added.*, (SELECT coalesce(json_agg(json_build_array(user_id, seq)), '[]') FROM feed) AS heads
    FROM added ORDER BY seq`.execute(db)
  if (rows.length === 0)
    return undefined
  const heads = new Map(rows[0]!.heads)
  return { rows: rows.map(({ heads: _heads, ...row }) => row), heads }
}
