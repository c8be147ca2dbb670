import { LRUCache } from 'lru-cache'

import type { Db } from '@airi/db'

import type { AnalyticsSink } from '../adapters/posthog.ts'
import type { Logger } from '../logger.ts'
import type { CompletedPayment } from './stripe/webhook.ts'

/** The product events we send (SPEC §4.9); docs/operations.md lists their properties. */
const ANALYTICS_EVENTS = {
  userSignedUp: 'user_signed_up',
  paymentCompleted: 'payment_completed',
  fluxGranted: 'flux_granted',
  firstMessageSent: 'first_message_sent',
} as const

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

/** Users this instance remembers as having sent a message. */
const MAX_KNOWN_SENDERS = 100_000

/**
 * Product analytics (PostHog): one method per event, distinctId = the user id.
 * Capturing only queues (the sink sends in batches), so no request waits on
 * PostHog or fails with it. `first_message_sent` is decided by a conditional
 * insert into `user_milestones`, so it is sent once per user across instances.
 */
export function createAnalyticsService({ db, sink, logger }: AnalyticsDeps) {
  // Spares the insert for users seen before; the table stays the judge.
  const knownSenders = new LRUCache<string, true>({ max: MAX_KNOWN_SENDERS })

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

    /**
     * Called after a user's messages were stored: sends `first_message_sent` the
     * first time ever. One insert on this instance's first sight of the user,
     * nothing after; a failure is logged and the send is unaffected.
     */
    async messageSent(userId: string): Promise<void> {
      if (knownSenders.has(userId))
        return
      try {
        const first = await db.insertInto('user_milestones')
          .values({ user_id: userId, milestone: ANALYTICS_EVENTS.firstMessageSent })
          .onConflict(oc => oc.doNothing())
          .returning('user_id')
          .executeTakeFirst()
        knownSenders.set(userId, true)
        if (first)
          sink.capture({ distinctId: userId, event: ANALYTICS_EVENTS.firstMessageSent })
      }
      catch (error) {
        logger.warn({ err: error, userId }, 'could not record a first message for analytics')
      }
    },

    /** Account deletion: the user's milestones go. */
    async deleteAllForUser(userId: string): Promise<void> {
      knownSenders.delete(userId)
      await db.deleteFrom('user_milestones').where('user_id', '=', userId).execute()
    },

    /** Sends what is queued (bounded); for shutdown. */
    close: (): Promise<void> => sink.close(),
  }
}

export type AnalyticsService = ReturnType<typeof createAnalyticsService>
