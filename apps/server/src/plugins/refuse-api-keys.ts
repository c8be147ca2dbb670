import type { FastifyRequest } from 'fastify'

import { ApiError } from '@airi/api'

/**
 * An onRequest hook for everything a personal API key must not reach (tRPC,
 * /api/auth/*): 401 at once, before any procedure runs, public ones included.
 */
export async function refuseApiKeys(request: FastifyRequest): Promise<void> {
  if (/^Bearer\s+airi_sk_/i.test(request.headers.authorization ?? ''))
    throw new ApiError(401, 'UNAUTHORIZED', 'API keys work only on the OpenAI-compatible gateways (/api/v1/openai, /api/v1/audio); sign in to use this')
}
