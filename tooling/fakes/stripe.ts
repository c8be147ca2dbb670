import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

import Stripe from 'stripe'

import { answer, readBody } from './http.ts'

/* eslint-disable @typescript-eslint/no-explicit-any -- Stripe's objects as plain JSON, read freely by tests */
type Json = Record<string, any>

/** One API request as the fake received it (form bodies and query strings decoded into objects). */
export interface FakeStripeRequest {
  method: string
  path: string
  query: Json
  body: Json
  idempotencyKey: string | undefined
}

export interface FakePriceInput {
  id?: string
  product: string
  currency: string
  unitAmount: number | null
  /** Other currencies: `{ cny: 2200 }`. */
  currencyOptions?: Record<string, number>
  active?: boolean
  type?: 'one_time' | 'recurring'
  metadata?: Record<string, string>
  nickname?: string | null
}

export interface FakeStripeOptions {
  secretKey?: string
  webhookSecret?: string
  /** 0 (default): any free port. */
  port?: number
  /**
   * Where the checkout page (`GET {url}/c/pay/{id}`, the session's `url`) delivers
   * `checkout.session.completed` when a browser opens it (local development).
   */
  webhookUrl?: string
}

export interface FakeStripe {
  /** The API origin, as STRIPE_API_URL. */
  url: string
  secretKey: string
  webhookSecret: string
  /** What `createApi({ stripe })` takes to use this fake. */
  settings: { secretKey: string, webhookSecret: string, apiUrl: string }
  requests: FakeStripeRequest[]
  /** Where the checkout page delivers `checkout.session.completed`; settable once the server's port is known. */
  webhookUrl: string | undefined
  /** The requests to `method path` (path without query; `:id` segments match anything). */
  calls: (method: string, path: string) => FakeStripeRequest[]
  /** The next request answers `status` with `body` (Stripe's error shape by default). */
  failNext: (status: number, body?: unknown) => void

  prices: Map<string, Json>
  customers: Map<string, Json>
  sessions: Map<string, Json>
  subscriptions: Map<string, Json>
  invoices: Map<string, Json>
  addPrice: (input: FakePriceInput) => Json
  addSubscription: (input: { customer: string, status?: string, price?: string }) => Json
  addInvoice: (input: { customer: string, amountPaid: number, currency: string, status?: string, subscription?: string }) => Json
  /** Marks a checkout session as Stripe does when the buyer finishes it; returns the session. */
  completeSession: (sessionId: string, options?: { paymentStatus?: 'paid' | 'unpaid' | 'no_payment_required' }) => Json
  /** The session's charge, refunded `amountRefunded` so far (what `charge.refunded` carries). */
  refundCharge: (sessionId: string, amountRefunded: number) => Json

  /** A webhook event as Stripe sends it. */
  event: (type: string, object: Json) => Json
  /**
   * The event's JSON and a valid `Stripe-Signature` for it, made by the `stripe`
   * library. A string is signed as the raw body (for bodies that are not events).
   */
  sign: (event: Json | string, secret?: string) => { body: string, signature: string }
  /** POSTs the signed event (or raw body) to `webhookUrl`; `signature` overrides the valid one (null: none). */
  deliver: (webhookUrl: string, event: Json | string, options?: { signature?: string | null }) => Promise<{ status: number, body: any }>
  close: () => Promise<void>
}

const now = () => Math.floor(Date.now() / 1000)
const newId = (prefix: string) => `${prefix}_test_${randomBytes(12).toString('hex')}`

/** `a[b][0][c]=x` form and query encoding (what stripe-node sends) into nested objects and arrays. */
export function decodeForm(text: string): Json {
  const root: Json = {}
  for (const [key, value] of new URLSearchParams(text)) {
    const path = key.replace(/\]/g, '').split('[')
    let node: any = root
    for (const [index, segment] of path.entries()) {
      const last = index === path.length - 1
      const nextIsIndex = !last && /^\d+$/.test(path[index + 1]!)
      if (last)
        node[segment] = value
      else
        node = node[segment] ??= nextIsIndex ? [] : {}
    }
  }
  return root
}

