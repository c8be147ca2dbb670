import { sql } from 'kysely'

import type { Db, Message } from '@airi/db'

import { ApiError } from '../../errors.ts'
import { markShared } from '../../input-guard.ts'
import type { Logger } from '../../logger.ts'
import { INLINE_MESSAGES_CHARS, type ChatFanout, type ChatSyncNotice, type SyncedMessage } from '../chat-fanout.ts'
import type { BalanceFanout } from './balance-fanout.ts'

/** A run of consecutive messages of one chat (what `sendMessages` returns). */
export interface ChatMessagesEvent {
  chatId: string
  messages: SyncedMessage[]
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
  /** The user's balance after a top-up, refund or grant; not in the feed, so its id is the position it arrived at. */
  | { type: 'balance', balance: number, messages: [] }

type MessagesEvent = Extract<ChatSyncEvent, { type: 'messages' }>

export function toMessage(row: Message): SyncedMessage {
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

/** Most messages in one live event (a send holds at most 100, so one send is never split). */
const PAGE = 100
/** Feed rows, and messages, one read of a subscription's feed takes at most. */
const FEED_ROWS = 100
const FEED_MESSAGES = 500
/**
 * Bytes of messages one read takes at most (past its first row, itself one send
 * within the 1 MiB body limit): each subscription that catches up holds its own
 * copy, so a backlog of large messages is read, and sent, a slice at a time.
 */
const FEED_BYTES = 1024 * 1024
/** Users per query of the re-check after pub/sub came back. */
const USERS_PER_QUERY = 1000
/** Events one subscription holds for its consumer; beyond that it drops them and reads its feed later. */
const PENDING_LIMIT = 200

export function chunks<T>(items: T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size))
}

interface FeedRun {
  chatId: string
  fromSeq: number
  toSeq: number
  /** The feed seq of the run's last row: the event's id. */
  feedSeq: number
}

/** A send's event as every recipient on this instance shares it; null when none of its messages is left. */
type SharedEvent = Promise<MessagesEvent | null>

/**
 * One live subscription on this instance. It holds its position (a feed seq) and
 * the events handed to it that follow on directly from it; anything else it only
 * notes as `head` ("the feed reaches at least here") and reads from its feed.
 */
function createFollower(signal: AbortSignal | undefined) {
  let wake: (() => void) | undefined
  const follower = {
    /** Unknown until the start position is read; events offered before then wait in `pending`. */
    position: undefined as number | undefined,
    pending: [] as Array<{ feedSeq: number, event: SharedEvent }>,
    head: 0,
    /** The newest balance announced and not yet handed over: only the latest matters, so one slot. */
    balance: undefined as number | undefined,
    offerBalance(balance: number): void {
      follower.balance = balance
      wake?.()
    },
    offer(feedSeq: number, event: SharedEvent): void {
      const last = follower.pending.at(-1)?.feedSeq ?? follower.position
      if (last === undefined || (feedSeq === last + 1 && follower.pending.length < PENDING_LIMIT))
        follower.pending.push({ feedSeq, event })
      else if (feedSeq > last)
        follower.bump(feedSeq)
      wake?.()
    },
    /** The feed reaches at least `head`: what is not handed over is read. */
    bump(head: number): void {
      follower.head = Math.max(follower.head, head)
      wake?.()
    },
    /** Fixes the start position; events offered early are kept only where they follow on from it. */
    start(position: number, head: number): void {
      const early = follower.pending.sort((a, b) => a.feedSeq - b.feedSeq)
      follower.pending = []
      follower.position = position
      follower.head = Math.max(follower.head, head)
      for (const { feedSeq, event } of early) {
        if (feedSeq > position)
          follower.offer(feedSeq, event)
      }
    },
    /** Gives up on what is pending (from the first entry on) and reads it from the feed instead. */
    fallBack(): void {
      follower.bump(follower.pending.at(-1)?.feedSeq ?? 0)
      follower.pending = []
    },
    async waitForNews(): Promise<void> {
      if (signal?.aborted)
        return
      await new Promise<void>((resolve) => {
        wake = resolve
      })
      wake = undefined
    },
  }
  signal?.addEventListener('abort', () => wake?.(), { once: true })
  return follower
}

