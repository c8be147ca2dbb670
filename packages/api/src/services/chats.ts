import type { Transaction } from 'kysely'

import type { Chat, ChatType, Database, Db, Message } from '@airi/db'

import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { ChatFanout } from './chat-fanout.ts'

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

export interface MessageView {
  id: string
  chatId: string
  seq: number
  senderId: string
  role: string
  content: string
  metadata: Record<string, unknown> | null
  createdAt: Date
}

/** A run of consecutive messages of one chat (what `sendMessages` returns). */
export interface ChatMessagesEvent {
  chatId: string
  messages: MessageView[]
  fromSeq: number
  toSeq: number
}

/**
 * What `chats.onMessages` pushes. The first event of every subscription is `ready`:
 * it carries no messages, only its id (the position the subscription starts from),
 * so a client holds a position to resume from before anything else arrives.
 */
export type ChatSyncEvent =
  | { type: 'ready', messages: [] }
  | ({ type: 'messages' } & ChatMessagesEvent)

export interface NewMessageInput {
  id: string
  role: string
  content: string
  metadata?: Record<string, unknown>
}

export interface ChatServiceDeps {
  db: Db
  fanout: ChatFanout
  logger: Logger
  /**
   * How often this instance re-reads the feed heads of the users listening here
   * (one query for all of them), healing doorbells that pub/sub lost.
   */
  resyncIntervalMs?: number
}

/**
 * The id as Postgres keeps it: text travels as UTF-8, where an unpaired surrogate
 * becomes U+FFFD. Looking ids up in this form keeps a resend matching its stored row.
 * (Routers refuse such ids; this keeps the service right for any other caller.)
 */
function asStored(id: string): string {
  return id.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD')
}

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

function toMessage(row: Message): MessageView {
  return {
    id: row.id,
    chatId: row.chat_id,
    seq: row.seq,
    senderId: row.sender_id,
    role: row.role,
    content: row.content,
    metadata: (row.metadata as Record<string, unknown> | null) ?? null,
    createdAt: row.created_at,
  }
}

const invalidCursor = () => new ApiError(400, 'INVALID_CURSOR', 'lastEventId is not a cursor this server issued', { field: 'lastEventId' })

/**
 * An event id: the user's feed seq in decimal. It stays a few bytes however many
 * chats the user has, and a client that reconnects with it as `lastEventId`
 * resumes exactly after that event.
 */
export function encodeChatCursor(feedSeq: number): string {
  return String(feedSeq)
}

export function decodeChatCursor(cursor: string): number {
  if (!/^(?:0|[1-9]\d{0,15})$/.test(cursor) || !Number.isSafeInteger(Number(cursor)))
    throw invalidCursor()
  return Number(cursor)
}

/**
 * What a parked subscription waits on: only the highest feed head rung so far, so
 * however many doorbells arrive while it reads, it holds one number.
 */
function createHeadWatch(signal: AbortSignal | undefined) {
  let highest = 0
  let wake: (() => void) | undefined
  signal?.addEventListener('abort', () => wake?.(), { once: true })
  return {
    ring(head: number) {
      if (head > highest) {
        highest = head
        wake?.()
      }
    },
    /** Resolves once a head beyond `position` was rung, or the signal aborts. */
    async beyond(position: number): Promise<void> {
      while (highest <= position && !signal?.aborted) {
        await new Promise<void>((resolve) => {
          wake = resolve
        })
      }
      wake = undefined
    },
  }
}

/** Most messages in one live event (a send holds at most 100, so one send is never split). */
const PAGE = 100
/** Feed rows, and messages, one read of a subscription's feed takes at most. */
const FEED_ROWS = 100
const FEED_MESSAGES = 500
/** Users per query: of the feed head upsert in a send, and of the periodic re-check. */
const USERS_PER_QUERY = 1000

interface FeedRun {
  chatId: string
  fromSeq: number
  toSeq: number
  /** The feed seq of the run's last row: the event's id. */
  feedSeq: number
}

function chunks<T>(items: T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size))
}

