import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { keys } from '@airi/api'
import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakeStripe, type FakeStripe } from '@airi/tooling/fakes/stripe'
import { createTestMeter } from '@airi/tooling/test/metrics'

import { authPost, badRequestFields, createVerifiedUser, emailTo, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

const PRODUCT = 'prod_test_flux'
const INITIAL = 100

let stripe: FakeStripe
let server: TestServer
const { reader, meter } = createTestMeter()
let prices: Record<'starter' | 'bundle' | 'inactive' | 'noFlux' | 'foreign', string>

beforeAll(async () => {
  stripe = await startFakeStripe()
  server = await startTestServer({ stripe: stripe.settings, meter })
  await server.api.services.config.set('STRIPE_FLUX_PRODUCT_ID', PRODUCT)
  prices = {
    starter: stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 300, currencyOptions: { cny: 2200, jpy: 450 }, nickname: 'Starter', metadata: { fluxAmount: '300' } }).id,
    bundle: stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 1000, metadata: { fluxAmount: '1200', recommended: 'true' } }).id,
    inactive: stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 100, active: false, metadata: { fluxAmount: '80' } }).id,
    noFlux: stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 500, metadata: {} }).id,
    foreign: stripe.addPrice({ product: 'prod_test_other', currency: 'usd', unitAmount: 700, metadata: { fluxAmount: '900' } }).id,
  }
})
afterAll(async () => {
  await server?.close()
  await stripe?.close()
})

const client = (token?: string, target = server): AiriClient => createAiriClient({ baseUrl: target.baseUrl, getToken: () => token })
const webhookUrl = (target = server) => `${target.baseUrl}/api/v1/stripe/webhook`
const returnUrl = () => `${server.baseUrl}/app/flux`

async function ledger(userId: string) {
  return server.database.db.selectFrom('flux_transaction').selectAll().where('user_id', '=', userId).orderBy('seq').execute()
}

async function mirror(sessionId: string) {
  return server.database.db.selectFrom('stripe_checkout_session').selectAll().where('stripe_session_id', '=', sessionId).executeTakeFirstOrThrow()
}

async function balance(user: TestUser): Promise<number> {
  return (await client(user.token).flux.balance.query()).flux
}

/** Deletes the account through the real flow: the request, then the e-mailed link opened in the signed-in browser. */
async function deleteAccount(user: TestUser): Promise<void> {
  expect((await authPost(server, '/delete-user', { callbackURL: '/bye' }, user.token)).status).toBe(200)
  const mail = await emailTo(server, user.email, /deletion/i)
  const confirmed = await fetch(server.resend.linkIn(mail), { redirect: 'manual', headers: { authorization: `Bearer ${user.token}` } })
  expect(confirmed.status).toBe(302)
}

/** A user who opened a checkout for `price` (its session is open at the fake, mirrored here). */
async function buyer(price = prices.starter, currency?: string) {
  const user = await createVerifiedUser(server)
  expect(await balance(user)).toBe(INITIAL)
  const { sessionId } = await client(user.token).billing.checkout.mutate({ stripePriceId: price, returnUrl: returnUrl(), ...(currency ? { currency } : {}) })
  return { user, sessionId }
}

describe('billing.packages', () => {
  it('lists the product\'s active prices that carry fluxAmount, formatted per currency, then serves them from the cache', async () => {
    await server.api.adapters.cache.del(keys.stripePrices())
    const listCalls = () => stripe.calls('GET', '/v1/prices').length
    const before = listCalls()

    const packages = await client().billing.packages.query()
    expect(packages).toEqual([
      { stripePriceId: prices.starter, label: 'Starter', fluxAmount: 300, defaultCurrency: 'usd', currencies: { usd: '$3.00', cny: '¥22.00', jpy: '¥450' }, recommended: false },
      { stripePriceId: prices.bundle, label: '1,200 Flux', fluxAmount: 1200, defaultCurrency: 'usd', currencies: { usd: '$10.00' }, recommended: true },
    ])
    const [call] = stripe.calls('GET', '/v1/prices').slice(before)
    expect(call?.query).toMatchObject({ product: PRODUCT, active: 'true', expand: ['data.currency_options'] })

    expect(await client().billing.packages.query()).toEqual(packages)
    expect(listCalls() - before).toBe(1)
  })
})

