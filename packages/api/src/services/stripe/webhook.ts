import { sql } from 'kysely'

import type { Db } from '@airi/db'

import type { Stripe, StripeGateway } from '../../adapters/stripe.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import type { BillingService } from '../billing/index.ts'

/**
 * What happened to one event; also the `outcome` of the `stripe.events` counter.
 * `account_deleted`: the purchase's account was deleted, so no Flux moved; the
 * mirror still records the event.
 */
export type EventOutcome = 'handled' | 'ignored' | 'unknown' | 'account_deleted'

/** A purchase whose Flux reached the balance (for analytics; called after commit). */
export interface CompletedPayment {
  userId: string
  sessionId: string
  fluxAmount: number
  amountTotal: number | null
  currency: string | null
}

export interface WebhookDeps {
  db: Db
  billing: BillingService
  logger: Logger
  metrics: Metrics
  /** Seam for product analytics (PostHog `payment_completed`): best effort, never fails the event. */
  onPaymentCompleted?: (payment: CompletedPayment) => void
}

/** The request id of a purchase's credit: one credit per checkout session, ever. */
const checkoutRequestId = (sessionId: string) => `stripe:checkout:${sessionId}`

const idOf = (value: string | { id: string } | null | undefined): string | null =>
  value == null ? null : typeof value === 'string' ? value : value.id

const fromUnix = (seconds: number | null | undefined): Date | null => (seconds == null ? null : new Date(seconds * 1000))

/** The billing service's answer for a balance closed with its account (deletion keeps no balance to move). */
const isAccountDeleted = (error: unknown) => error instanceof ApiError && error.code === 'FLUX_ACCOUNT_NOT_FOUND'

/**
 * The handling of verified Stripe events. Every handler is idempotent, because
 * Stripe delivers at least once, concurrently and in any order: the credit is
 * claimed on the mirror row (`flux_credited` false → true) in the transaction that
 * credits it, and refunds move `flux_refunded` up to the refunded share under the
 * mirror row's lock. A handler that throws makes the webhook answer 500, and Stripe
 * delivers again. An event about a deleted account is not a failure (redelivery
 * cannot bring the account back): it is recorded on the mirror, logged, answered 200.
 */
