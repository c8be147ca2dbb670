import { once } from 'node:events'

import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { z } from 'zod'

import type { Api } from '@airi/api'

import { requireBearerUser } from './bearer-user.ts'
import { errorHandler } from './errors.ts'
import { clientGone } from './client-gone.ts'
import { parseOrBadRequest } from './validation.ts'

export interface GatewayPluginOptions {
  api: Api
}

const chatCompletionBody = z.looseObject({
  model: z.string().min(1).max(200),
  messages: z.array(z.unknown()).min(1).max(10_000),
  stream: z.boolean().nullish(),
  stream_options: z.record(z.string(), z.unknown()).nullish(),
  // The reservation is sized on these (docs/gateway.md), so they must be numbers it can price.
  max_tokens: z.number().int().positive().max(1_000_000).nullish(),
  max_completion_tokens: z.number().int().positive().max(1_000_000).nullish(),
  n: z.number().int().min(1).max(128).nullish(),
})

/** Bounds of one embeddings request (docs/gateway.md#embeddings): OpenAI's own count of inputs, characters for its tokens. */
const EMBEDDING_INPUTS_MAX = 2048
const EMBEDDING_INPUT_CHARS_MAX = 32_768
const EMBEDDING_TOTAL_CHARS_MAX = 1_048_576

const embeddingText = z.string().min(1).max(EMBEDDING_INPUT_CHARS_MAX)
const embeddingsBody = z.looseObject({
  model: z.string().min(1).max(200),
  input: z.union([embeddingText, z.array(embeddingText).min(1).max(EMBEDDING_INPUTS_MAX)])
    .refine(input => (typeof input === 'string' ? input.length : input.reduce((sum, text) => sum + text.length, 0)) <= EMBEDDING_TOTAL_CHARS_MAX, { message: `the inputs may hold ${EMBEDDING_TOTAL_CHARS_MAX} characters in all` }),
  // The official client asks for base64 unless told otherwise; both pass through to the upstream.
  encoding_format: z.enum(['float', 'base64']).nullish(),
  dimensions: z.number().int().positive().max(65_536).nullish(),
})

/**
 * The OpenAI-compatible LLM gateway at /api/v1/openai: bearer auth through the
 * shared resolver, errors in OpenAI's shape, SSE relayed as it arrives, and the
 * upstream call aborted when the client goes away.
 */
export const gatewayPlugin: FastifyPluginAsync<GatewayPluginOptions> = async (app, { api }) => {
  app.setErrorHandler(errorHandler({ shape: 'openai', failure: 'gateway request failed' }))

  app.addHook('preHandler', requireBearerUser(api, 'llm'))

  // Shutdown has begun: no new calls; streams under way may finish within the host's deadline.
  app.addHook('preClose', async () => {
    api.services.llmGateway.stopAccepting()
  })

  app.get('/models', async () => api.services.llmGateway.listModels())

  // Conversations can be long; the default 1 MiB body limit is too tight.
  app.post('/chat/completions', { bodyLimit: 16 * 1024 * 1024 }, async (request, reply: FastifyReply) => {
    const body = parseOrBadRequest(chatCompletionBody, request.body)
    // LLM_RATE_LIMIT_PER_MINUTE per user: 429 in OpenAI's shape with retry-after. Its
    // round trip runs while the call is prepared (the prompt counted) and is awaited
    // before anything is reserved; caught here so an earlier refusal leaves it handled.
    const admitted = api.services.rateLimits.hit('gateway', request.bearerUser!.id)
    admitted.catch(() => {})

    // The client going away aborts the upstream call and ends the billing as it stands.
    const gone = clientGone(reply)

    const result = await api.services.llmGateway.complete(request.bearerUser!.id, body, gone, { admitted, apiKey: request.bearerKey ?? undefined })
    if (result.kind === 'json')
      return reply.type('application/json; charset=utf-8').send(result.text)

    reply.hijack()
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'connection': 'keep-alive',
      'x-request-id': String(request.id),
    })
    // Waiting on a slow reader ends when the client leaves or the call is cut short:
    // the call's signal is built on the client's, so it aborts on either.
    const stop = result.signal
    try {
      for await (const chunk of result.chunks) {
        if (gone.aborted)
          break
        // A client reading slower than the upstream writes holds the upstream back,
        // instead of the answer piling up in this process.
        if (!reply.raw.write(chunk) && !await drained(reply.raw, stop))
          break
      }
    }
    finally {
      reply.raw.end()
    }
  })

  // 2 048 inputs of 32 768 characters, escaped as JSON, fit in 8 MiB only when the total bound holds.
  app.post('/embeddings', { bodyLimit: 8 * 1024 * 1024 }, async (request, reply: FastifyReply) => {
    const body = parseOrBadRequest(embeddingsBody, request.body)
    // The same per-user limit as chat completions, counted while the input is.
    const admitted = api.services.rateLimits.hit('gateway', request.bearerUser!.id)
    admitted.catch(() => {})
    const gone = clientGone(reply)
    const text = await api.services.llmGateway.embed(request.bearerUser!.id, body, gone, { admitted, apiKey: request.bearerKey ?? undefined })
    return reply.type('application/json; charset=utf-8').send(text)
  })
}

/** Resolves true once `stream` can take more, false if `signal` aborts first. */
async function drained(stream: NodeJS.WritableStream, signal: AbortSignal): Promise<boolean> {
  try {
    await once(stream, 'drain', { signal })
    return true
  }
  catch {
    return false
  }
}
