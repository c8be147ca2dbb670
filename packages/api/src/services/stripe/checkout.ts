import type { Db } from '@airi/db'

import type { StripeGateway } from '../../adapters/stripe.ts'
import { beforeCreatedAtId, createCursorCodec, createdAtIdKey, exactTimestamp } from '../../cursor.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { ConfigService } from '../config.ts'
import { fluxAmountOf, formatAmount, productIdOf, unitAmountIn } from './packages.ts'

export interface CheckoutInput {
  stripePriceId: string
  /** Lower-case ISO code; the price's own currency when absent. */
  currency?: string
  /** Where Stripe sends the buyer back (with `checkout=success|cancel`); must be on a trusted origin. */
  returnUrl: string
}

export interface CheckoutResult {
  sessionId: string
  /** Stripe's hosted checkout page. */
  url: string
}

/** One checkout session of the user, from our mirror. */
interface Order {
  sessionId: string
  /** Stripe's session status: `open`, `complete` or `expired`. */
  status: string
  /** `paid`, `unpaid`, `no_payment_required`, or our `failed` (a delayed payment that failed). */
  paymentStatus: string | null
  fluxAmount: number
  /** The Flux reached the balance. */
  fluxCredited: boolean
  /** Flux taken back for refunds. */
  fluxRefunded: number
  amountTotal: number | null
  currency: string | null
  /** `amountTotal` formatted in its currency. */
  amount: string | null
  createdAt: Date
}

export interface OrdersPage {
  items: Order[]
  nextCursor: string | null
}

export interface InvoiceView {
  id: string
  number: string | null
  status: string | null
  amountPaid: number
  amountDue: number
  currency: string
  amount: string
  hostedInvoiceUrl: string | null
  invoicePdf: string | null
  createdAt: Date
}

export interface CheckoutDeps {
  db: Db
  config: ConfigService
  logger: Logger
  /** Origins (scheme://host[:port]) a checkout or the portal may send the user back to. */
  trustedOrigins: readonly string[]
}

const invalidPrice = (code: string, message: string) => new ApiError(400, code, message, { field: 'stripePriceId' })

/** Orders are paged newest first by (created_at, id), exactly. */
const ordersCursor = createCursorCodec(createdAtIdKey)

/** Appends query parameters; `{CHECKOUT_SESSION_ID}` must reach Stripe unescaped, so no URLSearchParams. */
function withQuery(url: string, query: string): string {
  const hashAt = url.indexOf('#')
  const [base, hash] = hashAt === -1 ? [url, ''] : [url.slice(0, hashAt), url.slice(hashAt)]
  return `${base}${base.includes('?') ? '&' : '?'}${query}${hash}`
}

