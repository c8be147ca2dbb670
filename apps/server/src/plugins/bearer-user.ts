import type { FastifyRequest } from 'fastify'

import { ApiError, type Api, type ApiKeyScope, type AuthUser, type KeyIdentity } from '@airi/api'

import { toHeaders } from './trpc.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller, set by `requireBearerUser` on the REST plugins that use it (declared on the root: `decorateRequest`). */
    bearerUser: AuthUser | null
    /** The personal API key the caller used, when it was one (gateways only). */
    bearerKey: KeyIdentity | null
  }
}

/**
 * A preHandler for the OpenAI-style REST plugins: the shared resolver must find a
 * user, else 401. `keyScope` names the gateway: a personal API key with that scope
 * is a caller there (under its own rate limit, if it has one); without `keyScope`
 * no key is.
 */
export function requireBearerUser(api: Api, keyScope?: ApiKeyScope) {
  return async (request: FastifyRequest): Promise<void> => {
    const auth = await api.resolveAuth({ headers: toHeaders(request.headers), keyScope })
    if (!auth)
      throw new ApiError(401, 'UNAUTHORIZED', 'A valid access token is required (Authorization: Bearer …)')
    request.bearerUser = auth.user
    request.bearerKey = auth.apiKey ?? null
    if (auth.apiKey) {
      if (auth.apiKey.rateLimitPerMinute !== null)
        await api.services.rateLimits.hit('api-key', auth.apiKey.keyId, auth.apiKey.rateLimitPerMinute)
      void api.services.apiKeys.touch(auth.apiKey.keyId).catch((error: unknown) => request.log.warn({ err: error }, 'could not note an API key\'s last use'))
    }
  }
}
