import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'

import { AUTH_BASE_PATH, ELECTRON_RELAY_PATH, surfaceOutage, type Api } from '@airi/api'

import { escapeHtml, sendPage } from '../html.ts'
import { refuseApiKeys } from './refuse-api-keys.ts'
import { toHeaders } from './trpc.ts'

export interface AuthPluginOptions {
  api: Api
}

/** Turns a Fastify request into the Fetch `Request` better-auth's handler takes. */
function toFetchRequest(request: FastifyRequest): Request {
  const url = new URL(request.url, `${request.protocol}://${request.host}`)
  const hasBody = request.method !== 'GET' && request.method !== 'HEAD' && Buffer.isBuffer(request.body)
  return new Request(url, { method: request.method, headers: toHeaders(request.headers), body: hasBody ? (request.body as Buffer) : undefined })
}

/** Copies a Fetch `Response` (status, headers with every Set-Cookie, body) onto the reply. */
export async function sendFetchResponse(reply: FastifyReply, response: Response): Promise<FastifyReply> {
  reply.status(response.status)
  response.headers.forEach((value, name) => {
    if (name !== 'set-cookie')
      reply.header(name, value)
  })
  const cookies = response.headers.getSetCookie()
  if (cookies.length > 0)
    reply.header('set-cookie', cookies)
  return reply.send(response.body ? Buffer.from(await response.arrayBuffer()) : undefined)
}

/** `{port}:{state}` as the desktop app puts it in `state`; the port must be an unprivileged one. */
function parseRelayState(state: string | undefined): { port: number, state: string } | undefined {
  const match = /^(\d{1,5}):(.*)$/s.exec(state ?? '')
  if (!match)
    return undefined
  const port = Number(match[1])
  return port >= 1024 && port <= 65_535 ? { port, state: match[2]! } : undefined
}

/**
 * better-auth at /api/auth/* (sign-up, sign-in, e-mail flows, sessions, the
 * OAuth 2.1 / OIDC provider, JWKS), behind a rate limit per client address, and
 * the desktop relay page.
 */
export const authPlugin: FastifyPluginAsync<AuthPluginOptions> = async (app, { api }) => {
  // better-auth reads the raw body itself.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))

  // AUTH_RATE_LIMIT_PER_MINUTE per client address; its policy (and what happens without Redis) is the rate-limit service's.
  app.addHook('onRequest', async request => api.services.rateLimits.hit('auth', request.ip))
  // A personal API key is for the gateways only: here it is refused, not taken for a session token.
  app.addHook('onRequest', refuseApiKeys)

  /**
   * The desktop app listens on a loopback port that changes between runs, so it
   * registers this page as its redirect URI and carries the port in `state`.
   */
  app.get(ELECTRON_RELAY_PATH, async (request, reply) => {
    const query = request.query as Record<string, string | undefined>
    const relay = parseRelayState(query.state)
    if (!relay) {
      return sendPage(reply.status(400), 'Sign-in failed', `<h1>Sign-in failed</h1><p>The sign-in response did not name a valid local port (expected <code>state</code> as <code>{port}:{state}</code>, port 1024–65535).</p>`)
    }
    const target = new URL(`http://127.0.0.1:${relay.port}/callback`)
    for (const [name, value] of Object.entries(query)) {
      if (typeof value === 'string')
        target.searchParams.set(name, name === 'state' ? relay.state : value)
    }
    const href = escapeHtml(target.toString())
    return sendPage(reply, 'Returning to AIRI', `<h1>Returning to AIRI…</h1><p>If the app does not open, <a href="${href}">continue here</a>. You can close this window afterwards.</p>`, {
      head: `<meta http-equiv="refresh" content="0;url=${href}">`,
      script: `location.replace(${JSON.stringify(target.toString()).replace(/</g, '\\u003c')})`,
    })
  })

  app.route({
    method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: `${AUTH_BASE_PATH}/*`,
    handler: async (request, reply) => {
      // A failure that ran into Postgres out of reach throws the database's error,
      // which the host's error handler answers with 503.
      const response = await surfaceOutage(() => api.auth.handler(toFetchRequest(request)), answer => answer.status >= 500)
      return sendFetchResponse(reply, response)
    },
  })
}
