import { z } from 'zod'

import { invalidStripeEvent, type Stripe } from '../../adapters/stripe.ts'

/**
 * What a verified webhook body must look like before it is handled: an event
 * envelope, and for the events we handle, the fields of the object the handler
 * reads, with their types. The signature only says who sent the body; a body that
 * is not an event (`{}`, an object missing its id, an amount that is not a number)
 * is answered 400 `INVALID_EVENT` here instead of failing half-way into a 500
 * that Stripe would redeliver for days. Objects stay loose: Stripe adds fields.
 */

const stripeId = z.string().min(1).max(255)
/** An expandable reference: the id, or the expanded object with its id. */
const ref = z.union([stripeId, z.looseObject({ id: stripeId })])
const unixSeconds = z.int().min(0)

const checkoutSession = z.looseObject({
  id: stripeId,
  object: z.literal('checkout.session'),
  status: z.string().nullish(),
  payment_status: z.string(),
  payment_intent: ref.nullish(),
})

const charge = z.looseObject({
  id: stripeId,
  object: z.literal('charge'),
  amount: z.int().min(0),
  amount_refunded: z.int().min(0),
  currency: z.string(),
  payment_intent: ref.nullish(),
})

const subscription = z.looseObject({
  id: stripeId,
  object: z.literal('subscription'),
  customer: ref,
  status: z.string(),
  cancel_at_period_end: z.boolean(),
  items: z.looseObject({
    data: z.array(z.looseObject({
      price: z.looseObject({ id: stripeId }).nullish(),
      current_period_start: unixSeconds.nullish(),
      current_period_end: unixSeconds.nullish(),
    })),
  }).nullish(),
})

const invoice = z.looseObject({
  id: stripeId.nullish(),
  object: z.literal('invoice'),
  customer: ref.nullish(),
  amount_paid: z.int().min(0),
  currency: z.string(),
  status: z.string().nullish(),
  hosted_invoice_url: z.string().nullish(),
  invoice_pdf: z.string().nullish(),
  parent: z.looseObject({
    subscription_details: z.looseObject({ subscription: ref.nullish() }).nullish(),
  }).nullish(),
})

const envelope = z.looseObject({
  id: stripeId,
  object: z.literal('event'),
  type: z.string().min(1).max(255),
  data: z.looseObject({ object: z.looseObject({}) }),
})

const handledObjects: Record<string, z.ZodType> = {
  'checkout.session.completed': checkoutSession,
  'checkout.session.async_payment_succeeded': checkoutSession,
  'checkout.session.async_payment_failed': checkoutSession,
  'checkout.session.expired': checkoutSession,
  'charge.refunded': charge,
}

/** The schema of the object an event of this type carries, when we handle it. */
function objectSchemaOf(type: string, object: Record<string, unknown>): z.ZodType | undefined {
  if (handledObjects[type])
    return handledObjects[type]
  if (type.startsWith('customer.subscription.'))
    return subscription
  // Other `invoice.*` objects (none today) are ignored by the handler, so not checked.
  if (type.startsWith('invoice.') && object.object === 'invoice')
    return invoice
  return undefined
}

/** Which fields are wrong, briefly (paths and expectations, never the values). */
function problems(error: z.ZodError): string {
  return error.issues.slice(0, 5).map(issue => `${issue.path.join('.') || '(body)'}: ${issue.code}`).join('; ')
}

/** The verified body as an event, or 400 `INVALID_EVENT` naming what is wrong. */
export function parseEvent(body: unknown): Stripe.Event {
  const event = envelope.safeParse(body)
  if (!event.success)
    throw invalidStripeEvent(`not an event envelope: ${problems(event.error)}`)
  const schema = objectSchemaOf(event.data.type, event.data.data.object)
  const object = schema?.safeParse(event.data.data.object)
  if (object && !object.success)
    throw invalidStripeEvent(`not the object a ${event.data.type} event carries: ${problems(object.error)}`)
  return body as Stripe.Event
}
