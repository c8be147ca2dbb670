import type { FastifyPluginAsync } from 'fastify'

import { ApiError, type Api } from '@airi/api'

import { errorHandler } from './errors.ts'

export interface StripeWebhookPluginOptions {
  api: Api
}

/** The delivery itself is wrong (signature, or a signed body that is not an event): 400, never a 500 that pages someone. */
const refusedDeliveries = new Set(['INVALID_SIGNATURE', 'INVALID_EVENT'])

/**
 * `POST /webhook` (under /api/v1/stripe): Stripe's event deliveries. The signature
 * covers the exact bytes sent, so this plugin (and only it: plugins are
 * encapsulated) reads every body as a raw Buffer. A bad signature or a signed
 * body that is not an event answers 400, missing configuration 503, an event we
 * do not handle (or about a deleted account) 200; any failure while handling
 * answers 500, so Stripe delivers the event again.
 */
export const stripeWebhookPlugin: FastifyPluginAsync<StripeWebhookPluginOptions> = async (app, { api }) => {
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))

  // Anything but a refused delivery or an outage answers 500, so Stripe delivers the event again.
  app.setErrorHandler(errorHandler({
    shape: 'airi',
    shows: error => refusedDeliveries.has(error.code) || error.status === 503,
    failure: 'Stripe webhook failed; Stripe will deliver it again',
    unexpected: new ApiError(500, 'WEBHOOK_FAILED', 'The event could not be handled; it will be retried'),
  }))

  app.post('/webhook', async (request) => {
    const signature = request.headers['stripe-signature']
    const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
    const { eventId, type, outcome } = await api.services.stripe.handleWebhook(body, typeof signature === 'string' ? signature : undefined)
    request.log.info({ eventId, type, outcome }, 'Stripe event received')
    return { received: true }
  })
}
