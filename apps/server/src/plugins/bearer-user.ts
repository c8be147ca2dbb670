import type { FastifyRequest } from 'fastify'

import { ApiError, type Api, type AuthUser } from '@airi/api'

import { toHeaders } from './trpc.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller, set by `requireBearerUser` on the REST plugins that use it (declared on the root: `decorateRequest`). */
    bearerUser: AuthUser | null
  }
}

/** A preHandler for the OpenAI-style REST plugins: the shared resolver must find a user, else 401. */
export function requireBearerUser(api: Api) {
  return async (request: FastifyRequest): Promise<void> => {
    const auth = await api.resolveAuth({ headers: toHeaders(request.headers) })
    if (!auth)
      throw new ApiError(401, 'UNAUTHORIZED', 'A valid access token is required (Authorization: Bearer …)')
    request.bearerUser = auth.user
  }
}