describe('billing.checkout', () => {
  it('needs a user and answers bad input with the fields', async () => {
    expect((await failure(client().billing.checkout.mutate({ stripePriceId: prices.starter, returnUrl: returnUrl() }))).data?.httpStatus).toBe(401)
    const user = await createVerifiedUser(server)
    expect(await badRequestFields(client(user.token).billing.checkout.mutate({ stripePriceId: '', currency: 'dollars', returnUrl: 'not a url' })))
      .toEqual(['currency', 'returnUrl', 'stripePriceId'])
  })

  it('refuses a foreign, an inactive and a Flux-less price and an untrusted returnUrl, creating nothing at Stripe', async () => {
    const user = await createVerifiedUser(server)
    const sdk = client(user.token)
    const sessionsBefore = stripe.calls('POST', '/v1/checkout/sessions').length
    const code = async (stripePriceId: string, url = returnUrl()) => {
      const error = await failure(sdk.billing.checkout.mutate({ stripePriceId, returnUrl: url }))
      expect(error.data?.httpStatus).toBe(400)
      return error.data?.apiCode
    }
    expect(await code(prices.foreign)).toBe('PRICE_NOT_FOUND')
    expect(await code('price_test_nonexistent')).toBe('PRICE_NOT_FOUND')
    expect(await code(prices.inactive)).toBe('PRICE_INACTIVE')
    expect(await code(prices.noFlux)).toBe('PRICE_WITHOUT_FLUX')
    expect(await code(prices.starter, 'https://evil.example.com/app')).toBe('INVALID_ORIGIN')
    const currency = await failure(sdk.billing.checkout.mutate({ stripePriceId: prices.starter, currency: 'eur', returnUrl: returnUrl() }))
    expect(currency.data?.apiCode).toBe('CURRENCY_NOT_AVAILABLE')

    expect(stripe.calls('POST', '/v1/checkout/sessions').length).toBe(sessionsBefore)
    expect(await server.database.db.selectFrom('stripe_checkout_session').select('id').where('user_id', '=', user.id).execute()).toEqual([])
  })

  it('answers the fake\'s checkout URL, mirrors the session first, and reuses the customer on the next checkout', async () => {
    const user = await createVerifiedUser(server)
    const sdk = client(user.token)
    const customersBefore = stripe.calls('POST', '/v1/customers').length

    const first = await sdk.billing.checkout.mutate({ stripePriceId: prices.starter, returnUrl: returnUrl() })
    const created = stripe.sessions.get(first.sessionId)!
    expect(first.url).toBe(created.url)
    expect(created).toMatchObject({
      mode: 'payment',
      client_reference_id: user.id,
      metadata: { userId: user.id, fluxAmount: '300' },
      currency: 'usd',
      amount_total: 300,
      success_url: `${returnUrl()}?checkout=success&session_id={CHECKOUT_SESSION_ID}`,
      cancel_url: `${returnUrl()}?checkout=cancel`,
    })
    expect(await mirror(first.sessionId)).toMatchObject({ user_id: user.id, flux_amount: 300, flux_credited: false, status: 'open', stripe_price_id: prices.starter, amount_total: 300, currency: 'usd', url: first.url })

    const second = await sdk.billing.checkout.mutate({ stripePriceId: prices.starter, currency: 'CNY', returnUrl: returnUrl() })
    expect(stripe.calls('POST', '/v1/customers').length - customersBefore).toBe(1)
    expect(stripe.sessions.get(second.sessionId)).toMatchObject({ customer: created.customer, currency: 'cny', amount_total: 2200 })
  })

  it('ends, through the checkout page, with the buyer back on returnUrl and the Flux on the balance', async () => {
    stripe.webhookUrl = webhookUrl()
    try {
      const user = await createVerifiedUser(server)
      const { sessionId, url } = await client(user.token).billing.checkout.mutate({ stripePriceId: prices.starter, returnUrl: `${returnUrl()}?tab=top-up` })
      const page = await fetch(url, { redirect: 'manual' })
      expect(page.status).toBe(303)
      expect(page.headers.get('location')).toBe(`${returnUrl()}?tab=top-up&checkout=success&session_id=${sessionId}`)
      expect(await balance(user)).toBe(INITIAL + 300)
    }
    finally {
      stripe.webhookUrl = undefined
    }
  })

  it('passes the operator\'s payment method settings to Stripe', async () => {
    await server.api.services.config.set('STRIPE_PAYMENT_METHODS', ['card', 'alipay'])
    await server.api.services.config.set('STRIPE_PAYMENT_METHOD_OPTIONS', { card: { request_three_d_secure: 'any' } })
    const { sessionId } = await buyer()
    expect(stripe.sessions.get(sessionId)).toMatchObject({
      allowed_payment_method_types: ['card', 'alipay'],
      payment_method_options: { card: { request_three_d_secure: 'any' } },
    })
  })
})

