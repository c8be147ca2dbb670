import type { Db } from '@airi/db'

import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { ChatFanout } from './fanout.ts'
import type { BalanceFanout } from './balance-fanout.ts'
import type { ChatSyncEvent, MemoryChange } from './events.ts'
import { createLiveSync } from './live-sync.ts'
import { createChatDeletion } from './deletion.ts'
import { chatExportTables } from './export.ts'
import { createChatManagement } from './management.ts'
import { createChatMessages } from './messages.ts'
import { createChatReads } from './reads.ts'
import { createChatEdits } from './edits.ts'
import { createReplies, type ReplyDeps } from './replies.ts'
import type { AnalyticsService } from '../analytics.ts'
import type { CharacterService } from '../characters/index.ts'
import type { Users } from '../users.ts'
import type { RateLimits } from '../rate-limits.ts'

export type { ChatSyncEvent }

export interface ChatServiceDeps {
  db: Db
  /** Whether characters named as members exist, and their personas: the characters service owns them. */
  characters: Pick<CharacterService, 'existing' | 'persona'>
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
  /** What replies made on the server run on: the LLM gateway (in-process), CHAT_CONTEXT_TOKENS, the text of replies under way for other instances, memory. */
  conversations: Pick<ReplyDeps, 'gateway' | 'config' | 'cache' | 'clock' | 'deltaIntervalMs' | 'memory'>
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
export function createChatService({ db, characters, users, fanout, balances, logger, analytics, resyncIntervalMs = 15_000, fallbackPollMs = DEFAULT_FALLBACK_POLL_MS, rateLimits, subscriptionsPerUser = DEFAULT_CHAT_SUBSCRIPTIONS_PER_USER, conversations }: ChatServiceDeps) {
  const live = createLiveSync({ db, fanout, balances, logger, resyncIntervalMs, fallbackPollMs })
  const reads = createChatReads(db)
  const replies = createReplies({ db, reads, live, characters, rateLimits, logger, ...conversations })

  return {
    ...createChatManagement({ db, reads, characters, users, live, logger }),
    ...createChatMessages({ db, reads, live, analytics, rateLimits }),
    ...createChatEdits({ db, live, rateLimits }),
    respond: replies.respond,
    regenerate: replies.regenerate,
    getReply: replies.getReply,
    stopReply: replies.stopReply,
    /** Stops the replies under way here and waits until each is stored (before the gateway closes). */
    close: replies.close,

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

    /** Tells every live subscription of `userId` (on every instance) that memories changed: a `memory` event. */
    async announceMemory(userId: string, change: MemoryChange): Promise<void> {
      await live.announceMemory(userId, change)
    },

    /** Tells every live subscription of `userId` (on every instance) their new balance: a `balance` event. */
    async announceBalance(userId: string, balance: number): Promise<void> {
      await live.announceBalance(userId, balance)
    },

    /** Account export: the user's chats, the messages in them and their feed. */
    exportTables: (userId: string) => chatExportTables(db, userId),

    ...createChatDeletion(db),
  }
}

export type ChatService = ReturnType<typeof createChatService>
