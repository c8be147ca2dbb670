import type { FastifyPluginAsync } from 'fastify'

import { ApiError, outageError, retryAfterSeconds, toHttpErrorBody, type Api } from '@airi/api'

export interface StripeWebhookPluginOptions {
  api: Api
}

/**
 * `POST /webhook` (under /api/v1/stripe): Stripe's event deliveries. The signature
 * covers the exact bytes sent, so this plugin (and only it: plugins are
 * encapsulated) reads every body as a raw Buffer. A bad signature or a signed
 * body that is not an event answers 400, missing configuration 503, an event we
 * do not handle (or about a deleted account) 200; any failure while handling
 * answers 500, so Stripe delivers the event again.
 */
/** The delivery itself is wrong (signature, or a signed body that is not an event): 400, never a 500 that pages someone. */
const refusedDeliveries = new Set(['INVALID_SIGNATURE', 'INVALID_EVENT'])

export const stripeWebhookPlugin: FastifyPluginAsync<StripeWebhookPluginOptions> = async (app, { api }) => {
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))

  app.setErrorHandler((error: Error & { statusCode?: number }, request, reply) => {
    const known = error instanceof ApiError && (refusedDeliveries.has(error.code) || error.status === 503) ? error : outageError(error)
    if (known) {
      const retryAfter = retryAfterSeconds(known)
      if (retryAfter !== undefined)
        reply.header('retry-after', retryAfter)
      return reply.status(known.status).send(toHttpErrorBody(known))
    }
    // Fastify's own refusals (body too large, …): the delivery itself is wrong.
    if (!(error instanceof ApiError) && error.statusCode && error.statusCode >= 400 && error.statusCode < 500)
      return reply.status(error.statusCode).send(toHttpErrorBody(new ApiError(error.statusCode, 'BAD_REQUEST', error.message)))
    request.log.error({ err: error }, 'Stripe webhook failed; Stripe will deliver it again')
    return reply.status(500).send(toHttpErrorBody(new ApiError(500, 'WEBHOOK_FAILED', 'The event could not be handled; it will be retried')))
  })

  app.post('/webhook', async (request) => {
    const signature = request.headers['stripe-signature']
    const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
    const { eventId, type, outcome } = await api.services.stripe.handleWebhook(body, typeof signature === 'string' ? signature : undefined)
    request.log.info({ eventId, type, outcome }, 'Stripe event received')
    return { received: true }
  })
}