/** Checkout, the user's orders and invoices, the billing portal, and the user's Stripe customer. */
export function createCheckout({ db, config, logger, trustedOrigins }: CheckoutDeps) {
  const origins = new Set(trustedOrigins.flatMap((origin) => {
    try {
      return [new URL(origin).origin]
    }
    catch {
      return []
    }
  }))

  /** Only our own pages may receive the buyer back: anything else would make us an open redirect. */
  function assertTrustedReturnUrl(returnUrl: string, field = 'returnUrl'): void {
    let origin: string | undefined
    try {
      const url = new URL(returnUrl)
      origin = url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : undefined
    }
    catch {
      // Not a URL at all: no origin, refused below.
    }
    if (!origin || !origins.has(origin))
      throw new ApiError(400, 'INVALID_ORIGIN', 'The return URL is not on a trusted origin', { field })
  }

  async function findCustomerId(userId: string): Promise<string | undefined> {
    const row = await db.selectFrom('stripe_customer').select('stripe_customer_id')
      .where('user_id', '=', userId).where('deleted_at', 'is', null).executeTakeFirst()
    return row?.stripe_customer_id
  }

  /** The user's Stripe customer, created on the first checkout and reused after. */
  async function ensureCustomer(gateway: StripeGateway, user: { id: string, email: string }): Promise<string> {
    const existing = await findCustomerId(user.id)
    if (existing)
      return existing
    const customer = await gateway.createCustomer({ userId: user.id, email: user.email })
    await db.insertInto('stripe_customer')
      .values({ user_id: user.id, stripe_customer_id: customer.id, email: user.email })
      .onConflict(oc => oc.column('user_id').doNothing())
      .execute()
    // A concurrent first checkout may have stored its customer first; use whichever is stored.
    const stored = await findCustomerId(user.id)
    if (!stored)
      throw new Error('stripe_customer row missing right after insert')
    return stored
  }

  return {
    findCustomerId,

    async checkout(gateway: StripeGateway, user: { id: string, email: string }, input: CheckoutInput): Promise<CheckoutResult> {
      assertTrustedReturnUrl(input.returnUrl)
      const productId = await config.getOrThrow('STRIPE_FLUX_PRODUCT_ID')
      const price = await gateway.retrievePrice(input.stripePriceId)
      // A price of another product is answered like an unknown one.
      if (!price || productIdOf(price) !== productId)
        throw invalidPrice('PRICE_NOT_FOUND', 'No such Flux package')
      if (!price.active)
        throw invalidPrice('PRICE_INACTIVE', 'This Flux package is no longer sold')
      if (price.type !== 'one_time')
        throw invalidPrice('PRICE_NOT_ONE_TIME', 'This price is not a one-time purchase')
      const fluxAmount = fluxAmountOf(price)
      if (fluxAmount === undefined)
        throw invalidPrice('PRICE_WITHOUT_FLUX', 'This price does not say how much Flux it sells (metadata.fluxAmount)')
      const currency = (input.currency ?? price.currency).toLowerCase()
      const amount = unitAmountIn(price, currency)
      if (amount === undefined)
        throw new ApiError(400, 'CURRENCY_NOT_AVAILABLE', `This package cannot be paid in ${currency.toUpperCase()}`, { field: 'currency' })
      const maxAmount = await config.get('MAX_CHECKOUT_AMOUNT_CENTS')
      if (amount > maxAmount)
        throw new ApiError(400, 'AMOUNT_TOO_LARGE', 'This package costs more than one checkout may', { field: 'stripePriceId', maxAmount })

      const customerId = await ensureCustomer(gateway, user)
      const session = await gateway.createCheckoutSession({
        priceId: price.id,
        currency,
        customerId,
        userId: user.id,
        fluxAmount,
        successUrl: withQuery(input.returnUrl, 'checkout=success&session_id={CHECKOUT_SESSION_ID}'),
        cancelUrl: withQuery(input.returnUrl, 'checkout=cancel'),
        paymentMethodTypes: await config.getOptional('STRIPE_PAYMENT_METHODS'),
        paymentMethodOptions: await config.getOptional('STRIPE_PAYMENT_METHOD_OPTIONS'),
      })
      if (!session.url)
        throw new ApiError(502, 'STRIPE_UNAVAILABLE', 'The payment provider answered without a checkout page')
      // Mirrored before the URL leaves: a session nobody can pay is harmless, a paid one we do not know is not.
      await db.insertInto('stripe_checkout_session').values({
        user_id: user.id,
        stripe_session_id: session.id,
        stripe_customer_id: customerId,
        stripe_price_id: price.id,
        mode: 'payment',
        status: session.status ?? 'open',
        payment_status: session.payment_status,
        amount_total: session.amount_total ?? amount,
        currency: session.currency ?? currency,
        flux_amount: fluxAmount,
        url: session.url,
      }).execute()
      logger.info({ userId: user.id, sessionId: session.id, priceId: price.id, fluxAmount }, 'checkout session created')
      return { sessionId: session.id, url: session.url }
    },

    async orders(userId: string, { cursor, limit = 20 }: { cursor?: string | null, limit?: number }): Promise<OrdersPage> {
      let query = db.selectFrom('stripe_checkout_session').selectAll()
        .select(exactTimestamp('created_at').as('created_at_exact'))
        .where('user_id', '=', userId)
      if (cursor)
        query = query.where(beforeCreatedAtId(ordersCursor.decode(cursor)))
      const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit + 1).execute()
      const page = rows.slice(0, limit)
      const last = page.at(-1)
      return {
        items: page.map(row => ({
          sessionId: row.stripe_session_id,
          status: row.status,
          paymentStatus: row.payment_status,
          fluxAmount: row.flux_amount ?? 0,
          fluxCredited: row.flux_credited,
          fluxRefunded: row.flux_refunded,
          amountTotal: row.amount_total,
          currency: row.currency,
          amount: row.amount_total != null && row.currency ? formatAmount(row.amount_total, row.currency) : null,
          createdAt: row.created_at,
        })),
        nextCursor: rows.length > limit && last ? ordersCursor.encode([last.created_at_exact, last.id]) : null,
      }
    },

    /** The user's invoices as Stripe has them (none without a customer). */
    async invoices(gateway: StripeGateway, userId: string, { limit = 20 }: { limit?: number }): Promise<InvoiceView[]> {
      const customerId = await findCustomerId(userId)
      if (!customerId)
        return []
      const invoices = await gateway.listInvoices(customerId, limit)
      return invoices.flatMap(invoice => invoice.id
        ? [{
            id: invoice.id,
            number: invoice.number,
            status: invoice.status,
            amountPaid: invoice.amount_paid,
            amountDue: invoice.amount_due,
            currency: invoice.currency,
            amount: formatAmount(invoice.total, invoice.currency),
            hostedInvoiceUrl: invoice.hosted_invoice_url ?? null,
            invoicePdf: invoice.invoice_pdf ?? null,
            createdAt: new Date(invoice.created * 1000),
          }]
        : [])
    },

    /** A Stripe billing portal session for the user's customer; 404 `NO_CUSTOMER` before the first checkout. */
    async portal(gateway: StripeGateway, userId: string, { returnUrl }: { returnUrl: string }): Promise<{ url: string }> {
      assertTrustedReturnUrl(returnUrl)
      const customerId = await findCustomerId(userId)
      if (!customerId)
        throw new ApiError(404, 'NO_CUSTOMER', 'There is no billing account yet; it is created with the first purchase')
      return gateway.createPortalSession({ customerId, returnUrl })
    },
  }
}