type Follower = ReturnType<typeof createFollower>

/**
 * Live sync for one instance. Every send publishes one notice per chat (see
 * `ChatSyncNotice`); this instance hands each notice's messages, read at most once
 * (or taken from the notice), to every local subscription whose position it
 * directly follows. A subscription that is behind, or hears of a feed seq beyond
 * its next one, reads its own feed from Postgres, as every subscription did
 * before. While nothing is sent nothing runs: no timer, no query. While the
 * pub/sub connection is down the feed heads of every local user are read on a
 * short interval instead, and once it is back one last re-read heals what was
 * lost and the interval stops.
 */
export interface LiveSyncDeps {
  db: Db
  fanout: ChatFanout
  /** Carries balance events between instances; without it they reach only this instance's subscriptions. */
  balances?: BalanceFanout
  logger: Logger
  resyncIntervalMs: number
  /** How often the feed heads are read while this instance's pub/sub connection is down (LIVE_SYNC_FALLBACK_POLL_MS). */
  fallbackPollMs: number
}

export function createLiveSync({ db, fanout, balances, logger, resyncIntervalMs, fallbackPollMs }: LiveSyncDeps) {
  const byUser = new Map<string, Set<Follower>>()
  let followers = 0
  let listening: Promise<() => Promise<void>> | undefined

  /** The seq of the newest row of `userId`'s feed (0 before their first). */
  async function feedHead(userId: string): Promise<number> {
    const row = await db.selectFrom('chat_sync_heads').select('last_seq').where('user_id', '=', userId).executeTakeFirst()
    return row?.last_seq ?? 0
  }

  function eventOf(messages: SyncedMessage[]): MessagesEvent | null {
    return messages.length === 0 ? null : { type: 'messages', chatId: messages[0]!.chatId, messages, fromSeq: messages[0]!.seq, toSeq: messages.at(-1)!.seq }
  }

  /** The event every local subscription sends as is: never changed, so serialized once for all of them. */
  function sharedEventOf(messages: SyncedMessage[]): MessagesEvent | null {
    const event = eventOf(messages)
    return event && markShared(event)
  }

  /** Hands a send to every local subscription it concerns, sharing one event (and at most one read) among them. */
  function deliver(notice: Omit<ChatSyncNotice, 'origin'>): void {
    let event: SharedEvent | undefined
    for (const [userId, feedSeq] of notice.feeds) {
      const here = byUser.get(userId)
      if (!here)
        continue
      event ??= notice.messages
        ? Promise.resolve(sharedEventOf(notice.messages))
        : db.selectFrom('messages').selectAll().where('chat_id', '=', notice.chatId).where('deleted_at', 'is', null)
            .where('seq', '>=', notice.fromSeq).where('seq', '<=', notice.toSeq).orderBy('seq').execute()
            .then(rows => sharedEventOf(rows.map(toMessage)))
      for (const follower of here)
        follower.offer(feedSeq, event)
    }
    // Each follower handles a failed read itself (it reads its feed instead).
    event?.catch((error: unknown) => logger.warn({ err: error, chatId: notice.chatId }, 'could not read a chat\'s new messages; subscribers read their feeds'))
  }

  /**
   * After pub/sub came back: one query per thousand local users reads their feed
   * heads, and subscriptions that fell behind read their feeds. A failed re-check
   * is tried again every `resyncIntervalMs` until it goes through.
   */
  async function heal(): Promise<void> {
    try {
      await recheckHeads()
    }
    catch (error) {
      logger.warn({ err: error }, 'could not re-check chat feed heads; will retry')
      setTimeout(() => void (followers > 0 && heal()), resyncIntervalMs).unref()
    }
  }

  /** Reads the feed heads of every local user (one query per thousand) and wakes the subscriptions that fell behind. */
  async function recheckHeads(): Promise<void> {
    for (const userIds of chunks([...byUser.keys()], USERS_PER_QUERY)) {
      const rows = await db.selectFrom('chat_sync_heads').select(['user_id', 'last_seq']).where('user_id', 'in', userIds).execute()
      for (const row of rows) {
        for (const follower of byUser.get(row.user_id) ?? [])
          follower.bump(row.last_seq)
      }
    }
  }

  /*
   * While the pub/sub connection is down no notice arrives, so the subscriptions
   * here would hear of nothing sent on other instances until it is back. Instead
   * the feed heads are read every `fallbackPollMs` from the drop until the
   * connection is back (then `heal` runs once and nothing polls any more). A
   * round that starts a poll owns it; stopping moves the round on, so a timer of
   * an earlier round finds itself stale and ends.
   */
  let pollRound = 0
  let polling = false
  function pollWhileDown(): void {
    if (polling)
      return
    polling = true
    const round = ++pollRound
    const next = () => setTimeout(() => void (async () => {
      if (round !== pollRound)
        return
      await recheckHeads().catch((error: unknown) => logger.warn({ err: error }, 'could not read chat feed heads while pub/sub is down; will retry'))
      if (round === pollRound)
        next()
    })(), fallbackPollMs).unref()
    logger.warn({ fallbackPollMs }, 'pub/sub is down: live sync reads chat feeds on an interval until it is back')
    next()
  }
  function stopPolling(): void {
    if (!polling)
      return
    polling = false
    pollRound++
  }

  function deliverBalance(userId: string, balance: number): void {
    for (const follower of byUser.get(userId) ?? [])
      follower.offerBalance(balance)
  }

  /** Subscribes this instance to send (and balance) notices and to the connection's drops; resolves to how to stop. */
  async function listen(): Promise<() => Promise<void>> {
    const stops: Array<() => unknown> = []
    const stop = async () => {
      for (const each of stops.reverse())
        await each()
    }
    try {
      stops.push(await fanout.listen(deliver))
      if (balances)
        stops.push(await balances.listen(notice => deliverBalance(notice.userId, notice.balance)))
      stops.push(fanout.onResubscribed(() => {
        stopPolling()
        void heal()
      }))
      stops.push(fanout.onDown(pollWhileDown), stopPolling)
    }
    catch (error) {
      await stop()
      throw error
    }
    return stop
  }

  /** Counts a follower in (subscribing this instance to notices if it is the first); returns how to count it out. */
  async function join(userId: string, follower: Follower): Promise<() => Promise<void>> {
    const here = byUser.get(userId) ?? new Set()
    byUser.set(userId, here)
    here.add(follower)
    followers++
    let left = false
    const leave = async () => {
      if (left)
        return
      left = true
      here.delete(follower)
      if (here.size === 0 && byUser.get(userId) === here)
        byUser.delete(userId)
      if (--followers === 0 && listening) {
        const stop = listening
        listening = undefined
        await (await stop.catch(() => async () => {}))()
      }
    }
    listening ??= listen()
    const current = listening
    try {
      await current
    }
    catch (error) {
      if (listening === current)
        listening = undefined
      await leave()
      throw error
    }
    return leave
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
      // The row's messages' size, from their stored lengths (no content is read for it).
      .select(eb => eb.selectFrom('messages as msg')
        .select(sql<string>`coalesce(sum(octet_length(msg.content) + coalesce(pg_column_size(msg.metadata), 0)), 0)`.as('bytes'))
        .whereRef('msg.chat_id', '=', 'f.chat_id').whereRef('msg.seq', '>=', 'f.from_seq').whereRef('msg.seq', '<=', 'f.to_seq')
        .where('msg.deleted_at', 'is', null)
        .as('bytes'))
      .where('f.user_id', '=', userId).where('f.seq', '>', after)
      .orderBy('f.seq').limit(FEED_ROWS).execute()

    const runs: FeedRun[] = []
    let last: number | undefined
    let total = 0
    let bytes = 0
    for (const row of rows) {
      const visible = row.live_chat !== null && row.membership !== null
      const size = visible ? row.to_seq - row.from_seq + 1 : 0
      const rowBytes = visible ? Number(row.bytes ?? 0) : 0
      if (total > 0 && (total + size > FEED_MESSAGES || bytes + rowBytes > FEED_BYTES))
        break
      last = row.seq
      if (!visible)
        continue
      total += size
      bytes += rowBytes
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
      const event = eventOf(messages.filter(message => message.chatId === run.chatId && message.seq >= run.fromSeq && message.seq <= run.toSeq))
      // Every message of the run deleted since: nothing to deliver.
      if (event)
        events.push({ id: encodeChatCursor(run.feedSeq), event })
    }
    return { events, last, more }
  }

  /** Follows `userId`'s feed: the `ready` event, what was missed, then live. */
  async function* follow(userId: string, follower: Follower, leave: () => Promise<void>, signal: AbortSignal | undefined): AsyncGenerator<{ id: string, event: ChatSyncEvent }> {
    try {
      let position = follower.position!
      yield { id: encodeChatCursor(position), event: { type: 'ready', messages: [] } }
      while (!signal?.aborted) {
        if (follower.balance !== undefined) {
          const balance = follower.balance
          follower.balance = undefined
          yield { id: encodeChatCursor(position), event: { type: 'balance', balance, messages: [] } }
          continue
        }
        const next = follower.pending.shift()
        if (next) {
          let event: MessagesEvent | null
          try {
            event = await next.event
          }
          catch {
            follower.pending.unshift(next)
            follower.fallBack()
            continue
          }
          position = follower.position = next.feedSeq
          if (event)
            yield { id: encodeChatCursor(position), event }
          continue
        }
        if (follower.head > position) {
          const headBefore = follower.head
          const { events, last, more } = await readFeed(userId, position)
          for (const event of events)
            yield event
          position = follower.position = last ?? position
          // What was handed over meanwhile is kept only where it follows on from the feed.
          follower.pending = follower.pending.filter(entry => entry.feedSeq > position)
          if (follower.pending.length > 0 && follower.pending[0]!.feedSeq !== position + 1)
            follower.fallBack()
          if (more)
            follower.bump(position + 1)
          else if (follower.head === headBefore)
            follower.head = position
          continue
        }
        await follower.waitForNews()
      }
    }
    finally {
      await leave().catch((error: unknown) => logger.warn({ err: error, userId }, 'could not stop listening for chat sync notices'))
    }
  }

  return {
    /**
     * A send committed: its subscribers here get it now, the other instances
     * through one notice. `messages` are the send's new rows.
     */
    async announce(chatId: string, messages: SyncedMessage[], feeds: Map<string, number>): Promise<void> {
      const notice = { chatId, fromSeq: messages[0]!.seq, toSeq: messages.at(-1)!.seq, feeds: [...feeds] }
      deliver({ ...notice, messages })
      const small = JSON.stringify(messages).length <= INLINE_MESSAGES_CHARS
      await fanout.publish(small ? { ...notice, messages } : notice)
    },

    /**
     * `userId`'s balance changed in a way their devices did not do themselves (a
     * top-up, refund or grant): every subscription of theirs, here now and on the
     * other instances through one notice, gets a `balance` event.
     */
    async announceBalance(userId: string, balance: number): Promise<void> {
      deliverBalance(userId, balance)
      await balances?.publish(userId, balance)
    },

    /**
     * Every new message of every chat of `userId`, as tracked events: first `ready`,
     * then (after `lastEventId`) what the client missed, then live. The subscription
     * is in place and its start position read before this resolves, so whatever is
     * sent after it resolves is delivered.
     */
    async subscribe(userId: string, { lastEventId, signal }: { lastEventId?: string | null, signal?: AbortSignal }): Promise<AsyncGenerator<{ id: string, event: ChatSyncEvent }>> {
      const cursor = lastEventId ? decodeChatCursor(lastEventId) : undefined
      const follower = createFollower(signal)
      // In place before the head is read: a send committed after that read is heard of.
      const leave = await join(userId, follower)
      try {
        const head = await feedHead(userId)
        const start = cursor ?? head
        // Beyond the head: not an id of this user's feed, and following it would skip what comes next.
        if (start > head)
          throw invalidCursor()
        follower.start(start, head)
      }
      catch (error) {
        await leave()
        throw error
      }
      // A stream never read still leaves once its signal aborts.
      signal?.addEventListener('abort', () => void leave(), { once: true })
      return follow(userId, follower, leave, signal)
    },

    /**
     * Live subscriptions of `userId` on this instance. One counts from the moment
     * `subscribe` is called (it joins before its first await) until it leaves.
     */
    subscriptions(userId: string): number {
      return byUser.get(userId)?.size ?? 0
    },
  }
}

export type LiveSync = ReturnType<typeof createLiveSync>
