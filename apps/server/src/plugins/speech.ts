import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { z } from 'zod'

import { speechRequestSchema, type Api } from '@airi/api'

import { requireBearerUser } from './bearer-user.ts'
import { errorHandler } from './errors.ts'
import { requireConfig } from './require-config.ts'
import { clientGone } from './client-gone.ts'
import { parseOrBadRequest } from './validation.ts'

export interface SpeechPluginOptions {
  api: Api
}

const catalogueQuery = z.object({
  model: z.string().min(1).max(200).optional(),
})

/**
 * Speech at /api/v1/audio (SPEC §4.6): OpenAI-compatible synthesis and the voice
 * and model catalogues, with bearer auth through the shared resolver and errors in
 * OpenAI's shape, like the LLM gateway.
 */
export const speechPlugin: FastifyPluginAsync<SpeechPluginOptions> = async (app, { api }) => {
  const speech = api.services.speech
  app.setErrorHandler(errorHandler({ shape: 'openai', failure: 'speech request failed' }))

  app.addHook('preHandler', requireBearerUser(api, 'speech'))

  const tts = { preHandler: requireConfig(api, 'TTS_UPSTREAMS') }
  // TTS_RATE_LIMIT_PER_MINUTE per user on synthesis (the catalogues are cached reads).
  const synthesis = { preHandler: [tts.preHandler, async (request: FastifyRequest) => api.services.rateLimits.hit('speech', request.bearerUser!.id)] }
  const streaming = { preHandler: requireConfig(api, 'STREAMING_TTS_UPSTREAM') }

  app.post('/speech', synthesis, async (request, reply) => {
    const body = parseOrBadRequest(speechRequestSchema, request.body)
    // A client that goes away stops the upstream call; nothing is billed then.
    const gone = clientGone(reply)
    const result = await speech.synthesize(request.bearerUser!.id, body, gone, request.bearerKey ?? undefined)
    return reply.header('content-type', result.contentType).send(result.audio)
  })

  app.get('/voices', tts, async request => speech.listVoices(parseOrBadRequest(catalogueQuery, request.query).model))
  app.get('/models', tts, async () => speech.listModels())
  app.get('/voices/streaming', streaming, async request => speech.listStreamingVoices(parseOrBadRequest(catalogueQuery, request.query).model))
  app.get('/models/streaming', streaming, async () => speech.listStreamingModels())
}
