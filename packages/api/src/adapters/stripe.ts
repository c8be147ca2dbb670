import { createHash } from 'node:crypto'

import Stripe from 'stripe'

import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'

export type { Stripe }

export interface StripeSettings {
  /** STRIPE_SECRET_KEY. */
  secretKey: string
  /** STRIPE_WEBHOOK_SECRET: without it the webhook answers 503. */
  webhookSecret?: string
  /** STRIPE_API_URL: where the API is (protocol, host, port); Stripe's own by default. Tests point it at a fake. */
  apiUrl?: string
}

interface CheckoutSessionInput {
  priceId: string
  currency: string
  customerId: string
  userId: string
  fluxAmount: number
  successUrl: string
  cancelUrl: string
  paymentMethodTypes?: string[]
  paymentMethodOptions?: Record<string, unknown>
}

/** Subscription statuses that still bill (or may bill again); the rest are over. */
const LIVE_SUBSCRIPTION_STATUSES = new Set(['active', 'trialing', 'past_due', 'unpaid', 'incomplete', 'paused'])

/**
 * The port to Stripe's API: exactly the calls the Stripe service makes. A failure
 * of Stripe (unreachable, 5xx, refused key) is a 502 `STRIPE_UNAVAILABLE`; the
 * details keep Stripe's error type and code, never its message (it can quote input).
 */
export interface StripeGateway {
  /** The product's active prices, `currency_options` expanded. */
  listActivePrices: (productId: string) => Promise<Stripe.Price[]>
  /** One price with `currency_options`; undefined when Stripe does not know it. */
  retrievePrice: (priceId: string) => Promise<Stripe.Price | undefined>
  /** Creates the user's customer; repeated calls for the same user and e-mail (within Stripe's 24 h) return the same one. */
  createCustomer: (input: { userId: string, email: string }) => Promise<Stripe.Customer>
  createCheckoutSession: (input: CheckoutSessionInput) => Promise<Stripe.Checkout.Session>
  /** The checkout session that created this payment intent, if any. */
  findCheckoutSessionId: (paymentIntentId: string) => Promise<string | undefined>
  createPortalSession: (input: { customerId: string, returnUrl: string }) => Promise<{ url: string }>
  listInvoices: (customerId: string, limit: number) => Promise<Stripe.Invoice[]>
  /** The customer's subscriptions that are not over yet. */
  listLiveSubscriptions: (customerId: string) => Promise<Stripe.Subscription[]>
  cancelSubscription: (subscriptionId: string) => Promise<Stripe.Subscription>
  /**
   * Verifies the signature over the exact bytes received and parses the event;
   * 400 `INVALID_SIGNATURE` when it does not verify, 400 `INVALID_EVENT` when the
   * signed body is not JSON, 503 without a webhook secret. The event's shape is
   * not checked here (the service validates what it reads).
   */
  constructEvent: (rawBody: Buffer | string, signature: string | undefined) => Stripe.Event
}

function apiLocation(apiUrl: string | undefined): Pick<Stripe.StripeConfig, 'host' | 'port' | 'protocol'> {
  if (!apiUrl)
    return {}
  const url = new URL(apiUrl)
  const protocol = url.protocol === 'http:' ? 'http' : 'https'
  return { host: url.hostname, port: url.port || (protocol === 'http' ? 80 : 443), protocol }
}

/** A delivery whose signature verifies but whose body is not a Stripe event we can read: Stripe never sends one. */
export const invalidStripeEvent = (reason: string) =>
  new ApiError(400, 'INVALID_EVENT', 'The body is not a Stripe event', { reason })

export const stripeNotConfigured = (what = 'STRIPE_SECRET_KEY') =>
  new ApiError(503, 'STRIPE_NOT_CONFIGURED', `Payments are not available: ${what} is not configured`, { missing: what })