describe('POST /api/v1/stripe/webhook', () => {
  it('refuses a bad or missing signature with 400 and writes nothing', async () => {
    const { user, sessionId } = await buyer()
    const event = stripe.event('checkout.session.completed', stripe.completeSession(sessionId))
    const forged = stripe.sign(event, 'whsec_someone_else').signature

    expect((await stripe.deliver(webhookUrl(), event, { signature: forged })).status).toBe(400)
    const missing = await stripe.deliver(webhookUrl(), event, { signature: null })
    expect(missing).toMatchObject({ status: 400, body: { error: { code: 'INVALID_SIGNATURE' } } })

    expect((await mirror(sessionId)).flux_credited).toBe(false)
    expect((await ledger(user.id)).map(row => row.type)).toEqual(['initial'])
  })

  it('credits a session exactly once under 10 concurrent completions and an async success', async () => {
    const { user, sessionId } = await buyer()
    const revenueBefore = await reader.counter('airi.stripe.revenue')
    const completed = stripe.event('checkout.session.completed', stripe.completeSession(sessionId))
    const asyncSucceeded = stripe.event('checkout.session.async_payment_succeeded', stripe.sessions.get(sessionId)!)

    const deliveries = await Promise.all([
      ...Array.from({ length: 10 }, () => stripe.deliver(webhookUrl(), completed)),
      stripe.deliver(webhookUrl(), asyncSucceeded),
    ])
    expect(deliveries.map(delivery => delivery.status)).toEqual(Array.from({ length: 11 }, () => 200))

    const rows = await ledger(user.id)
    expect(rows.map(row => [row.type, row.amount, row.request_id])).toEqual([['initial', INITIAL, 'initial'], ['credit', 300, `stripe:checkout:${sessionId}`]])
    expect(await balance(user)).toBe(INITIAL + 300)
    expect(await mirror(sessionId)).toMatchObject({ flux_credited: true, status: 'complete', payment_status: 'paid' })
    expect(await reader.counter('airi.stripe.revenue') - revenueBefore).toBe(300)
  })

  it('waits for async_payment_succeeded when the session completes unpaid, and credits nothing on async failure', async () => {
    const delayed = await buyer(prices.bundle)
    const unpaid = stripe.event('checkout.session.completed', stripe.completeSession(delayed.sessionId, { paymentStatus: 'unpaid' }))
    expect((await stripe.deliver(webhookUrl(), unpaid)).status).toBe(200)
    expect(await mirror(delayed.sessionId)).toMatchObject({ status: 'complete', payment_status: 'unpaid', flux_credited: false })
    expect(await balance(delayed.user)).toBe(INITIAL)

    const paid = stripe.completeSession(delayed.sessionId, { paymentStatus: 'paid' })
    expect((await stripe.deliver(webhookUrl(), stripe.event('checkout.session.async_payment_succeeded', paid))).status).toBe(200)
    expect(await balance(delayed.user)).toBe(INITIAL + 1200)
    // The older unpaid completion delivered again neither credits nor moves the mirror back.
    expect((await stripe.deliver(webhookUrl(), unpaid)).status).toBe(200)
    expect(await mirror(delayed.sessionId)).toMatchObject({ payment_status: 'paid', flux_credited: true })
    expect(await balance(delayed.user)).toBe(INITIAL + 1200)

    const failed = await buyer()
    const session = stripe.completeSession(failed.sessionId, { paymentStatus: 'unpaid' })
    await stripe.deliver(webhookUrl(), stripe.event('checkout.session.completed', session))
    expect((await stripe.deliver(webhookUrl(), stripe.event('checkout.session.async_payment_failed', session))).status).toBe(200)
    expect(await mirror(failed.sessionId)).toMatchObject({ payment_status: 'failed', flux_credited: false })
    expect(await balance(failed.user)).toBe(INITIAL)
  })

  it('marks an expired session', async () => {
    const { user, sessionId } = await buyer()
    const expired = { ...stripe.sessions.get(sessionId)!, status: 'expired' }
    expect((await stripe.deliver(webhookUrl(), stripe.event('checkout.session.expired', expired))).status).toBe(200)
    expect(await mirror(sessionId)).toMatchObject({ status: 'expired', flux_credited: false })
    expect(await balance(user)).toBe(INITIAL)
  })

  it('takes back the refunded share, once per refund, and drains what was spent with the shortfall recorded', async () => {
    const { user, sessionId } = await buyer(prices.bundle)
    await stripe.deliver(webhookUrl(), stripe.event('checkout.session.completed', stripe.completeSession(sessionId)))
    expect(await balance(user)).toBe(INITIAL + 1200)

    const half = stripe.event('charge.refunded', stripe.refundCharge(sessionId, 500))
    const [a, b] = await Promise.all([stripe.deliver(webhookUrl(), half), stripe.deliver(webhookUrl(), half)])
    expect([a.status, b.status]).toEqual([200, 200])
    expect(await balance(user)).toBe(INITIAL + 600)

    // Most of it is spent before the rest is refunded: the debit drains to 0.
    await server.api.services.billing.debit({ userId: user.id, amount: 650, requestId: 'spent' })
    const full = stripe.event('charge.refunded', stripe.refundCharge(sessionId, 1000))
    expect((await stripe.deliver(webhookUrl(), full)).status).toBe(200)
    // The half refund delivered late takes nothing more.
    expect((await stripe.deliver(webhookUrl(), half)).status).toBe(200)

    const refunds = (await ledger(user.id)).filter(row => row.request_id?.startsWith('stripe:refund:'))
    expect(refunds.map(row => [row.type, row.amount, row.metadata && (row.metadata as Record<string, unknown>).unbilled])).toEqual([['debit', 600, undefined], ['debit', 50, 550]])
    expect(await balance(user)).toBe(0)
    expect((await mirror(sessionId)).flux_refunded).toBe(1200)
  })

  it('holds back a share refunded before the purchase was credited', async () => {
    const { user, sessionId } = await buyer(prices.bundle)
    const session = stripe.completeSession(sessionId)
    // The refund overtakes the completion: our mirror does not know the payment intent yet.
    expect((await stripe.deliver(webhookUrl(), stripe.event('charge.refunded', stripe.refundCharge(sessionId, 250)))).status).toBe(200)
    expect(await balance(user)).toBe(INITIAL)
    await stripe.deliver(webhookUrl(), stripe.event('checkout.session.completed', session))
    expect(await balance(user)).toBe(INITIAL + 900)
    expect(await mirror(sessionId)).toMatchObject({ flux_credited: true, flux_refunded: 300 })
  })

  it('answers 200 and credits nothing for a session it did not create, and ignores events it does not handle', async () => {
    const ledgerSize = async () => Number((await server.database.db.selectFrom('flux_transaction').select(eb => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)
    const before = await ledgerSize()
    const foreign = { id: 'cs_test_not_ours', object: 'checkout.session', mode: 'payment', status: 'complete', payment_status: 'paid', amount_total: 300, currency: 'usd', metadata: { userId: 'someone', fluxAmount: '99999' }, payment_intent: 'pi_test_not_ours' }
    expect(await stripe.deliver(webhookUrl(), stripe.event('checkout.session.completed', foreign))).toMatchObject({ status: 200, body: { received: true } })
    expect((await stripe.deliver(webhookUrl(), stripe.event('product.updated', { id: PRODUCT, object: 'product' }))).status).toBe(200)
    expect(await ledgerSize()).toBe(before)
    expect(await server.database.db.selectFrom('stripe_checkout_session').select('id').where('stripe_session_id', '=', foreign.id).execute()).toEqual([])
  })

  it('answers 500 when handling fails, so Stripe delivers again; the redelivery is handled', async () => {
    const { user, sessionId } = await buyer()
    await stripe.deliver(webhookUrl(), stripe.event('checkout.session.completed', stripe.completeSession(sessionId)))
    // A refund of a payment intent the mirror does not know makes us ask Stripe, which fails once.
    await server.database.db.updateTable('stripe_checkout_session').set({ stripe_payment_intent_id: null }).where('stripe_session_id', '=', sessionId).execute()
    const refund = stripe.event('charge.refunded', stripe.refundCharge(sessionId, 300))
    stripe.failNext(400, { error: { type: 'invalid_request_error', message: 'fake refusal' } })
    expect(await stripe.deliver(webhookUrl(), refund)).toMatchObject({ status: 500, body: { error: { code: 'WEBHOOK_FAILED' } } })
    expect(await balance(user)).toBe(INITIAL + 300)

    expect((await stripe.deliver(webhookUrl(), refund)).status).toBe(200)
    expect(await balance(user)).toBe(INITIAL)
  })

  it('answers 400 INVALID_EVENT to a validly signed body that is not an event, and writes nothing', async () => {
    const { user, sessionId } = await buyer()
    const session = stripe.completeSession(sessionId)
    const notEvents: (Record<string, unknown> | string)[] = [
      {},
      { id: 'x' },
      'null',
      '[]',
      'not json at all',
      { id: 'evt_test_no_data', object: 'event', type: 'checkout.session.completed' },
      // The type of an event we handle, but the object is not what that event carries.
      { ...stripe.event('checkout.session.completed', session), data: { object: { ...session, id: 42 } } },
      { ...stripe.event('charge.refunded', stripe.refundCharge(sessionId, 300)), data: { object: { object: 'charge', id: 'ch_test_x', amount: 'all' } } },
    ]
    for (const body of notEvents) {
      const delivery = await stripe.deliver(webhookUrl(), body)
      expect({ body, status: delivery.status, code: delivery.body?.error?.code }).toEqual({ body, status: 400, code: 'INVALID_EVENT' })
    }
    expect(await mirror(sessionId)).toMatchObject({ flux_credited: false, flux_refunded: 0 })
    expect((await ledger(user.id)).map(row => row.type)).toEqual(['initial'])
  })

  it('answers 200 to a refund of an account deleted through the real flow, records it on the mirror, and 200 again on redelivery', async () => {
    const { user, sessionId } = await buyer(prices.bundle)
    await stripe.deliver(webhookUrl(), stripe.event('checkout.session.completed', stripe.completeSession(sessionId)))
    expect(await balance(user)).toBe(INITIAL + 1200)
    await deleteAccount(user)
    const ledgerBefore = await ledger(user.id)

    const half = stripe.event('charge.refunded', stripe.refundCharge(sessionId, 500))
    expect(await stripe.deliver(webhookUrl(), half)).toMatchObject({ status: 200, body: { received: true } })
    expect(await mirror(sessionId)).toMatchObject({ user_id: user.id, flux_credited: true, flux_refunded: 600 })
    expect((await stripe.deliver(webhookUrl(), half)).status).toBe(200)
    const full = stripe.event('charge.refunded', stripe.refundCharge(sessionId, 1000))
    expect((await stripe.deliver(webhookUrl(), full)).status).toBe(200)
    expect((await stripe.deliver(webhookUrl(), full)).status).toBe(200)

    expect((await mirror(sessionId)).flux_refunded).toBe(1200)
    // The balance went with the account: nothing to take back, nothing written to the ledger.
    expect(await ledger(user.id)).toEqual(ledgerBefore)
  })

  it('records a payment completed after the account was deleted on the mirror, credits nothing, and answers 200 every time', async () => {
    // One buyer who had a balance, one who never looked at it (no balance row until a first write).
    const spender = await buyer()
    const newcomer = await createVerifiedUser(server)
    const { sessionId: newcomerSession } = await client(newcomer.token).billing.checkout.mutate({ stripePriceId: prices.starter, returnUrl: returnUrl() })
    for (const { user, sessionId } of [spender, { user: newcomer, sessionId: newcomerSession }]) {
      await deleteAccount(user)
      const ledgerBefore = await ledger(user.id)
      const paid = stripe.completeSession(sessionId)
      for (const type of ['checkout.session.completed', 'checkout.session.completed', 'checkout.session.async_payment_succeeded'])
        expect(await stripe.deliver(webhookUrl(), stripe.event(type, paid))).toMatchObject({ status: 200, body: { received: true } })

      expect(await mirror(sessionId)).toMatchObject({ user_id: user.id, status: 'complete', payment_status: 'paid', flux_credited: false, stripe_payment_intent_id: paid.payment_intent })
      expect(await ledger(user.id)).toEqual(ledgerBefore)
      const account = await server.database.db.selectFrom('user_flux').select(['flux', 'deleted_at']).where('user_id', '=', user.id).executeTakeFirst()
      expect(account?.deleted_at ?? null, `the balance of ${user.id} stays closed`).not.toBeNull()
      // A refund of it later has nothing to take back either.
      expect((await stripe.deliver(webhookUrl(), stripe.event('charge.refunded', stripe.refundCharge(sessionId, 300)))).status).toBe(200)
      expect((await mirror(sessionId)).flux_refunded).toBe(300)
    }
  })

  it('keeps the subscription and invoice mirrors of a known customer', async () => {
    const { user, sessionId } = await buyer()
    const customer = stripe.sessions.get(sessionId)!.customer as string
    const subscription = stripe.addSubscription({ customer, price: prices.bundle })
    expect((await stripe.deliver(webhookUrl(), stripe.event('customer.subscription.created', subscription))).status).toBe(200)
    const invoice = stripe.addInvoice({ customer, amountPaid: 1000, currency: 'usd', subscription: subscription.id })
    expect((await stripe.deliver(webhookUrl(), stripe.event('invoice.paid', invoice))).status).toBe(200)

    const db = server.database.db
    expect(await db.selectFrom('stripe_subscription').selectAll().where('stripe_subscription_id', '=', subscription.id).executeTakeFirstOrThrow())
      .toMatchObject({ user_id: user.id, stripe_customer_id: customer, status: 'active', stripe_price_id: prices.bundle, cancel_at_period_end: false })
    expect(await db.selectFrom('stripe_invoice').selectAll().where('stripe_invoice_id', '=', invoice.id).executeTakeFirstOrThrow())
      .toMatchObject({ user_id: user.id, stripe_subscription_id: subscription.id, amount_paid: 1000, currency: 'usd', status: 'paid' })

    const updated = { ...subscription, status: 'past_due', cancel_at_period_end: true }
    await stripe.deliver(webhookUrl(), stripe.event('customer.subscription.updated', updated))
    expect(await db.selectFrom('stripe_subscription').select(['status', 'cancel_at_period_end']).where('stripe_subscription_id', '=', subscription.id).executeTakeFirstOrThrow())
      .toEqual({ status: 'past_due', cancel_at_period_end: true })
  })
})

describe('billing.orders, billing.invoices, billing.portal', () => {
  it('need a user and answer bad input with the fields', async () => {
    expect((await failure(client().billing.orders.query({}))).data?.httpStatus).toBe(401)
    expect((await failure(client().billing.invoices.query({}))).data?.httpStatus).toBe(401)
    expect((await failure(client().billing.portal.mutate({ returnUrl: returnUrl() }))).data?.httpStatus).toBe(401)
    const user = await createVerifiedUser(server)
    const sdk = client(user.token)
    expect(await badRequestFields(sdk.billing.orders.query({ limit: 0 }))).toEqual(['limit'])
    expect(await badRequestFields(sdk.billing.invoices.query({ limit: 101 }))).toEqual(['limit'])
    expect(await badRequestFields(sdk.billing.portal.mutate({ returnUrl: 'javascript:alert(1)' }))).toEqual(['returnUrl'])
    expect((await failure(sdk.billing.orders.query({ cursor: 'not-ours' }))).data?.apiCode).toBe('INVALID_CURSOR')
    const foreign = (key: unknown) => Buffer.from(JSON.stringify(key)).toString('base64url')
    for (const cursor of [foreign({}), foreign(['2025-02-30T00:00:00.000000Z', 'x']), foreign(['2025-01-01T00:00:00.000Z', 'x']), foreign(['2025-01-01T00:00:00.000000Z', 7]), foreign(['2025-01-01T00:00:00.000000Z', 'a\u0000b'])]) {
      const error = await failure(sdk.billing.orders.query({ cursor }))
      expect({ cursor, status: error.data?.httpStatus, code: error.data?.apiCode }).toEqual({ cursor, status: 400, code: 'INVALID_CURSOR' })
    }
  })

  it('page through orders created within one millisecond without skipping any', async () => {
    const user = await createVerifiedUser(server)
    // Microseconds apart, all in one millisecond: a cursor rounded to the millisecond skips all but the first page.
    const rows = Array.from({ length: 5 }, (_, index) => ({
      user_id: user.id,
      stripe_session_id: `cs_test_same_ms_${index}_${user.id}`,
      mode: 'payment',
      status: 'open',
      flux_amount: 100,
      created_at: sql<Date>`${`2025-03-01T12:00:00.12300${index + 1}Z`}::timestamptz`,
    }))
    await server.database.db.insertInto('stripe_checkout_session').values(rows).execute()

    const sdk = client(user.token)
    const seen: string[] = []
    let cursor: string | null = null
    for (let pages = 0; pages < 10; pages++) {
      const page: Awaited<ReturnType<typeof sdk.billing.orders.query>> = await sdk.billing.orders.query({ limit: 2, cursor })
      seen.push(...page.items.map(item => item.sessionId))
      cursor = page.nextCursor
      if (!cursor)
        break
    }
    expect(seen).toEqual(rows.map(row => row.stripe_session_id).toReversed())
  })

  it('list only the caller\'s orders, newest first, paged', async () => {
    const { user, sessionId: first } = await buyer()
    const sdk = client(user.token)
    await stripe.deliver(webhookUrl(), stripe.event('checkout.session.completed', stripe.completeSession(first)))
    const { sessionId: second } = await sdk.billing.checkout.mutate({ stripePriceId: prices.bundle, returnUrl: returnUrl() })
    await buyer()

    const page = await sdk.billing.orders.query({ limit: 1 })
    expect(page.items).toMatchObject([{ sessionId: second, status: 'open', fluxAmount: 1200, fluxCredited: false, amount: '$10.00' }])
    const next = await sdk.billing.orders.query({ limit: 1, cursor: page.nextCursor })
    expect(next.items).toMatchObject([{ sessionId: first, status: 'complete', paymentStatus: 'paid', fluxAmount: 300, fluxCredited: true, amountTotal: 300, currency: 'usd' }])
    expect(next.nextCursor).toBeNull()
  })

  it('list the caller\'s invoices from Stripe, and none before a first checkout', async () => {
    const { user, sessionId } = await buyer()
    const customer = stripe.sessions.get(sessionId)!.customer as string
    const invoice = stripe.addInvoice({ customer, amountPaid: 1000, currency: 'usd' })
    stripe.addInvoice({ customer: 'cus_test_someone_else', amountPaid: 5, currency: 'usd' })

    expect(await client(user.token).billing.invoices.query({})).toMatchObject([{ id: invoice.id, status: 'paid', amountPaid: 1000, amount: '$10.00', hostedInvoiceUrl: invoice.hosted_invoice_url }])
    const newcomer = await createVerifiedUser(server)
    expect(await client(newcomer.token).billing.invoices.query({})).toEqual([])
  })

  it('open the billing portal for the caller\'s customer: NO_CUSTOMER before a first checkout, INVALID_ORIGIN for a foreign returnUrl', async () => {
    const newcomer = await createVerifiedUser(server)
    const none = await failure(client(newcomer.token).billing.portal.mutate({ returnUrl: returnUrl() }))
    expect(none.data).toMatchObject({ httpStatus: 404, apiCode: 'NO_CUSTOMER' })

    const { user, sessionId } = await buyer()
    const sdk = client(user.token)
    expect((await failure(sdk.billing.portal.mutate({ returnUrl: 'https://evil.example.com/' }))).data?.apiCode).toBe('INVALID_ORIGIN')
    const { url } = await sdk.billing.portal.mutate({ returnUrl: returnUrl() })
    const [call] = stripe.calls('POST', '/v1/billing_portal/sessions').slice(-1)
    expect(call?.body).toEqual({ customer: stripe.sessions.get(sessionId)!.customer, return_url: returnUrl() })
    expect(url).toMatch(new RegExp(`^${stripe.url}/p/session/`))
  })
})

describe('account deletion', () => {
  it('cancels the user\'s live subscriptions at Stripe (priority 10) and keeps the mirrors', async () => {
    const { user, sessionId } = await buyer()
    const customer = stripe.sessions.get(sessionId)!.customer as string
    const live = stripe.addSubscription({ customer, price: prices.bundle })
    const over = stripe.addSubscription({ customer, status: 'canceled' })
    await stripe.deliver(webhookUrl(), stripe.event('customer.subscription.created', live))

    await deleteAccount(user)

    expect(stripe.calls('DELETE', '/v1/subscriptions/:id').map(call => call.path)).toEqual([`/v1/subscriptions/${live.id}`])
    expect(stripe.subscriptions.get(over.id)!.status).toBe('canceled')
    expect(await server.database.db.selectFrom('stripe_subscription').select('status').where('stripe_subscription_id', '=', live.id).executeTakeFirstOrThrow()).toEqual({ status: 'canceled' })
    expect((await mirror(sessionId)).user_id).toBe(user.id)
  })
})

describe('without STRIPE_SECRET_KEY', () => {
  it('answers 503 STRIPE_NOT_CONFIGURED on every billing procedure and the webhook; the rest keeps working', async () => {
    const bare = await startTestServer({ database: server.database, redisUrl: false })
    try {
      const user = await createVerifiedUser(bare)
      const sdk = client(user.token, bare)
      const unavailable = async (call: Promise<unknown>) => {
        const error = await failure(call)
        return [error.data?.httpStatus, error.data?.apiCode]
      }
      const expected = [503, 'STRIPE_NOT_CONFIGURED']
      expect(await unavailable(client(undefined, bare).billing.packages.query())).toEqual(expected)
      expect(await unavailable(sdk.billing.checkout.mutate({ stripePriceId: prices.starter, returnUrl: `${bare.baseUrl}/app` }))).toEqual(expected)
      expect(await unavailable(sdk.billing.orders.query({}))).toEqual(expected)
      expect(await unavailable(sdk.billing.invoices.query({}))).toEqual(expected)
      expect(await unavailable(sdk.billing.portal.mutate({ returnUrl: `${bare.baseUrl}/app` }))).toEqual(expected)

      const event = stripe.event('checkout.session.completed', { id: 'cs_test_x', object: 'checkout.session' })
      expect(await stripe.deliver(webhookUrl(bare), event)).toMatchObject({ status: 503, body: { error: { code: 'STRIPE_NOT_CONFIGURED' } } })
      expect(await sdk.flux.balance.query()).toEqual({ flux: INITIAL })
    }
    finally {
      await bare.close()
    }
  })
})
