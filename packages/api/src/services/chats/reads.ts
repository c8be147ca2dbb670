import { sql } from 'kysely'

import type { Chat, ChatType, Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import { toMessage } from './events.ts'
import type { SyncedMessage } from './fanout.ts'

export interface MemberRef {
  type: 'user' | 'character'
  id: string
}

export interface ChatView {
  id: string
  type: ChatType
  title: string | null
  creatorId: string
  lastSeq: number
  createdAt: Date
  updatedAt: Date
  members: MemberRef[]
}

/** A chat in `chats.list`: its view and its newest live message, cut to `LAST_MESSAGE_CHARS`. */
export interface ChatListItem extends ChatView {
  lastMessage: SyncedMessage | null
}

/** Characters (code points) of a list's last messages: a list of long messages stays small. */
const LAST_MESSAGE_CHARS = 500

export const chatNotFound = () => new ApiError(404, 'CHAT_NOT_FOUND', 'Chat not found')

export function toChatView(chat: Chat, members: MemberRef[]): ChatView {
  return {
    id: chat.id,
    type: chat.type,
    title: chat.title,
    creatorId: chat.creator_id,
    lastSeq: chat.last_seq,
    createdAt: chat.created_at,
    updatedAt: chat.updated_at,
    members,
  }
}

/** The membership and view queries every part of the chat service starts from. */
export function createChatReads(db: Db) {
  /** The chats `userId` is an active member of: where every read starts. */
  function memberChats(userId: string) {
    return db.selectFrom('chats')
      .innerJoin('chat_members', 'chat_members.chat_id', 'chats.id')
      .where('chats.deleted_at', 'is', null)
      .where('chat_members.member_type', '=', 'user')
      .where('chat_members.member_id', '=', userId)
      .where('chat_members.deleted_at', 'is', null)
  }

  /** The chat if `userId` is an active member of it (404 otherwise, whether it exists or not). */
  async function requireMembership(userId: string, chatId: string) {
    const chat = await memberChats(userId).selectAll('chats').where('chats.id', '=', chatId).executeTakeFirst()
    if (!chat)
      throw chatNotFound()
    return chat
  }

  async function members(chatIds: string[]): Promise<Map<string, MemberRef[]>> {
    const byChat = new Map<string, MemberRef[]>(chatIds.map(id => [id, []]))
    if (chatIds.length === 0)
      return byChat
    const rows = await db.selectFrom('chat_members').select(['chat_id', 'member_type', 'member_id'])
      .where('chat_id', 'in', chatIds).where('deleted_at', 'is', null)
      .orderBy('created_at').orderBy('member_type').orderBy('member_id').execute()
    for (const row of rows)
      byChat.get(row.chat_id)!.push({ type: row.member_type, id: row.member_id })
    return byChat
  }

  /**
   * Each chat's newest message that is not deleted, content cut to `LAST_MESSAGE_CHARS`:
   * one query for all of them, each a backward step on the (chat_id, seq) index.
   */
  async function lastMessages(chatIds: string[]): Promise<Map<string, SyncedMessage>> {
    if (chatIds.length === 0)
      return new Map()
    const rows = await db.selectFrom('chats')
      .innerJoinLateral(eb => eb.selectFrom('messages')
        .select(['id', 'chat_id', 'seq', 'sender_id', 'role', 'metadata', 'created_at', 'updated_at', 'deleted_at'])
        // Postgres counts characters of UTF-8 text in code points, as the contract does.
        .select(sql<string>`left(messages.content, ${LAST_MESSAGE_CHARS})`.as('content'))
        .whereRef('messages.chat_id', '=', 'chats.id')
        .where('messages.deleted_at', 'is', null)
        .orderBy('messages.seq', 'desc')
        .limit(1)
        .as('last'), join => join.onTrue())
      .selectAll('last')
      .where('chats.id', 'in', chatIds)
      .execute()
    return new Map(rows.map(row => [row.chat_id, toMessage(row)]))
  }

  async function view(chatId: string): Promise<ChatView> {
    const chat = await db.selectFrom('chats').selectAll().where('id', '=', chatId).executeTakeFirstOrThrow()
    return toChatView(chat, (await members([chat.id])).get(chat.id)!)
  }

  return { memberChats, requireMembership, members, lastMessages, view }
}

export type ChatReads = ReturnType<typeof createChatReads>