/** The adapter on the official `stripe` library. */
export function createStripeGateway(settings: StripeSettings, logger: Logger): StripeGateway {
  const stripe = new Stripe(settings.secretKey, {
    ...apiLocation(settings.apiUrl),
    // The library retries with idempotency keys, so a retried create is not duplicated.
    maxNetworkRetries: 2,
    timeout: 20_000,
    telemetry: false,
  })

  async function call<T>(operation: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run()
    }
    catch (error) {
      if (error instanceof Stripe.errors.StripeError) {
        logger.warn({ operation, type: error.type, code: error.code, statusCode: error.statusCode, requestId: error.requestId }, 'Stripe call failed')
        throw new ApiError(502, 'STRIPE_UNAVAILABLE', 'The payment provider could not complete the request; try again', { operation, type: error.type, ...(error.code ? { code: error.code } : {}) })
      }
      throw error
    }
  }

  return {
    listActivePrices: productId => call('prices.list', () =>
      stripe.prices.list({ product: productId, active: true, limit: 100, expand: ['data.currency_options'] }).autoPagingToArray({ limit: 1_000 })),

    retrievePrice: priceId => call('prices.retrieve', async () => {
      try {
        return await stripe.prices.retrieve(priceId, { expand: ['currency_options'] })
      }
      catch (error) {
        if (error instanceof Stripe.errors.StripeError && error.code === 'resource_missing')
          return undefined
        throw error
      }
    }),

    createCustomer: ({ userId, email }) => call('customers.create', () => {
      // The same key for the same user and e-mail: concurrent first checkouts get one customer.
      const emailHash = createHash('sha256').update(email).digest('base64url').slice(0, 16)
      return stripe.customers.create({ email, metadata: { userId } }, { idempotencyKey: `airi-customer-${userId}-${emailHash}` })
    }),

    createCheckoutSession: input => call('checkout.sessions.create', () => stripe.checkout.sessions.create({
      mode: 'payment',
      customer: input.customerId,
      client_reference_id: input.userId,
      line_items: [{ price: input.priceId, quantity: 1 }],
      currency: input.currency,
      metadata: { userId: input.userId, fluxAmount: String(input.fluxAmount) },
      success_url: input.successUrl,
      cancel_url: input.cancelUrl,
      // Stripe's current API filters the methods enabled in the dashboard instead of taking a fixed list.
      ...(input.paymentMethodTypes ? { allowed_payment_method_types: input.paymentMethodTypes as NonNullable<Stripe.Checkout.SessionCreateParams['allowed_payment_method_types']> } : {}),
      ...(input.paymentMethodOptions ? { payment_method_options: input.paymentMethodOptions as NonNullable<Stripe.Checkout.SessionCreateParams['payment_method_options']> } : {}),
    })),

    findCheckoutSessionId: paymentIntentId => call('checkout.sessions.list', async () => {
      const page = await stripe.checkout.sessions.list({ payment_intent: paymentIntentId, limit: 1 })
      return page.data[0]?.id
    }),

    createPortalSession: ({ customerId, returnUrl }) => call('billingPortal.sessions.create', async () => {
      const session = await stripe.billingPortal.sessions.create({ customer: customerId, return_url: returnUrl })
      return { url: session.url }
    }),

    listInvoices: (customerId, limit) => call('invoices.list', async () => (await stripe.invoices.list({ customer: customerId, limit })).data),

    listLiveSubscriptions: customerId => call('subscriptions.list', async () => {
      const all = await stripe.subscriptions.list({ customer: customerId, status: 'all', limit: 100 }).autoPagingToArray({ limit: 1_000 })
      return all.filter(subscription => LIVE_SUBSCRIPTION_STATUSES.has(subscription.status))
    }),

    cancelSubscription: subscriptionId => call('subscriptions.cancel', () => stripe.subscriptions.cancel(subscriptionId)),

    constructEvent(rawBody, signature) {
      if (!settings.webhookSecret)
        throw stripeNotConfigured('STRIPE_WEBHOOK_SECRET')
      if (!signature)
        throw new ApiError(400, 'INVALID_SIGNATURE', 'The Stripe-Signature header is missing')
      try {
        return stripe.webhooks.constructEvent(rawBody, signature, settings.webhookSecret)
      }
      catch (error) {
        if (error instanceof Stripe.errors.StripeSignatureVerificationError)
          throw new ApiError(400, 'INVALID_SIGNATURE', 'The Stripe-Signature header does not verify')
        // Past the signature, what is left to fail is reading the body: not JSON, or a thin (v2) notification.
        throw invalidStripeEvent(error instanceof SyntaxError ? 'not JSON' : 'not a snapshot event')
      }
    },
  }
}
