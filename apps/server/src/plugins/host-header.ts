import fp from 'fastify-plugin'

import { ApiError } from '@airi/api'

/** Probe routes (plugins/probes.ts) answer whatever the Host: a load balancer's health check must never fail over it. */
const ANY_HOST_ROUTES = new Set(['/', '/livez', '/readyz'])

/** An explicit port, after the host name or a bracketed IPv6 address. */
const EXPLICIT_PORT = /^(?:\[[^\]]*\]|[^:]*):(\d*)$/

/**
 * Whether `host` (a Host header, or a trusted proxy's X-Forwarded-Host) names a
 * host and an optional port and nothing else, so that the URLs built from it
 * (better-auth's, tRPC's) are the ones the client asked for.
 */
function isValidHost(host: string): boolean {
  // Visible ASCII only, and none of what would start userinfo, a path, a query, a fragment or an escape.
  if (!/^[\x21-\x7E]+$/.test(host) || /[@/\\?#%]/.test(host))
    return false
  let url: URL
  try {
    url = new URL(`http://${host}`)
  }
  catch {
    return false
  }
  const port = EXPLICIT_PORT.exec(host)?.[1]
  if (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65_535))
    return false
  return url.hostname !== '' && url.username === '' && url.password === '' && url.pathname === '/' && url.search === '' && url.hash === ''
}

/**
 * Refuses a request whose Host cannot be an origin with 400 `INVALID_HOST`, before
 * any route builds a URL from it (that threw, and answered 500 with an error log
 * that anyone could repeat to raise the 5xx alert).
 */
export const hostHeaderPlugin = fp(async (app) => {
  app.addHook('onRequest', async (request) => {
    if (ANY_HOST_ROUTES.has(request.routeOptions.url ?? '') || isValidHost(request.host))
      return
    throw new ApiError(400, 'INVALID_HOST', 'The Host header is not a valid host[:port]')
  })
}, { name: 'host-header' })
