import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { ApiError } from '@airi/api'
import { until } from '@airi/tooling/test/until'

import { requireConfig } from '../src/plugins/require-config.ts'
import { startTestServer, type TestServer } from './harness.ts'

describe('HTTP transport', () => {
  let server: TestServer
  beforeAll(async () => {
    // Routes of the kind later capabilities add, to exercise the shared mapping and guard.
    server = await startTestServer({
      redisUrl: false,
      extend(app, api) {
        app.get('/test/domain-error', async () => {
          throw new ApiError(402, 'INSUFFICIENT_FLUX', 'Not enough Flux', { balance: 0 })
        })
        app.get('/test/crash', async () => {
          throw new Error('secret internal detail')
        })
        app.get('/test/needs-llm', { preHandler: requireConfig(api, 'FLUX_PER_REQUEST', 'LLM_ROUTER_CONFIG') }, async () => ({ ok: true }))
        app.post('/test/echo', async request => request.body)
      },
    })
  })
  afterAll(() => server.close())

  it('maps a domain error to its status and { error: { code, message, details } }', async () => {
    const response = await server.app.inject({ method: 'GET', url: '/test/domain-error' })
    expect(response.statusCode).toBe(402)
    expect(response.json()).toEqual({ error: { code: 'INSUFFICIENT_FLUX', message: 'Not enough Flux', details: { balance: 0 } } })
  })

  it('answers an unexpected error with 500 and no internals', async () => {
    const response = await server.app.inject({ method: 'GET', url: '/test/crash' })
    expect(response.statusCode).toBe(500)
    expect(response.json()).toEqual({ error: { code: 'INTERNAL_ERROR', message: 'Internal server error' } })
    expect(response.body).not.toContain('secret')
    expect(response.body).not.toContain('at ')
  })

  it('answers malformed JSON with 400 in the same shape', async () => {
    const response = await server.app.inject({ method: 'POST', url: '/test/echo', headers: { 'content-type': 'application/json' }, payload: '{"broken"' })
    expect(response.statusCode).toBe(400)
    expect(response.json().error).toMatchObject({ code: expect.any(String), message: expect.any(String) })
  })

  it('answers an unknown route with 404 JSON', async () => {
    const response = await server.app.inject({ method: 'GET', url: '/no/such/route?x=1' })
    expect(response.statusCode).toBe(404)
    expect(response.json()).toEqual({ error: { code: 'NOT_FOUND', message: 'Route GET /no/such/route not found' } })
  })

  it('gives every response a request id, keeping the caller\'s own', async () => {
    const generated = await server.app.inject({ method: 'GET', url: '/livez' })
    expect(generated.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/)
    const given = await server.app.inject({ method: 'GET', url: '/livez', headers: { 'x-request-id': 'trace-abc' } })
    expect(given.headers['x-request-id']).toBe('trace-abc')
  })

  it('guards a route on a missing config entry with 503 naming it, and lets it through once set', async () => {
    const missing = await server.app.inject({ method: 'GET', url: '/test/needs-llm' })
    expect(missing.statusCode).toBe(503)
    expect(missing.json()).toEqual({
      error: { code: 'CONFIG_NOT_SET', message: 'Operator config entry LLM_ROUTER_CONFIG is not set', details: { key: 'LLM_ROUTER_CONFIG' } },
    })
    // The rest of the service keeps working.
    expect((await server.app.inject({ method: 'GET', url: '/' })).statusCode).toBe(200)

    await server.api.services.config.set('LLM_ROUTER_CONFIG', {
      models: { chat: { upstreams: [{ id: 'main', baseUrl: 'http://127.0.0.1:9/v1', model: 'gpt-test', keys: [{ id: 'k1', ciphertext: server.api.services.llmGateway.encryptKey('chat', 'k1', 'sk-test').ciphertext }] }] } },
    })
    const allowed = await server.app.inject({ method: 'GET', url: '/test/needs-llm' })
    expect(allowed.statusCode).toBe(200)
  })
})

describe('access log', () => {
  const lines: Array<{ msg?: string, reqId?: string, method?: string, url?: string, status?: number, ms?: number, level: number }> = []
  let server: TestServer
  beforeAll(async () => {
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as typeof lines[number]) })
    server = await startTestServer({ redisUrl: false, httpLogger: logger })
  })
  afterAll(() => server.close())

  it('writes one line per request when it ends, and none for a probe', async () => {
    await fetch(`${server.baseUrl}/readyz`)
    const response = await fetch(`${server.baseUrl}/api/v1/openai/models`, { headers: { 'x-request-id': 'access-log-1' } })
    expect(response.status).toBe(401)
    await until(() => lines.some(line => line.reqId === 'access-log-1' && line.msg === 'request'), 'the access line')
    const mine = lines.filter(line => line.reqId === 'access-log-1')
    expect(mine).toEqual([expect.objectContaining({ msg: 'request', method: 'GET', url: '/api/v1/openai/models', status: 401, ms: expect.any(Number) })])
    expect(lines.filter(line => line.url === '/readyz')).toEqual([])
    expect(lines.filter(line => line.msg === 'incoming request' || line.msg === 'request completed')).toEqual([])
  })
})