function stripeError(status: number, message: string, extra: Json = {}): Json {
  return { error: { type: status >= 500 ? 'api_error' : 'invalid_request_error', message, ...extra } }
}

function list(url: string, data: Json[]): Json {
  return { object: 'list', data, has_more: false, url }
}

/**
 * A local stand-in for the parts of Stripe's API that our adapter calls, spoken
 * to by the real `stripe` library (STRIPE_API_URL): prices (list, retrieve, with
 * `currency_options` when expanded), customers, checkout sessions (create,
 * retrieve, list by payment intent), billing portal sessions, invoices, and
 * subscriptions (list, cancel). It honours `Idempotency-Key` on creates and
 * records every request. Webhook events are built and signed with the library's
 * own `generateTestHeaderString`.
 */
export async function startFakeStripe({ secretKey = 'sk_test_fake_key', webhookSecret = 'whsec_test_fake_secret', port: listenPort = 0, webhookUrl }: FakeStripeOptions = {}): Promise<FakeStripe> {
  const requests: FakeStripeRequest[] = []
  const failures: Array<{ status: number, body?: unknown }> = []
  const idempotent = new Map<string, { status: number, body: Json }>()
  const prices = new Map<string, Json>()
  const customers = new Map<string, Json>()
  const sessions = new Map<string, Json>()
  const subscriptions = new Map<string, Json>()
  const invoices = new Map<string, Json>()
  const portalSessions = new Map<string, Json>()
  let url = ''

  function priceView(price: Json, expandOptions: boolean): Json {
    if (expandOptions)
      return structuredClone(price)
    const { currency_options: _hidden, ...rest } = price
    return structuredClone(rest)
  }

  function amountIn(price: Json, currency: string): number | null {
    if (currency === price.currency)
      return price.unit_amount
    return price.currency_options?.[currency]?.unit_amount ?? null
  }

  const missing = (kind: string, id: string, param = 'id') =>
    ({ status: 404, body: stripeError(404, `No such ${kind}: '${id}'`, { code: 'resource_missing', param }) })

  type Answer = { status: number, body: Json }

  function route(method: string, path: string, query: Json, body: Json): Answer {
    const expand = [...(query.expand ?? []), ...(body.expand ?? [])] as string[]
    let match: RegExpExecArray | null

    if (method === 'GET' && path === '/v1/prices') {
      const found = [...prices.values()].filter(price =>
        (query.product === undefined || price.product === query.product)
        && (query.active === undefined || String(price.active) === query.active))
      return { status: 200, body: list('/v1/prices', found.map(price => priceView(price, expand.includes('data.currency_options')))) }
    }
    if (method === 'GET' && (match = /^\/v1\/prices\/([^/]+)$/.exec(path))) {
      const price = prices.get(match[1]!)
      return price ? { status: 200, body: priceView(price, expand.includes('currency_options')) } : missing('price', match[1]!)
    }

    if (method === 'POST' && path === '/v1/customers') {
      const customer = { id: newId('cus'), object: 'customer', created: now(), email: body.email ?? null, metadata: body.metadata ?? {}, livemode: false }
      customers.set(customer.id, customer)
      return { status: 200, body: customer }
    }

    if (method === 'POST' && path === '/v1/checkout/sessions') {
      const priceId = body.line_items?.[0]?.price as string | undefined
      const price = priceId ? prices.get(priceId) : undefined
      if (!price)
        return missing('price', priceId ?? '', 'line_items[0][price]')
      if (body.customer && !customers.has(body.customer))
        return missing('customer', body.customer, 'customer')
      const currency = (body.currency ?? price.currency) as string
      const amount = amountIn(price, currency)
      if (amount == null)
        return { status: 400, body: stripeError(400, `The price has no amount in ${currency}`, { param: 'currency' }) }
      const id = newId('cs')
      const session = {
        id,
        object: 'checkout.session',
        mode: body.mode,
        status: 'open',
        payment_status: 'unpaid',
        amount_subtotal: amount,
        amount_total: amount,
        currency,
        customer: body.customer ?? null,
        client_reference_id: body.client_reference_id ?? null,
        metadata: body.metadata ?? {},
        success_url: body.success_url ?? null,
        cancel_url: body.cancel_url ?? null,
        allowed_payment_method_types: body.allowed_payment_method_types ?? null,
        payment_method_options: body.payment_method_options ?? null,
        payment_intent: null,
        url: `${url}/c/pay/${id}`,
        created: now(),
        expires_at: now() + 24 * 3600,
        livemode: false,
      }
      sessions.set(id, session)
      return { status: 200, body: structuredClone(session) }
    }
    if (method === 'GET' && path === '/v1/checkout/sessions') {
      const found = [...sessions.values()].filter(session => query.payment_intent === undefined || session.payment_intent === query.payment_intent)
      return { status: 200, body: list('/v1/checkout/sessions', structuredClone(found)) }
    }
    if (method === 'GET' && (match = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(path))) {
      const session = sessions.get(match[1]!)
      return session ? { status: 200, body: structuredClone(session) } : missing('checkout.session', match[1]!)
    }

    if (method === 'POST' && path === '/v1/billing_portal/sessions') {
      if (!customers.has(body.customer))
        return missing('customer', body.customer ?? '', 'customer')
      const id = newId('bps')
      const session = { id, object: 'billing_portal.session', customer: body.customer, return_url: body.return_url ?? null, url: `${url}/p/session/${id}`, created: now(), livemode: false }
      portalSessions.set(id, session)
      return { status: 200, body: session }
    }

    if (method === 'GET' && path === '/v1/invoices') {
      const found = [...invoices.values()].filter(invoice => query.customer === undefined || invoice.customer === query.customer)
        .sort((a, b) => b.created - a.created).slice(0, Number(query.limit ?? 10))
      return { status: 200, body: list('/v1/invoices', structuredClone(found)) }
    }

    if (method === 'GET' && path === '/v1/subscriptions') {
      const found = [...subscriptions.values()].filter(subscription =>
        (query.customer === undefined || subscription.customer === query.customer)
        && (query.status === 'all' || subscription.status === (query.status ?? subscription.status)) && (query.status !== undefined || subscription.status !== 'canceled'))
      return { status: 200, body: list('/v1/subscriptions', structuredClone(found)) }
    }
    if (method === 'DELETE' && (match = /^\/v1\/subscriptions\/([^/]+)$/.exec(path))) {
      const subscription = subscriptions.get(match[1]!)
      if (!subscription)
        return missing('subscription', match[1]!)
      if (subscription.status === 'canceled')
        return { status: 400, body: stripeError(400, 'This subscription is already canceled', { code: 'resource_missing' }) }
      Object.assign(subscription, { status: 'canceled', canceled_at: now(), ended_at: now() })
      return { status: 200, body: structuredClone(subscription) }
    }

    return { status: 404, body: stripeError(404, `Unrecognized request URL (${method}: ${path})`) }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = new URL(req.url ?? '/', 'http://fake')
    const method = req.method ?? 'GET'
    const raw = await readBody(req)
    const request: FakeStripeRequest = {
      method,
      path: target.pathname,
      query: decodeForm(target.search.slice(1)),
      body: raw ? decodeForm(raw) : {},
      idempotencyKey: req.headers['idempotency-key'] as string | undefined,
    }
    requests.push(request)

    const page = method === 'GET' ? /^\/c\/pay\/([^/]+)$/.exec(request.path) : null
    if (page)
      return payPage(res, page[1]!, request.query.cancel !== undefined)

    if (req.headers.authorization !== `Bearer ${secretKey}`)
      return answer(res, 401, stripeError(401, 'Invalid API Key provided'))
    const failure = failures.shift()
    if (failure)
      return answer(res, failure.status, failure.body ?? stripeError(failure.status, 'Fake failure'))

    const replayKey = method === 'POST' && request.idempotencyKey ? `${request.path} ${request.idempotencyKey}` : undefined
    const replay = replayKey ? idempotent.get(replayKey) : undefined
    if (replay)
      return answer(res, replay.status, replay.body)
    const result = route(method, request.path, request.query, request.body)
    if (replayKey)
      idempotent.set(replayKey, result)
    answer(res, result.status, result.body)
  }

  /**
   * The hosted checkout page, for a browser in local development: pays at once (or
   * cancels with `?cancel`), delivers the completion to `webhookUrl`, and sends
   * the browser back to the session's success or cancel URL.
   */
  async function payPage(res: ServerResponse, sessionId: string, cancel: boolean): Promise<void> {
    const session = sessions.get(sessionId)
    if (!session)
      return answer(res, 404, stripeError(404, `No such checkout.session: '${sessionId}'`))
    let location = session.cancel_url as string | null
    if (!cancel) {
      const completed = fake.completeSession(sessionId)
      if (fake.webhookUrl) {
        const delivered = await fake.deliver(fake.webhookUrl, fake.event('checkout.session.completed', completed))
        if (delivered.status !== 200)
          return answer(res, 502, { error: { message: `the webhook answered ${delivered.status}`, body: delivered.body } })
      }
      location = (session.success_url as string | null)?.replace('{CHECKOUT_SESSION_ID}', sessionId) ?? null
    }
    if (!location)
      return answer(res, 200, { session: sessionId, paid: !cancel })
    res.writeHead(303, { location })
    res.end()
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      answer(res, 500, stripeError(500, error instanceof Error ? error.message : String(error)))
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listenPort, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  url = `http://127.0.0.1:${port}`

  function sessionOrThrow(sessionId: string): Json {
    const session = sessions.get(sessionId)
    if (!session)
      throw new Error(`fake Stripe: no checkout session ${sessionId}`)
    return session
  }

  const fake: FakeStripe = {
    url,
    secretKey,
    webhookSecret,
    settings: { secretKey, webhookSecret, apiUrl: url },
    requests,
    webhookUrl,
    calls(method, path) {
      const pattern = new RegExp(`^${path.replace(/:[^/]+/g, '[^/]+')}$`)
      return requests.filter(request => request.method === method && pattern.test(request.path))
    },
    failNext(status, body) {
      failures.push({ status, body })
    },
    prices,
    customers,
    sessions,
    subscriptions,
    invoices,

    addPrice({ id = newId('price'), product, currency, unitAmount, currencyOptions = {}, active = true, type = 'one_time', metadata = {}, nickname = null }) {
      const price = {
        id,
        object: 'price',
        active,
        billing_scheme: 'per_unit',
        created: now(),
        currency,
        currency_options: Object.fromEntries([
          [currency, { custom_unit_amount: null, tax_behavior: 'unspecified', unit_amount: unitAmount, unit_amount_decimal: unitAmount == null ? null : String(unitAmount) }],
          ...Object.entries(currencyOptions).map(([code, amount]) => [code, { custom_unit_amount: null, tax_behavior: 'unspecified', unit_amount: amount, unit_amount_decimal: String(amount) }]),
        ]),
        custom_unit_amount: null,
        livemode: false,
        lookup_key: null,
        metadata,
        nickname,
        product,
        recurring: type === 'recurring' ? { interval: 'month', interval_count: 1, usage_type: 'licensed' } : null,
        tax_behavior: 'unspecified',
        tiers_mode: null,
        transform_quantity: null,
        type,
        unit_amount: unitAmount,
        unit_amount_decimal: unitAmount == null ? null : String(unitAmount),
      }
      prices.set(id, price)
      return price
    },

    addSubscription({ customer, status = 'active', price }) {
      const start = now()
      const id = newId('sub')
      const subscription = {
        id,
        object: 'subscription',
        customer,
        status,
        cancel_at_period_end: false,
        canceled_at: null,
        ended_at: null,
        created: start,
        start_date: start,
        metadata: {},
        livemode: false,
        items: list(`/v1/subscription_items?subscription=${id}`, [{
          id: newId('si'),
          object: 'subscription_item',
          price: price ? structuredClone(prices.get(price) ?? { id: price, object: 'price' }) : null,
          quantity: 1,
          current_period_start: start,
          current_period_end: start + 30 * 24 * 3600,
        }]),
      }
      subscriptions.set(id, subscription)
      return subscription
    },

    addInvoice({ customer, amountPaid, currency, status = 'paid', subscription }) {
      const id = newId('in')
      const invoice = {
        id,
        object: 'invoice',
        customer,
        number: `FAKE-${invoices.size + 1}`,
        status,
        amount_due: amountPaid,
        amount_paid: amountPaid,
        amount_remaining: 0,
        total: amountPaid,
        currency,
        created: now() + invoices.size,
        hosted_invoice_url: `${url}/i/${id}`,
        invoice_pdf: `${url}/i/${id}/pdf`,
        parent: subscription ? { type: 'subscription_details', quote_details: null, subscription_details: { subscription, metadata: null } } : null,
        livemode: false,
      }
      invoices.set(id, invoice)
      return invoice
    },

    completeSession(sessionId, { paymentStatus = 'paid' } = {}) {
      const session = sessionOrThrow(sessionId)
      Object.assign(session, { status: 'complete', payment_status: paymentStatus, payment_intent: session.payment_intent ?? newId('pi') })
      return structuredClone(session)
    },

    refundCharge(sessionId, amountRefunded) {
      const session = sessionOrThrow(sessionId)
      if (!session.payment_intent)
        throw new Error(`fake Stripe: session ${sessionId} has no payment yet`)
      return {
        id: `ch_${session.payment_intent.slice(3)}`,
        object: 'charge',
        amount: session.amount_total,
        amount_captured: session.amount_total,
        amount_refunded: amountRefunded,
        currency: session.currency,
        customer: session.customer,
        payment_intent: session.payment_intent,
        paid: true,
        refunded: amountRefunded >= session.amount_total,
        status: 'succeeded',
        created: now(),
        livemode: false,
        metadata: {},
      }
    },

    event(type, object) {
      return {
        id: newId('evt'),
        object: 'event',
        api_version: '2026-10-28.endive',
        created: now(),
        data: { object: structuredClone(object) },
        livemode: false,
        pending_webhooks: 1,
        request: { id: null, idempotency_key: null },
        type,
      }
    },

    sign(event, secret = webhookSecret) {
      const body = typeof event === 'string' ? event : JSON.stringify(event)
      return { body, signature: Stripe.webhooks.generateTestHeaderString({ payload: body, secret }) }
    },

    async deliver(webhookUrl, event, { signature } = {}) {
      const signed = fake.sign(event)
      const chosen = signature === undefined ? signed.signature : signature
      const response = await fetch(webhookUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json; charset=utf-8', ...(chosen === null ? {} : { 'stripe-signature': chosen }) },
        body: signed.body,
      })
      const text = await response.text()
      let body: unknown = text
      try {
        body = JSON.parse(text)
      }
      catch {
        // Not JSON: the text as is.
      }
      return { status: response.status, body }
    },

    close() {
      server.closeAllConnections()
      return new Promise<void>((resolve, reject) => server.close(error => (error ? reject(error) : resolve())))
    },
  }
  return fake
}
