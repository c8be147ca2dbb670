import type { Db } from '@airi/db'

import type { Cache } from '../../adapters/ports.ts'
import { stripeNotConfigured, type StripeGateway } from '../../adapters/stripe.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import type { BillingService } from '../billing/index.ts'
import type { ConfigService } from '../config.ts'
import type { RateLimits } from '../rate-limits.ts'
import { createCheckout, type CheckoutInput } from './checkout.ts'
import { parseEvent } from './events.ts'
import { stripeExportTables } from './export.ts'
import { createPackageCatalog } from './packages.ts'
import { createWebhookHandler, upsertSubscription, type CompletedPayment, type EventOutcome } from './webhook.ts'

export type { CheckoutInput,     } from './checkout.ts'

export type {  EventOutcome } from './webhook.ts'

export interface StripeServiceDeps {
  db: Db
  /** Credits purchases and takes refunds back; the only writer of balances. */
  billing: BillingService
  cache: Cache
  config: ConfigService
  logger: Logger
  metrics: Metrics
  /** Absent without STRIPE_SECRET_KEY: every operation answers 503 `STRIPE_NOT_CONFIGURED`. */
  gateway?: StripeGateway
  /** Origins a checkout or the billing portal may send the user back to. */
  trustedOrigins: readonly string[]
  /** Per-user limit on checkouts (429 `RATE_LIMITED`); none without it. */
  rateLimits?: Pick<RateLimits, 'hit'>
  /** Seam for product analytics (`payment_completed`), called after a purchase is credited. */
  onPaymentCompleted?: (payment: CompletedPayment) => void
}

export type StripeService = ReturnType<typeof createStripeService>

/**
 * Flux top-ups through Stripe (SPEC §4.8): the package list, checkout, the user's
 * orders, invoices and billing portal, the webhook's event handling, and the part
 * of account deletion that cancels subscriptions. Stripe's own objects are
 * mirrored in the `stripe_*` tables; Flux moves only through the billing service.
 */
export function createStripeService(deps: StripeServiceDeps) {
  const { db, gateway, logger, metrics } = deps
  const catalog = createPackageCatalog({ cache: deps.cache, logger })
  const checkout = createCheckout({ db, config: deps.config, logger, trustedOrigins: deps.trustedOrigins })
  const webhook = createWebhookHandler({ db, billing: deps.billing, logger, metrics, onPaymentCompleted: deps.onPaymentCompleted })

  function requireGateway(): StripeGateway {
    if (!gateway)
      throw stripeNotConfigured()
    return gateway
  }

  return {
    /** Whether STRIPE_SECRET_KEY is configured. */
    configured: gateway !== undefined,

    async packages() {
      const stripe = requireGateway()
      return catalog.list(stripe, await deps.config.getOrThrow('STRIPE_FLUX_PRODUCT_ID'))
    },

    async checkout(user: { id: string, email: string }, input: CheckoutInput) {
      const stripe = requireGateway()
      await deps.rateLimits?.hit('checkout', user.id)
      return checkout.checkout(stripe, user, input)
    },

    orders(userId: string, input: { cursor?: string | null, limit?: number }) {
      requireGateway()
      return checkout.orders(userId, input)
    },

    invoices: (userId: string, input: { limit?: number }) => checkout.invoices(requireGateway(), userId, input),

    portal: (userId: string, input: { returnUrl: string }) => checkout.portal(requireGateway(), userId, input),

    /**
     * One webhook delivery: verifies the signature over the raw body (400
     * `INVALID_SIGNATURE`, nothing written) and that the body is an event (400
     * `INVALID_EVENT`), then handles the event. Unknown event types, objects that
     * are not ours and events about deleted accounts are answered as success; a
     * failure throws, so the webhook answers 500 and Stripe delivers again.
     */
    async handleWebhook(rawBody: Buffer | string, signature: string | undefined): Promise<{ eventId: string, type: string, outcome: EventOutcome }> {
      const stripe = requireGateway()
      let event
      try {
        event = parseEvent(stripe.constructEvent(rawBody, signature))
      }
      catch (error) {
        if (error instanceof ApiError && (error.code === 'INVALID_SIGNATURE' || error.code === 'INVALID_EVENT')) {
          metrics.stripeEvents.add(1, { type: 'unknown', outcome: error.code === 'INVALID_EVENT' ? 'invalid_event' : 'invalid_signature' })
          logger.warn({ code: error.code, ...error.details }, 'Stripe webhook delivery refused')
        }
        throw error
      }
      try {
        const outcome = await webhook.handle(stripe, event)
        metrics.stripeEvents.add(1, { type: event.type, outcome })
        logger.debug({ eventId: event.id, type: event.type, outcome }, 'Stripe event')
        return { eventId: event.id, type: event.type, outcome }
      }
      catch (error) {
        metrics.stripeEvents.add(1, { type: event.type, outcome: 'failed' })
        logger.error({ err: error, eventId: event.id, type: event.type }, 'Stripe event handling failed; Stripe will deliver it again')
        throw error
      }
    },

    /** Account export: the user's customer, orders, subscriptions and invoices as mirrored here. */
    exportTables: (userId: string) => stripeExportTables(db, userId),

    /**
     * Account deletion (priority 10): cancels the user's subscriptions that still
     * bill, at Stripe, so a deleted account is never charged again. The mirrors stay.
     * Idempotent: a cancelled subscription is no longer listed.
     */
    async deleteAllForUser(userId: string): Promise<void> {
      const customerId = await checkout.findCustomerId(userId)
      if (!customerId)
        return
      const stripe = requireGateway()
      for (const subscription of await stripe.listLiveSubscriptions(customerId)) {
        const cancelled = await stripe.cancelSubscription(subscription.id)
        await upsertSubscription(db, userId, cancelled)
        logger.info({ userId, subscriptionId: subscription.id }, 'subscription cancelled for account deletion')
      }
    },
  }
}
