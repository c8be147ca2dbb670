import type { Transaction } from 'kysely'

import type { Chat, ChatSyncFeedKind, Database, Message } from '@airi/db'

import { chunks } from './live-sync.ts'

/**
 * The id as Postgres keeps it: text travels as UTF-8, where an unpaired surrogate
 * becomes U+FFFD. Looking ids up in this form keeps a resend matching its stored row.
 * (Routers refuse such ids; this keeps the service right for any other caller.)
 */
export function asStored(id: string): string {
  return id.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
}

/** Users per query of the feed head upsert. */
const USERS_PER_QUERY = 1000

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
 * `fromSeq..toSeq`, or an edit or deletion of `messageIds`. Each head row stays
 * locked until the transaction commits, so feed seqs commit in order; rows are
 * locked in user id order, so two writers never deadlock.
 */
export async function appendToFeeds(trx: Trx, chatId: string, fromSeq: number, toSeq: number, change?: { kind: Exclude<ChatSyncFeedKind, 'messages'>, messageIds: string[] }): Promise<Map<string, number>> {
  const members = await trx.selectFrom('chat_members').select('member_id')
    .where('chat_id', '=', chatId).where('member_type', '=', 'user').where('deleted_at', 'is', null)
    .orderBy('member_id').execute()
  const heads = new Map<string, number>()
  for (const batch of chunks(members.map(row => row.member_id), USERS_PER_QUERY)) {
    const rows = await trx.insertInto('chat_sync_heads').values(batch.map(userId => ({ user_id: userId, last_seq: 1 })))
      .onConflict(oc => oc.column('user_id').doUpdateSet({ last_seq: eb => eb('chat_sync_heads.last_seq', '+', 1) }))
      .returning(['user_id', 'last_seq']).execute()
    await trx.insertInto('chat_sync_feed')
      .values(rows.map(row => ({
        user_id: row.user_id,
        seq: row.last_seq,
        chat_id: chatId,
        from_seq: fromSeq,
        to_seq: toSeq,
        ...(change ? { kind: change.kind, message_ids: change.messageIds } : {}),
      })))
      .execute()
    for (const row of rows)
      heads.set(row.user_id, row.last_seq)
  }
  return heads
}

/** Appends messages to a chat locked by `lockChat`, with the next seqs and their feed entries. */
export async function appendMessages(trx: Trx, chat: Chat, messages: MessageToStore[]): Promise<{ rows: Message[], heads: Map<string, number> }> {
  const rows = await trx.insertInto('messages').values(messages.map((message, index) => ({
    id: message.id,
    chat_id: chat.id,
    seq: chat.last_seq + index + 1,
    sender_id: message.senderId,
    role: message.role,
    content: message.content,
    metadata: message.metadata ? JSON.stringify(message.metadata) : null,
  }))).returningAll().execute()
  await trx.updateTable('chats').set({ last_seq: chat.last_seq + messages.length, updated_at: new Date() }).where('id', '=', chat.id).execute()
  chat.last_seq += messages.length
  const heads = await appendToFeeds(trx, chat.id, rows[0]!.seq, rows.at(-1)!.seq)
  return { rows, heads }
}