export function createWebhookHandler({ db, billing, logger, metrics, onPaymentCompleted }: WebhookDeps) {
  /** Credits what the session bought, unless it was credited before; `unknown` when the session is not ours. */
  async function creditSession(session: Stripe.Checkout.Session): Promise<EventOutcome> {
    const result = await billing.transaction(async ({ trx, credit }) => {
      // The claim: of concurrent deliveries, exactly one sees `flux_credited = false`.
      const claimed = await trx.updateTable('stripe_checkout_session')
        .set({
          flux_credited: true,
          status: 'complete',
          payment_status: session.payment_status === 'no_payment_required' ? 'no_payment_required' : 'paid',
          stripe_payment_intent_id: idOf(session.payment_intent),
          updated_at: new Date(),
        })
        .where('stripe_session_id', '=', session.id)
        .where('flux_credited', '=', false)
        .returning(['user_id', 'flux_amount', 'flux_refunded', 'amount_total', 'currency'])
        .executeTakeFirst()
      if (!claimed) {
        const known = await trx.selectFrom('stripe_checkout_session').select('id').where('stripe_session_id', '=', session.id).executeTakeFirst()
        return known ? 'credited-before' as const : 'unknown' as const
      }
      // Flux already held back by a refund that arrived first is not credited.
      const amount = (claimed.flux_amount ?? 0) - claimed.flux_refunded
      if (amount > 0) {
        try {
          await credit({
            userId: claimed.user_id,
            amount,
            requestId: checkoutRequestId(session.id),
            description: 'Flux purchase',
            metadata: { stripeSessionId: session.id, fluxAmount: claimed.flux_amount, ...(claimed.flux_refunded > 0 ? { heldBackForRefund: claimed.flux_refunded } : {}) },
            announce: true,
          })
        }
        catch (error) {
          if (!isAccountDeleted(error))
            throw error
          // Paid after the account was deleted: the mirror keeps the payment, uncredited
          // (`flux_credited` means the Flux reached a balance), and the event is done.
          await trx.updateTable('stripe_checkout_session').set({ flux_credited: false })
            .where('stripe_session_id', '=', session.id).execute()
          return 'account-deleted' as const
        }
      }
      return { ...claimed, amount }
    })

    if (result === 'unknown') {
      logger.warn({ sessionId: session.id }, 'Stripe event for a checkout session we did not create; ignored')
      return 'unknown'
    }
    if (result === 'account-deleted') {
      logger.error({ sessionId: session.id }, 'checkout session paid after its account was deleted: recorded, not credited; refund it in Stripe')
      return 'account_deleted'
    }
    if (result === 'credited-before')
      return 'handled'

    logger.info({ userId: result.user_id, sessionId: session.id, flux: result.amount }, 'Flux purchase credited')
    if (result.amount_total != null && result.currency)
      metrics.stripeRevenue.add(result.amount_total, { currency: result.currency })
    try {
      onPaymentCompleted?.({ userId: result.user_id, sessionId: session.id, fluxAmount: result.amount, amountTotal: result.amount_total, currency: result.currency })
    }
    catch (error) {
      logger.warn({ err: error }, 'payment_completed hook failed')
    }
    return 'handled'
  }

  /**
   * Mirrors what the event says about the session, never moving it backwards: a
   * credited session stays paid, a completed one never becomes expired.
   */
  async function syncSession(session: Stripe.Checkout.Session, paymentStatus: string): Promise<EventOutcome> {
    const row = await db.updateTable('stripe_checkout_session')
      .set({
        status: sql<string>`CASE WHEN status = 'complete' THEN status ELSE ${session.status ?? 'open'} END`,
        payment_status: sql<string>`CASE WHEN flux_credited THEN payment_status ELSE ${paymentStatus} END`,
        stripe_payment_intent_id: sql<string | null>`coalesce(stripe_payment_intent_id, ${idOf(session.payment_intent)})`,
        updated_at: new Date(),
      })
      .where('stripe_session_id', '=', session.id)
      .returning('id')
      .executeTakeFirst()
    if (!row) {
      logger.warn({ sessionId: session.id }, 'Stripe event for a checkout session we did not create; ignored')
      return 'unknown'
    }
    return 'handled'
  }

  /** Takes back the refunded share of a purchase's Flux, once per refunded amount. */
  async function refund(gateway: StripeGateway, charge: Stripe.Charge): Promise<EventOutcome> {
    const paymentIntentId = idOf(charge.payment_intent)
    if (!paymentIntentId || charge.amount <= 0)
      return 'ignored'
    let mirror = await db.selectFrom('stripe_checkout_session').select('id')
      .where('stripe_payment_intent_id', '=', paymentIntentId).executeTakeFirst()
    if (!mirror) {
      // The refund can overtake the completion event that would have recorded the intent.
      const sessionId = await gateway.findCheckoutSessionId(paymentIntentId)
      if (sessionId) {
        mirror = await db.updateTable('stripe_checkout_session')
          .set({ stripe_payment_intent_id: paymentIntentId, updated_at: new Date() })
          .where('stripe_session_id', '=', sessionId)
          .returning('id')
          .executeTakeFirst()
      }
    }
    if (!mirror) {
      logger.warn({ chargeId: charge.id, paymentIntentId }, 'refund of a payment that is not a Flux purchase of ours; ignored')
      return 'unknown'
    }
    const mirrorId = mirror.id

    const outcome = await billing.transaction(async ({ trx, debit }) => {
      const row = await trx.selectFrom('stripe_checkout_session')
        .select(['user_id', 'stripe_session_id', 'flux_amount', 'flux_credited', 'flux_refunded'])
        .where('id', '=', mirrorId).forUpdate().executeTakeFirstOrThrow()
      const refundedShare = Math.floor((row.flux_amount ?? 0) * Math.min(charge.amount_refunded, charge.amount) / charge.amount)
      // Events can repeat or arrive out of order; only a larger refunded amount takes more.
      const owed = refundedShare - row.flux_refunded
      if (owed <= 0)
        return { owed: 0, taken: 0, unbilled: 0, accountDeleted: false }
      await trx.updateTable('stripe_checkout_session')
        .set({ flux_refunded: refundedShare, updated_at: new Date() })
        .where('id', '=', mirrorId).execute()
      // Not credited yet: the credit will leave this share out, nothing to take back.
      if (!row.flux_credited)
        return { owed, taken: 0, unbilled: 0, accountDeleted: false }
      try {
        const entry = await debit({
          userId: row.user_id,
          amount: owed,
          requestId: `stripe:refund:${charge.id}:${charge.amount_refunded}`,
          description: 'Flux purchase refunded',
          metadata: { stripeSessionId: row.stripe_session_id, stripeChargeId: charge.id, amountRefunded: charge.amount_refunded, currency: charge.currency },
          announce: true,
        })
        return { owed, taken: entry.amount, unbilled: 0, accountDeleted: false }
      }
      catch (error) {
        // Already spent: the balance is 0 and nothing more can be taken.
        if (error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX')
          return { owed, taken: 0, unbilled: owed, accountDeleted: false }
        // The balance was closed with the account: nothing to take back, the mirror keeps the refund.
        if (isAccountDeleted(error))
          return { owed, taken: 0, unbilled: 0, accountDeleted: true }
        throw error
      }
    })
    if (outcome.accountDeleted) {
      logger.warn({ chargeId: charge.id, paymentIntentId, owed: outcome.owed }, 'refund of a purchase whose account was deleted: recorded on the mirror, no Flux to take back')
      return 'account_deleted'
    }
    // A partly covered debit counts its own shortfall; one refused outright is counted here.
    if (outcome.unbilled > 0)
      metrics.fluxUnbilled.add(outcome.unbilled)
    if (outcome.owed > 0)
      logger.info({ chargeId: charge.id, owed: outcome.owed, taken: outcome.taken }, 'refunded Flux taken back')
    return 'handled'
  }

  async function userOfCustomer(customer: string | { id: string } | null): Promise<{ userId: string, customerId: string } | undefined> {
    const customerId = idOf(customer)
    if (!customerId)
      return undefined
    const row = await db.selectFrom('stripe_customer').select('user_id').where('stripe_customer_id', '=', customerId).executeTakeFirst()
    return row && { userId: row.user_id, customerId }
  }

  /** Mirrors a subscription as the event shows it. */
  async function syncSubscription(subscription: Stripe.Subscription): Promise<EventOutcome> {
    const owner = await userOfCustomer(subscription.customer)
    if (!owner) {
      logger.warn({ subscriptionId: subscription.id }, 'subscription of a customer we do not know; ignored')
      return 'unknown'
    }
    await upsertSubscription(db, owner.userId, subscription)
    return 'handled'
  }

  async function syncInvoice(invoice: Stripe.Invoice): Promise<EventOutcome> {
    if (!invoice.id)
      return 'ignored'
    const owner = await userOfCustomer(invoice.customer)
    if (!owner) {
      logger.warn({ invoiceId: invoice.id }, 'invoice of a customer we do not know; ignored')
      return 'unknown'
    }
    const values = {
      stripe_customer_id: owner.customerId,
      stripe_subscription_id: idOf(invoice.parent?.subscription_details?.subscription),
      amount_paid: invoice.amount_paid,
      currency: invoice.currency,
      status: invoice.status ?? 'draft',
      hosted_invoice_url: invoice.hosted_invoice_url ?? null,
      invoice_pdf: invoice.invoice_pdf ?? null,
      updated_at: new Date(),
    }
    await db.insertInto('stripe_invoice')
      .values({ user_id: owner.userId, stripe_invoice_id: invoice.id, ...values })
      .onConflict(oc => oc.column('stripe_invoice_id').doUpdateSet(values))
      .execute()
    return 'handled'
  }

  return {
    async handle(gateway: StripeGateway, event: Stripe.Event): Promise<EventOutcome> {
      switch (event.type) {
        case 'checkout.session.completed': {
          const session = event.data.object
          // A delayed method (bank debit) completes unpaid; its Flux waits for async_payment_succeeded.
          if (session.payment_status === 'paid' || session.payment_status === 'no_payment_required')
            return creditSession(session)
          return syncSession(session, session.payment_status)
        }
        case 'checkout.session.async_payment_succeeded':
          return creditSession(event.data.object)
        case 'checkout.session.async_payment_failed':
          return syncSession(event.data.object, 'failed')
        case 'checkout.session.expired':
          return syncSession(event.data.object, event.data.object.payment_status)
        case 'charge.refunded':
          return refund(gateway, event.data.object)
        default:
          break
      }
      if (event.type.startsWith('customer.subscription.'))
        return syncSubscription(event.data.object as Stripe.Subscription)
      if (event.type.startsWith('invoice.') && (event.data.object as { object?: string }).object === 'invoice')
        return syncInvoice(event.data.object as Stripe.Invoice)
      return 'ignored'
    },
  }
}

/** Writes the subscription's mirror row (by Stripe id), as given. */
export async function upsertSubscription(db: Db, userId: string, subscription: Stripe.Subscription): Promise<void> {
  const item = subscription.items?.data?.[0]
  const values = {
    stripe_customer_id: idOf(subscription.customer) ?? '',
    stripe_price_id: item?.price?.id ?? null,
    status: subscription.status,
    current_period_start: fromUnix(item?.current_period_start),
    current_period_end: fromUnix(item?.current_period_end),
    cancel_at_period_end: subscription.cancel_at_period_end,
    updated_at: new Date(),
  }
  await db.insertInto('stripe_subscription')
    .values({ user_id: userId, stripe_subscription_id: subscription.id, ...values })
    .onConflict(oc => oc.column('stripe_subscription_id').doUpdateSet(values))
    .execute()
}
