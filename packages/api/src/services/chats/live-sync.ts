import type { Db } from '@airi/db'

import { markShared } from '../../input-guard.ts'
import type { Logger } from '../../logger.ts'
import type { Unsent } from '../../adapters/notice-channel.ts'
import type { BalanceFanout } from './balance-fanout.ts'
import { decodeChatCursor, encodeChatCursor, eventOf, invalidCursor, type ChatChange, type ChatSyncEvent, type DeletedMessage, type FeedEvent, type MemoryChange } from './events.ts'
import { INLINE_MESSAGES_CHARS, type ChatFanout, type ChatNotice, type ChatSyncNotice, type FeedNotice, type MemoryNotice, type ReplyDeltaNotice, type ReplyEndNotice, type ReplyStopNotice, type SyncedMessage } from './fanout.ts'
import { feedHead, readFeed, readMessages } from './feed.ts'
import { Follower, type SharedEvent, type SideEvent } from './follower.ts'

/** Users per query of the re-check after pub/sub came back. */
const USERS_PER_QUERY = 1000

function chunks<T>(items: T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size))
}

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

  /** The event every local subscription sends as is: never changed, so serialized once for all of them. */
  function shared(event: FeedEvent | null): FeedEvent | null {
    return event && markShared(event)
  }

  /** A feed notice's event: taken from the notice when it rode along, else read once for every recipient here. */
  async function feedEventOf(notice: Omit<FeedNotice, 'origin'>): Promise<FeedEvent | null> {
    const { chatId, kind = 'messages' } = notice
    if (kind === 'deleted')
      return shared(notice.deleted && notice.deleted.length > 0 ? { type: 'deleted', chatId, messages: notice.deleted } : null)
    if (kind === 'edited') {
      const messages = notice.messages ?? await readMessages(db, chatId, { ids: notice.messageIds ?? [] })
      return shared(messages.length > 0 ? { type: 'edited', chatId, messages } : null)
    }
    return shared(eventOf(notice.messages ?? await readMessages(db, chatId, { fromSeq: notice.fromSeq, toSeq: notice.toSeq })))
  }

  /** Hands a feed entry to every local subscription it concerns, sharing one event (and at most one read) among them. */
  function deliverFeed(notice: Omit<FeedNotice, 'origin'>): void {
    let event: SharedEvent | undefined
    for (const [userId, feedSeq] of notice.feeds) {
      const here = byUser.get(userId)
      if (!here)
        continue
      event ??= feedEventOf(notice)
      for (const follower of here)
        follower.offer(feedSeq, event)
    }
    // Each follower handles a failed read itself (it reads its feed instead).
    event?.catch((error: unknown) => logger.warn({ err: error, chatId: notice.chatId }, 'could not read a chat\'s new messages; subscribers read their feeds'))
  }

  /** Hands a reply's text or end to every local subscription of its users, after the feed entry it waits for. */
  function deliverSide(notice: Omit<ReplyDeltaNotice, 'origin'> | Omit<ReplyEndNotice, 'origin'>): void {
    if (notice.type === 'reply') {
      // The notice's own fields (`type`, `origin` of one from another instance) are not the event's.
      const { users, type: _type, origin: _origin, ...delta } = notice as ReplyDeltaNotice
      const event = markShared({ type: 'reply' as const, messages: [] as [], ...delta })
      for (const userId of users) {
        for (const follower of byUser.get(userId) ?? [])
          follower.offerSide({ event, after: 0 })
      }
      return
    }
    const { feeds, type: _type, origin: _origin, ...end } = notice as ReplyEndNotice
    const event = markShared({ type: 'reply.end' as const, messages: [] as [], ...end })
    for (const [userId, after] of feeds) {
      for (const follower of byUser.get(userId) ?? [])
        follower.offerSide({ event, after })
    }
  }

  /** Hands a memory change to every local subscription of its user. */
  function deliverMemory(notice: Omit<MemoryNotice, 'origin'>): void {
    const { userId, type: _type, origin: _origin, ...change } = notice as MemoryNotice
    const here = byUser.get(userId)
    if (!here)
      return
    const event = markShared({ type: 'memory' as const, messages: [] as [], ...change })
    for (const follower of here)
      follower.offerSide({ event, after: 0 })
  }

  /** Hands a chat change to every local subscription of its users. */
  function deliverChat(notice: Omit<ChatNotice, 'origin'>): void {
    const { users, type: _type, origin: _origin, ...change } = notice as ChatNotice
    let event: SideEvent['event'] | undefined
    for (const userId of users) {
      for (const follower of byUser.get(userId) ?? []) {
        event ??= markShared({ type: 'chat' as const, messages: [] as [], ...change })
        follower.offerSide({ event, after: 0 })
      }
    }
  }

  /** Where a reply-stop notice goes: the replies this instance makes. */
  const stopListeners = new Set<(notice: Omit<ReplyStopNotice, 'origin'>) => void>()

  function deliver(notice: Unsent<ChatSyncNotice>): void {
    switch (notice.type) {
      case 'reply':
      case 'reply.end':
        deliverSide(notice)
        return
      case 'reply.stop':
        for (const listener of stopListeners)
          listener(notice)
        return
      case 'memory':
        deliverMemory(notice)
        return
      case 'chat':
        deliverChat(notice)
        return
      default:
        deliverFeed(notice)
    }
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

  /** Holders of this instance's subscription to notices: followers and the replies made here. */
  let holders = 0

  /** Counts a holder in, subscribing this instance to notices if it is the first; if that fails the caller counts it out. */
  async function hold(): Promise<void> {
    holders++
    listening ??= listen()
    const current = listening
    try {
      await current
    }
    catch (error) {
      if (listening === current)
        listening = undefined
      throw error
    }
  }

  /** Counts a holder out; the last one unsubscribes this instance. */
  async function release(): Promise<void> {
    if (--holders === 0 && listening) {
      const stop = listening
      listening = undefined
      await (await stop.catch(() => async () => {}))()
    }
  }

  /** Counts a follower in. */
  async function join(follower: Follower): Promise<void> {
    const here = byUser.get(follower.userId) ?? new Set()
    byUser.set(follower.userId, here)
    here.add(follower)
    followers++
    try {
      await hold()
    }
    catch (error) {
      await leave(follower)
      throw error
    }
  }

  /** Counts a follower out; safe to call more than once (its stream ends, its signal aborts). */
  async function leave(follower: Follower): Promise<void> {
    if (follower.left)
      return
    follower.left = true
    const here = byUser.get(follower.userId)
    here?.delete(follower)
    if (here?.size === 0)
      byUser.delete(follower.userId)
    followers--
    await release()
  }

  /** `leave` with a failure logged: when a stream ends, and when its signal aborts (a stream never read still leaves). */
  function leaveQuietly(follower: Follower): Promise<void> {
    return leave(follower).catch((error: unknown) => logger.warn({ err: error, userId: follower.userId }, 'could not stop listening for chat sync notices'))
  }

  /** Follows the user's feed: the `ready` event, what was missed, then live. */
  async function* follow(follower: Follower): AsyncGenerator<{ id: string, event: ChatSyncEvent }> {
    const { userId, signal } = follower
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
        const side = follower.nextSide(position)
        if (side) {
          yield { id: encodeChatCursor(position), event: side }
          continue
        }
        const next = follower.pending.shift()
        if (next) {
          let event: FeedEvent | null
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
          const { events, last, more } = await readFeed(db, userId, position)
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
      await leaveQuietly(follower)
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

    /** An edit or deletion committed as a feed entry: delivered like a send. */
    async announceChange(chatId: string, change: { kind: 'edited', messages: SyncedMessage[] } | { kind: 'deleted', messages: DeletedMessage[] }, feeds: Map<string, number>): Promise<void> {
      const seqs = change.messages.map(message => message.seq)
      const notice = { chatId, kind: change.kind, fromSeq: Math.min(...seqs), toSeq: Math.max(...seqs), feeds: [...feeds], messageIds: change.messages.map(message => message.id) }
      if (change.kind === 'deleted') {
        deliver({ ...notice, deleted: change.messages })
        await fanout.publish({ ...notice, deleted: change.messages })
        return
      }
      deliver({ ...notice, messages: change.messages })
      const small = JSON.stringify(change.messages).length <= INLINE_MESSAGES_CHARS
      await fanout.publish(small ? { ...notice, messages: change.messages } : notice)
    },

    /** A reply's text or end: to the subscriptions here now, to the other instances through one notice. */
    async announceReply(notice: Omit<ReplyDeltaNotice, 'origin'> | Omit<ReplyEndNotice, 'origin'>): Promise<void> {
      deliver(notice)
      await fanout.publish(notice)
    },

    /** Asks whichever instance makes `replyId` to stop it (this one included). */
    async requestStop(chatId: string, replyId: string): Promise<void> {
      const notice = { type: 'reply.stop' as const, chatId, replyId }
      deliver(notice)
      await fanout.publish(notice)
    },

    /**
     * Hears stop requests (from every instance) while the returned function is not
     * called: the replies made here listen while they run.
     */
    async onStopRequest(listener: (notice: Omit<ReplyStopNotice, 'origin'>) => void): Promise<() => Promise<void>> {
      const entry = (notice: Omit<ReplyStopNotice, 'origin'>) => listener(notice)
      stopListeners.add(entry)
      let left = false
      const leaveStops = async () => {
        if (left)
          return
        left = true
        stopListeners.delete(entry)
        await release()
      }
      try {
        await hold()
      }
      catch (error) {
        await leaveStops()
        throw error
      }
      return leaveStops
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

    /** `userId`'s memories changed: every subscription of theirs, here and on the other instances, gets a `memory` event. */
    async announceMemory(userId: string, change: MemoryChange): Promise<void> {
      const notice = { type: 'memory' as const, userId, ...change }
      deliver(notice)
      await fanout.publish(notice)
    },

    /** A chat changed for `users`: every subscription of theirs, here and on the other instances, gets a `chat` event. */
    async announceChat(users: string[], change: ChatChange): Promise<void> {
      if (users.length === 0)
        return
      const notice = { type: 'chat' as const, users, ...change }
      deliver(notice)
      await fanout.publish(notice)
    },

    /**
     * Every new message of every chat of `userId`, as tracked events: first `ready`,
     * then (after `lastEventId`) what the client missed, then live. The subscription
     * is in place and its start position read before this resolves, so whatever is
     * sent after it resolves is delivered.
     */
    async subscribe(userId: string, { lastEventId, signal }: { lastEventId?: string | null, signal?: AbortSignal }): Promise<AsyncGenerator<{ id: string, event: ChatSyncEvent }>> {
      const cursor = lastEventId ? decodeChatCursor(lastEventId) : undefined
      const follower = new Follower(userId, signal, leaveQuietly)
      // In place before the head is read: a send committed after that read is heard of.
      await join(follower)
      try {
        const head = await feedHead(db, userId)
        const start = cursor ?? head
        // Beyond the head: not an id of this user's feed, and following it would skip what comes next.
        if (start > head)
          throw invalidCursor()
        follower.start(start, head)
      }
      catch (error) {
        await leave(follower)
        throw error
      }
      // A signal that aborted before the follower was made never tells it: a stream never read would stay counted.
      if (signal?.aborted)
        await leave(follower)
      return follow(follower)
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