/**
 * Chats, members and messages. Messages get a gap-free per-chat `seq` under a row
 * lock on the chat; client-supplied ids make a resend a no-op.
 *
 * Live sync: every send also appends a row to each user member's sync feed, numbered
 * by that user's own counter (see migration 0013), then rings a doorbell per user.
 * A subscription's position is one feed seq; it always reads its feed from Postgres
 * after that position, so a lost or duplicated doorbell never loses or repeats a
 * message. The feed carries what was sent while the user was a member: joining a
 * chat brings no history into it (`pullMessages` reads that), and leaving one stops
 * its rows from being delivered.
 */
export function createChatService({ db, fanout, logger, resyncIntervalMs = 15_000 }: ChatServiceDeps) {
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
    const [users, characters] = await Promise.all([
      userIds.length ? db.selectFrom('user').select('id').where('id', 'in', userIds).execute() : [],
      characterIds.length ? db.selectFrom('characters').select('id').where('id', 'in', characterIds).where('deleted_at', 'is', null).execute() : [],
    ])
    const known = new Set([...users, ...characters].map(row => row.id))
    const unknown = refs.filter(ref => !known.has(ref.id))
    if (unknown.length > 0)
      throw new ApiError(400, 'UNKNOWN_MEMBER', 'Some members do not exist', { field: 'members', unknown })
  }

  /** The seq of the newest row of `userId`'s feed (0 before their first). */
  async function feedHead(userId: string): Promise<number> {
    const row = await db.selectFrom('chat_sync_heads').select('last_seq').where('user_id', '=', userId).executeTakeFirst()
    return row?.last_seq ?? 0
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

  /**
   * The next events of `userId`'s feed after `after`, consecutive rows of one chat
   * merged into one event. Rows of chats the user has left (or that were deleted)
   * are read past but not delivered. `last` is the feed seq read up to (undefined
   * when there was nothing), `more` whether more may follow it right away.
   */
  async function readFeed(userId: string, after: number): Promise<{ events: Array<{ id: string, event: ChatSyncEvent }>, last?: number, more: boolean }> {
    const rows = await db.selectFrom('chat_sync_feed as f')
      .leftJoin('chats as c', join => join.onRef('c.id', '=', 'f.chat_id').on('c.deleted_at', 'is', null))
      .leftJoin('chat_members as m', join => join.onRef('m.chat_id', '=', 'f.chat_id').onRef('m.member_id', '=', 'f.user_id')
        .on('m.member_type', '=', 'user').on('m.deleted_at', 'is', null))
      .select(['f.seq', 'f.chat_id', 'f.from_seq', 'f.to_seq', 'c.id as live_chat', 'm.id as membership'])
      .where('f.user_id', '=', userId).where('f.seq', '>', after)
      .orderBy('f.seq').limit(FEED_ROWS).execute()

    const runs: FeedRun[] = []
    let last: number | undefined
    let total = 0
    for (const row of rows) {
      const visible = row.live_chat !== null && row.membership !== null
      const size = visible ? row.to_seq - row.from_seq + 1 : 0
      if (total > 0 && total + size > FEED_MESSAGES)
        break
      last = row.seq
      if (!visible)
        continue
      total += size
      const run = runs.at(-1)
      if (run && run.chatId === row.chat_id && run.toSeq + 1 === row.from_seq && row.to_seq - run.fromSeq < PAGE) {
        run.toSeq = row.to_seq
        run.feedSeq = row.seq
      }
      else {
        runs.push({ chatId: row.chat_id, fromSeq: row.from_seq, toSeq: row.to_seq, feedSeq: row.seq })
      }
    }
    const more = rows.length === FEED_ROWS || last !== rows.at(-1)?.seq
    if (runs.length === 0)
      return { events: [], last, more }

    const messages = (await db.selectFrom('messages').selectAll().where('deleted_at', 'is', null)
      .where(eb => eb.or(runs.map(run => eb.and([eb('chat_id', '=', run.chatId), eb('seq', '>=', run.fromSeq), eb('seq', '<=', run.toSeq)]))))
      .orderBy('seq').execute()).map(toMessage)
    const events: Array<{ id: string, event: ChatSyncEvent }> = []
    for (const run of runs) {
      const inRun = messages.filter(message => message.chatId === run.chatId && message.seq >= run.fromSeq && message.seq <= run.toSeq)
      // Every message of the run deleted since: nothing to deliver.
      if (inRun.length > 0)
        events.push({ id: encodeChatCursor(run.feedSeq), event: { type: 'messages', chatId: run.chatId, messages: inRun, fromSeq: inRun[0]!.seq, toSeq: inRun.at(-1)!.seq } })
    }
    return { events, last, more }
  }

  /**
   * One re-check per instance, not per connection: while anyone listens here, every
   * `resyncIntervalMs` one query reads the feed heads of every listening user (per
   * thousand users) and rings their local listeners, so a doorbell pub/sub lost
   * costs at most one interval of delay.
   */
  const resync = (() => {
    let subscriptions = 0
    let timer: NodeJS.Timeout | undefined
    let running = false
    async function tick(): Promise<void> {
      if (running)
        return
      running = true
      try {
        for (const userIds of chunks(fanout.listeningUserIds(), USERS_PER_QUERY)) {
          const rows = await db.selectFrom('chat_sync_heads').select(['user_id', 'last_seq']).where('user_id', 'in', userIds).execute()
          for (const row of rows)
            fanout.ringHere(row.user_id, { head: row.last_seq })
        }
      }
      catch (error) {
        logger.warn({ err: error }, 'could not re-check chat feed heads')
      }
      finally {
        running = false
      }
    }
    return {
      /** Counts one live subscription in; the returned function counts it out. */
      join(): () => void {
        if (subscriptions++ === 0) {
          timer = setInterval(() => void tick(), resyncIntervalMs)
          timer.unref()
        }
        let left = false
        return () => {
          if (left)
            return
          left = true
          if (--subscriptions === 0)
            clearInterval(timer)
        }
      },
    }
  })()

  /** Follows `userId`'s feed from `start`: the `ready` event, what was missed, then live. */
  async function* follow(userId: string, start: number, signal: AbortSignal | undefined): AsyncGenerator<{ id: string, event: ChatSyncEvent }> {
    yield { id: encodeChatCursor(start), event: { type: 'ready', messages: [] } }
    const watch = createHeadWatch(signal)
    const stopListening = await fanout.listen(userId, bell => watch.ring(bell.head))
    const leave = resync.join()
    try {
      // Listening first, then reading: a row committed in between is both rung and
      // after the position, and read once.
      let position = start
      while (!signal?.aborted) {
        const { events, last, more } = await readFeed(userId, position)
        for (const event of events)
          yield event
        position = last ?? position
        if (!more)
          await watch.beyond(position)
      }
    }
    finally {
      leave()
      await stopListening().catch((error: unknown) => logger.warn({ err: error, userId }, 'could not stop listening for chat doorbells'))
    }
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
     * in another chat is a conflict.
     */
    async sendMessages(userId: string, input: { chatId: string, messages: NewMessageInput[] }): Promise<ChatMessagesEvent> {
      const unique = input.messages.map(message => ({ ...message, id: asStored(message.id) }))
        .filter((message, index, all) => all.findIndex(other => other.id === message.id) === index)
      const { rows, heads } = await db.transaction().execute(async (trx) => {
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
          return { rows: existing, heads: undefined }

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
        return { rows: [...existing, ...created], heads }
      })

      if (heads)
        await fanout.ring(heads)
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
    async subscribe(userId: string, { lastEventId, signal }: { lastEventId?: string | null, signal?: AbortSignal }): Promise<AsyncGenerator<{ id: string, event: ChatSyncEvent }>> {
      const head = await feedHead(userId)
      const start = lastEventId ? decodeChatCursor(lastEventId) : head
      // Beyond the head: not an id of this user's feed, and following it would skip what comes next.
      if (start > head)
        throw invalidCursor()
      return follow(userId, start, signal)
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
