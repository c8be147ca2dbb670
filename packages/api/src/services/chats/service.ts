import type { Transaction } from 'kysely'

import type { Chat, ChatType, Database, Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { ChatFanout, SyncedMessage } from './fanout.ts'
import type { BalanceFanout } from './balance-fanout.ts'
import { toMessage, type ChatMessagesEvent, type ChatSyncEvent } from './events.ts'
import { chunks, createLiveSync } from './live-sync.ts'
import type { AnalyticsService } from '../analytics.ts'
import type { CharacterService } from '../characters/index.ts'
import type { Users } from '../users.ts'
import type { RateLimits } from '../rate-limits.ts'

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

export type MessageView = SyncedMessage
export type { ChatMessagesEvent, ChatSyncEvent }

export interface NewMessageInput {
  id: string
  role: string
  content: string
  metadata?: Record<string, unknown>
}

export interface ChatServiceDeps {
  db: Db
  /** Whether characters named as members exist: the characters service owns them. */
  characters: Pick<CharacterService, 'existing'>
  /** Whether users named as members exist: the users port over better-auth's table. */
  users: Pick<Users, 'existing'>
  fanout: ChatFanout
  logger: Logger
  /** Told after a send stored new messages (`first_message_sent`); it never fails the send. */
  analytics?: Pick<AnalyticsService, 'messageSent'>
  /**
   * How soon a re-check of feed heads that failed (after pub/sub came back) is
   * tried again. Nothing runs on this interval while all is well.
   */
  resyncIntervalMs?: number
  /** Counts `sendMessages` calls per user (CHAT_RATE_LIMIT_PER_MINUTE); without it sends are not limited. */
  rateLimits?: Pick<RateLimits, 'hit'>
  /** Live subscriptions one user may hold on this instance, across sockets (CHAT_SUBSCRIPTIONS_PER_USER). */
  subscriptionsPerUser?: number
  /** Carries balance events to the other instances (see `announceBalance`). */
  balances?: BalanceFanout
  /** How often subscriptions read their feeds while pub/sub is down (LIVE_SYNC_FALLBACK_POLL_MS). */
  fallbackPollMs?: number
}

/** LIVE_SYNC_FALLBACK_POLL_MS's default: how soon a message reaches another instance's devices while Redis is down. */
const DEFAULT_FALLBACK_POLL_MS = 1000

/**
 * CHAT_SUBSCRIPTIONS_PER_USER's default: twice the sockets a user may open, so a
 * device that resubscribes while its old subscription winds down is not refused,
 * while one account cannot multiply every event by 16 sockets × 16 subscriptions.
 */
export const DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER = 32

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

const chatNotFound = () => new ApiError(404, 'CHAT_NOT_FOUND', 'Chat not found')
const creatorOnly = () => new ApiError(403, 'FORBIDDEN', 'Only the chat\'s creator can do this')

function toChatView(chat: Chat, members: MemberRef[]): ChatView {
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

/**
 * Chats, members and messages. Messages get a gap-free per-chat `seq` under a row
 * lock on the chat; client-supplied ids make a resend a no-op.
 *
 * Live sync: every send also appends a row to each user member's sync feed, numbered
 * by that user's own counter (see migration 0013), and announces the send once
 * (see `chats/live-sync.ts`). A subscription's position is one feed seq; the feed in
 * Postgres is the truth it falls back to, so a lost or repeated notice never loses or
 * repeats a message. The feed carries what was sent while the user was a member:
 * joining a chat brings no history into it (`pullMessages` reads that), and leaving
 * one stops its rows from being delivered.
 */
export function createChatService({ db, characters, users, fanout, balances, logger, analytics, resyncIntervalMs = 15_000, fallbackPollMs = DEFAULT_FALLBACK_POLL_MS, rateLimits, subscriptionsPerUser = DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER }: ChatServiceDeps) {
  const live = createLiveSync({ db, fanout, balances, logger, resyncIntervalMs, fallbackPollMs })

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

  async function view(chatId: string): Promise<ChatView> {
    const chat = await db.selectFrom('chats').selectAll().where('id', '=', chatId).executeTakeFirstOrThrow()
    return toChatView(chat, (await members([chat.id])).get(chat.id)!)
  }

  /** Users and characters named as members must exist. */
  async function assertMembersExist(refs: MemberRef[]): Promise<void> {
    const userIds = refs.filter(ref => ref.type === 'user').map(ref => ref.id)
    const characterIds = refs.filter(ref => ref.type === 'character').map(ref => ref.id)
    const [knownUsers, knownCharacters] = await Promise.all([users.existing(userIds), characters.existing(characterIds)])
    const unknown = refs.filter(ref => !(ref.type === 'user' ? knownUsers : knownCharacters).has(ref.id))
    if (unknown.length > 0)
      throw new ApiError(400, 'UNKNOWN_MEMBER', 'Some members do not exist', { field: 'members', unknown })
  }

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
    async list(userId: string): Promise<ChatView[]> {
      const chats = await memberChats(userId).selectAll('chats').orderBy('chats.updated_at', 'desc').execute()
      const byChat = await members(chats.map(chat => chat.id))
      return chats.map(chat => toChatView(chat, byChat.get(chat.id)!))
    },

    async get(userId: string, chatId: string): Promise<ChatView> {
      await requireMembership(userId, chatId)
      return view(chatId)
    },

    /**
     * Private chats hold the creator and one other user; bot chats the creator and
     * characters; groups and channels anyone. The creator is always a member.
     */
    async create(userId: string, input: { type: ChatType, title?: string | null, members: MemberRef[] }): Promise<ChatView> {
      const others = input.members.filter(ref => !(ref.type === 'user' && ref.id === userId))
        .filter((ref, index, all) => all.findIndex(other => other.type === ref.type && other.id === ref.id) === index)
      const otherUsers = others.filter(ref => ref.type === 'user')
      if (input.type === 'private' && (otherUsers.length !== 1 || others.length !== 1))
        throw new ApiError(400, 'INVALID_MEMBERS', 'A private chat has exactly one other user', { field: 'members' })
      if (input.type === 'bot' && (otherUsers.length > 0 || others.length === 0))
        throw new ApiError(400, 'INVALID_MEMBERS', 'A bot chat has one or more characters and no other users', { field: 'members' })
      await assertMembersExist(others)

      const chatId = await db.transaction().execute(async (trx) => {
        const chat = await trx.insertInto('chats').values({ type: input.type, title: input.title ?? null, creator_id: userId })
          .returning('id').executeTakeFirstOrThrow()
        await trx.insertInto('chat_members').values([{ type: 'user' as const, id: userId }, ...others].map(ref => ({
          chat_id: chat.id,
          member_type: ref.type,
          member_id: ref.id,
        }))).execute()
        return chat.id
      })
      return view(chatId)
    },

    async update(userId: string, input: { chatId: string, title: string | null }): Promise<ChatView> {
      const chat = await requireMembership(userId, input.chatId)
      if (chat.creator_id !== userId)
        throw creatorOnly()
      await db.updateTable('chats').set({ title: input.title, updated_at: new Date() }).where('id', '=', chat.id).execute()
      return view(chat.id)
    },

    /** Soft delete; messages stay in the database but no one can read the chat any more. */
    async delete(userId: string, chatId: string): Promise<{ id: string }> {
      const chat = await requireMembership(userId, chatId)
      if (chat.creator_id !== userId)
        throw creatorOnly()
      await db.updateTable('chats').set({ deleted_at: new Date(), updated_at: new Date() }).where('id', '=', chatId).execute()
      return { id: chatId }
    },

    async addMembers(userId: string, input: { chatId: string, members: MemberRef[] }): Promise<ChatView> {
      const chat = await requireMembership(userId, input.chatId)
      if (chat.creator_id !== userId)
        throw creatorOnly()
      if (chat.type === 'private')
        throw new ApiError(400, 'INVALID_MEMBERS', 'A private chat cannot take more members', { field: 'members' })
      if (chat.type === 'bot' && input.members.some(ref => ref.type === 'user'))
        throw new ApiError(400, 'INVALID_MEMBERS', 'A bot chat takes only characters', { field: 'members' })
      await assertMembersExist(input.members)
      const current = (await members([chat.id])).get(chat.id)!
      const fresh = input.members.filter(ref => !current.some(member => member.type === ref.type && member.id === ref.id))
        .filter((ref, index, all) => all.findIndex(other => other.type === ref.type && other.id === ref.id) === index)
      if (fresh.length > 0) {
        await db.insertInto('chat_members').values(fresh.map(ref => ({ chat_id: chat.id, member_type: ref.type, member_id: ref.id })))
          .onConflict(oc => oc.columns(['chat_id', 'member_type', 'member_id']).where('deleted_at', 'is', null).doNothing())
          .execute()
      }
      return view(chat.id)
    },

    /** The creator removes anyone; any member can remove themselves (leave). */
    async removeMember(userId: string, input: { chatId: string, member: MemberRef }): Promise<{ removed: boolean }> {
      const chat = await requireMembership(userId, input.chatId)
      const leaving = input.member.type === 'user' && input.member.id === userId
      if (!leaving && chat.creator_id !== userId)
        throw creatorOnly()
      const result = await db.updateTable('chat_members').set({ deleted_at: new Date() })
        .where('chat_id', '=', chat.id).where('member_type', '=', input.member.type).where('member_id', '=', input.member.id)
        .where('deleted_at', 'is', null).executeTakeFirst()
      return { removed: Number(result.numUpdatedRows) > 0 }
    },

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

    /**
     * Every new message of every chat of `userId`, as tracked events: first `ready`,
     * then (with `lastEventId`) what the client missed, then live. The start position
     * is read before this resolves, so a caller that confirms the subscription once
     * it has the stream (tRPC's `started`) confirms a position fixed already: whatever
     * is sent from then on comes after it.
     */
    async subscribe(userId: string, options: { lastEventId?: string | null, signal?: AbortSignal }): Promise<AsyncGenerator<{ id: string, event: ChatSyncEvent }>> {
      // Each subscription is sent every event of the user: the cap bounds how often one event is sent.
      // Checked and counted in one synchronous step (live.subscribe joins before it awaits), so a burst cannot overshoot.
      if (live.subscriptions(userId) >= subscriptionsPerUser)
        throw new ApiError(429, 'SUBSCRIPTION_LIMIT', `At most ${subscriptionsPerUser} live chat subscriptions per user on one server; stop one (on another device or tab) first`, { limit: subscriptionsPerUser })
      return live.subscribe(userId, options)
    },

    /** Tells every live subscription of `userId` (on every instance) their new balance: a `balance` event. */
    async announceBalance(userId: string, balance: number): Promise<void> {
      await live.announceBalance(userId, balance)
    },

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

export type ChatService = ReturnType<typeof createChatService>
