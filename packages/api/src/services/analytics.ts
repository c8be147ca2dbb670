import type { LRUCache } from 'lru-cache'

import type { Db } from '@airi/db'

import { createLru } from '../lru.ts'
import type { AnalyticsSink } from '../adapters/posthog.ts'
import type { Logger } from '../logger.ts'
import { singlePage, type ExportTables } from './account-export/index.ts'
import type { CompletedPayment } from './stripe/webhook.ts'

/** The product events we send (SPEC §4.9); docs/operations.md lists their properties. */
const ANALYTICS_EVENTS = {
  userSignedUp: 'user_signed_up',
  paymentCompleted: 'payment_completed',
  fluxGranted: 'flux_granted',
  firstMessageSent: 'first_message_sent',
  voiceInputUsed: 'voice_input_used',
} as const

/** The events sent once per user ever, decided by a row of `user_milestones`. */
type Milestone = typeof ANALYTICS_EVENTS['firstMessageSent' | 'voiceInputUsed']

/** One admin grant that reached a user's balance. */
export interface GrantedFlux {
  userId: string
  amount: number
  grantKey: string
  /** The admin's user id. */
  grantedBy: string
}

export interface AnalyticsDeps {
  db: Db
  /** PostHog when POSTHOG_KEY is set, else the no-op sink. */
  sink: AnalyticsSink
  logger: Logger
}

/** Users this instance remembers as having reached a milestone, per milestone. */
const MAX_KNOWN_USERS = 100_000

/**
 * Product analytics (PostHog): one method per event, distinctId = the user id.
 * Capturing only queues (the sink sends in batches), so no request waits on
 * PostHog or fails with it. `first_message_sent` and `voice_input_used` are
 * decided by a conditional insert into `user_milestones`, so each is sent once per
 * user across instances.
 */
export function createAnalyticsService({ db, sink, logger }: AnalyticsDeps) {
  // Spares the insert for users seen before; the table stays the judge.
  const known: Record<Milestone, LRUCache<string, true>> = {
    first_message_sent: createLru(MAX_KNOWN_USERS),
    voice_input_used: createLru(MAX_KNOWN_USERS),
  }

  /**
   * Sends `milestone` the first time ever for `userId`: one insert on this
   * instance's first sight of the user, nothing after; a failure is logged and the
   * caller is unaffected.
   */
  async function once(milestone: Milestone, userId: string, properties?: Record<string, unknown>): Promise<void> {
    if (known[milestone].has(userId))
      return
    try {
      const first = await db.insertInto('user_milestones')
        .values({ user_id: userId, milestone })
        .onConflict(oc => oc.doNothing())
        .returning('user_id')
        .executeTakeFirst()
      known[milestone].set(userId, true)
      if (first)
        sink.capture({ distinctId: userId, event: milestone, ...(properties ? { properties } : {}) })
    }
    catch (error) {
      logger.warn({ err: error, userId, milestone }, 'could not record a milestone for analytics')
    }
  }

  return {
    userSignedUp(userId: string): void {
      sink.capture({ distinctId: userId, event: ANALYTICS_EVENTS.userSignedUp })
    },

    paymentCompleted(payment: CompletedPayment): void {
      sink.capture({
        distinctId: payment.userId,
        event: ANALYTICS_EVENTS.paymentCompleted,
        properties: { amount: payment.amountTotal, currency: payment.currency, flux: payment.fluxAmount, stripe_session_id: payment.sessionId },
      })
    },

    fluxGranted(grant: GrantedFlux): void {
      sink.capture({
        distinctId: grant.userId,
        event: ANALYTICS_EVENTS.fluxGranted,
        properties: { amount: grant.amount, source: 'admin_grant', grant_key: grant.grantKey, granted_by: grant.grantedBy },
      })
    },

    /** Called after a user's messages were stored: sends `first_message_sent` the first time ever. */
    messageSent: (userId: string): Promise<void> => once(ANALYTICS_EVENTS.firstMessageSent, userId),

    /** Called after a transcription was billed: sends `voice_input_used` (with the transport it came by) the first time ever. */
    voiceInputUsed: (userId: string, transport: 'rest' | 'stream'): Promise<void> => once(ANALYTICS_EVENTS.voiceInputUsed, userId, { transport }),

    /** Account export: the user's milestones (a handful at most). */
    exportTables: (userId: string): ExportTables => ({
      user_milestones: singlePage(() => db.selectFrom('user_milestones').selectAll().where('user_id', '=', userId).orderBy('milestone').execute()),
    }),

    /** Account deletion: the user's milestones go. */
    async deleteAllForUser(userId: string): Promise<void> {
      for (const users of Object.values(known))
        users.delete(userId)
      await db.deleteFrom('user_milestones').where('user_id', '=', userId).execute()
    },

    /** Sends what is queued (bounded); for shutdown. */
    close: (): Promise<void> => sink.close(),
  }
}

export type AnalyticsService = ReturnType<typeof createAnalyticsService>
