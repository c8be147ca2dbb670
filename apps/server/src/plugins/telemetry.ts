import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span } from '@opentelemetry/api'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

import { recordFailure, tracer, type Metrics } from '@airi/api'

/** Probes are polled by the orchestrator every few seconds; they would drown the real traffic. */
const UNMEASURED = new Set(['/livez', '/readyz'])

interface Measured {
  span: Span
  context: Context
  startedAt: number
  method: string
  route: string | undefined
}

/**
 * HTTP metrics, spans and one access log line for every request but probes and WebSocket upgrades
 * (those count in `ws.connections.active`): `http.server.request.duration` by
 * method, route pattern and status, `http.server.active_requests`, and a server
 * span (continuing an incoming `traceparent`) that is the active span in the route
 * handler, so tRPC procedure and gateway spans become its children.
 *
 * Registered on the root before any route is declared (its onRoute hook only sees
 * routes declared after it).
 */
export const telemetryPlugin = fp<{ metrics: Metrics }>(async (app, { metrics }) => {
  const measured = new WeakMap<FastifyRequest, Measured>()

  // Body parsing loses the async context, so the handler is re-entered in the request's.
  app.addHook('onRoute', (route) => {
    const handler = route.handler
    route.handler = function (this: FastifyInstance, ...args: Parameters<typeof handler>) {
      const state = measured.get(args[0])
      return state ? context.with(state.context, () => handler.apply(this, args)) : handler.apply(this, args)
    } as typeof handler
  })

  app.addHook('onRequest', (request, reply, done) => {
    const route = request.routeOptions.url
    if ((route && UNMEASURED.has(route)) || request.headers.upgrade !== undefined) {
      done()
      return
    }
    const method = request.method
    const parent = propagation.extract(ROOT_CONTEXT, request.headers)
    const span = tracer.startSpan(route ? `${method} ${route}` : method, {
      kind: SpanKind.SERVER,
      attributes: {
        'http.request.method': method,
        'url.path': request.url.split('?')[0],
        ...(route ? { 'http.route': route } : {}),
        'airi.request_id': request.id,
      },
    }, parent)
    request.log.debug({ method, url: request.url }, 'request started')
    const state: Measured = { span, context: trace.setSpan(parent, span), startedAt: performance.now(), method, route }
    measured.set(request, state)
    metrics.httpActive.add(1, { 'http.request.method': method })

    // 'close' comes after the last byte, or when the client left first (onResponse would not run then).
    reply.raw.once('close', () => {
      const status = reply.raw.statusCode
      const attributes = { 'http.request.method': method, 'http.response.status_code': status, ...(route ? { 'http.route': route } : {}) }
      const ms = performance.now() - state.startedAt
      metrics.httpDuration.record(ms / 1000, attributes)
      // The one access line of a request (Fastify's own two are off: buildServer).
      request.log.info({ method, url: request.url, status, ms: Math.round(ms * 10) / 10, ...(reply.raw.writableFinished ? {} : { aborted: true }) }, 'request')
      metrics.httpActive.add(-1, { 'http.request.method': method })
      span.setAttribute('http.response.status_code', status)
      if (!reply.raw.writableFinished)
        span.setAttribute('airi.client_aborted', true)
      if (status >= 500)
        span.setStatus({ code: SpanStatusCode.ERROR })
      span.end()
    })
    context.with(state.context, done)
  })

  app.addHook('onError', (request, _reply, error, done) => {
    const state = measured.get(request)
    if (state)
      recordFailure(state.span, error, error.statusCode ?? 500)
    done()
  })
}, { name: 'telemetry' })
