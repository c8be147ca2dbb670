import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'

import { metrics, trace } from '@opentelemetry/api'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { createKeyVault, silentLogger } from '@airi/api'
import { findFreePort } from '@airi/db'
import { createAiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeOtlp, startSilentCollector, type FakeOtlp, type ReceivedSpan } from '@airi/tooling/fakes/otlp'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { parseEnv } from '../src/env.ts'
import { startTelemetry } from '../src/telemetry.ts'
import { TEST_LLM_MASTER_KEY, uniqueEmail } from './harness.ts'

const serverDir = fileURLToPath(new URL('..', import.meta.url))
const PASSWORD = 'correct horse battery staple'

interface ServerProcess {
  child: ChildProcess
  baseUrl: string
  output: () => string
  exited: Promise<number | null>
}

/** The real server process (src/main.ts) on its own database, once /readyz answers. */
async function startServer(database: TestDatabase, env: Record<string, string>): Promise<ServerProcess> {
  const port = await findFreePort()
  const baseUrl = `http://127.0.0.1:${port}`
  let output = ''
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: serverDir,
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: database.url,
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: testRedisPrefix(),
      HOST: '127.0.0.1',
      PORT: String(port),
      API_SERVER_URL: baseUrl,
      LOG_LEVEL: 'warn',
      BETTER_AUTH_SECRET: 'test-secret-0123456789abcdefghijklmnopqrstuvwxyz',
      LLM_ROUTER_MASTER_KEY: TEST_LLM_MASTER_KEY.toString('hex'),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk))
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk))
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  await until(() => fetch(`${baseUrl}/readyz`).then(response => response.status === 200, () => false), 'the server to be ready', 180_000)
    .catch((error: Error) => {
      child.kill('SIGKILL')
      throw new Error(`${error.message}\n${output}`)
    })
  return { child, baseUrl, output: () => output, exited }
}

/** Signs up, marks the address verified (no mail server here) and signs in; returns the session token. */
async function signedInUser(server: ServerProcess, database: TestDatabase): Promise<{ email: string, token: string }> {
  const email = uniqueEmail('otel')
  const post = (path: string, body: unknown) => fetch(`${server.baseUrl}/api/auth${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': server.baseUrl }, body: JSON.stringify(body) })
  const signUp = await post('/sign-up/email', { email, password: PASSWORD, name: 'otel' })
  expect(signUp.ok, await signUp.clone().text()).toBe(true)
  await database.db.updateTable('user').set({ emailVerified: true }).where('email', '=', email).execute()
  const signIn = await post('/sign-in/email', { email, password: PASSWORD })
  expect(signIn.ok).toBe(true)
  return { email, token: signIn.headers.get('set-auth-token')! }
}

/** Routes the alias `chat` to a failing upstream, then a working one, as an operator would (keys sealed by the vault). */
async function routeChat(database: TestDatabase, first: FakeUpstream, second: FakeUpstream): Promise<void> {
  const vault = createKeyVault(TEST_LLM_MASTER_KEY)
  const upstream = (fake: FakeUpstream, id: string) => ({ id, baseUrl: fake.url, model: `${id}-model`, keys: [{ id: 'k0', ciphertext: vault.encrypt('chat', 'k0', `sk-${id}`) }] })
  const routes = { models: { chat: { upstreams: [upstream(first, 'primary'), upstream(second, 'secondary')] } } }
  await database.db.insertInto('config_entries').values({ key: 'LLM_ROUTER_CONFIG', value: JSON.stringify(routes), updated_by: null }).execute()
}

describe('OpenTelemetry export over OTLP, from the server process', () => {
  let otlp: FakeOtlp
  let primary: FakeUpstream
  let secondary: FakeUpstream
  let database: TestDatabase
  let server: ServerProcess

  beforeAll(async () => {
    ;[otlp, primary, secondary] = await Promise.all([startFakeOtlp(), startFakeOpenAIUpstream({ name: 'primary' }), startFakeOpenAIUpstream({ name: 'secondary' })])
    database = await createTestDatabase()
    await routeChat(database, primary, secondary)
    server = await startServer(database, { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_METRIC_EXPORT_INTERVAL: '300', OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_SERVICE_NAME: 'airi-under-test' })
  })
  afterAll(async () => {
    server?.child.kill('SIGKILL')
    await Promise.all([otlp?.close(), primary?.close(), secondary?.close()])
    await database?.drop()
  })

  it('exports HTTP, gen_ai and billing metrics, and a trace of the gateway call with one span per upstream attempt', async () => {
    const user = await signedInUser(server, database)
    const unknownId = randomUUID()

    // A tRPC call carrying our request id, a failed sign-in, a probe and an unmatched URL with an id in it.
    const balanceRequestId = `otel-${randomUUID()}`
    const withRequestId: typeof fetch = (input, init) => fetch(input, { ...init, headers: { ...init?.headers as Record<string, string>, 'x-request-id': balanceRequestId } })
    const client = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, fetch: withRequestId })
    expect((await client.flux.balance.query()).flux).toBeGreaterThan(0)
    const refused = await fetch(`${server.baseUrl}/api/auth/sign-in/email`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': server.baseUrl }, body: JSON.stringify({ email: user.email, password: 'wrong password' }) })
    expect(refused.status).toBe(401)
    expect((await fetch(`${server.baseUrl}/livez`)).status).toBe(200)
    expect((await fetch(`${server.baseUrl}/no-such-thing/${unknownId}`)).status).toBe(404)

    // A streamed gateway call: the first upstream fails, the second answers.
    primary.behave(() => ({ kind: 'status', status: 500 }))
    secondary.behave(() => ({ kind: 'complete', content: 'from the second upstream', usage: { prompt_tokens: 40, completion_tokens: 20 } }))
    const openai = new OpenAI({ apiKey: user.token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
    let text = ''
    for await (const chunk of await openai.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'hi' }], stream: true }))
      text += chunk.choices[0]?.delta?.content ?? ''
    expect(text).toBe('from the second upstream')

    const durations = () => otlp.points('http.server.request.duration')
    const routeOf = (route: string, status?: number) => durations().some(point => point.attributes['http.route'] === route && (status === undefined || point.attributes['http.response.status_code'] === status))
    await until(() => routeOf('/trpc/:path', 200) && routeOf('/api/auth/*', 401) && routeOf('/api/v1/openai/chat/completions', 200), 'HTTP durations by route pattern', 60_000)
    for (const point of durations()) {
      expect(String(point.attributes['http.route'] ?? '')).not.toContain(unknownId)
      expect(point.attributes['http.route']).not.toBe('/livez')
      expect(point.attributes['http.request.method']).toBeTypeOf('string')
    }
    // The unmatched URL is measured without a route.
    expect(durations().some(point => point.attributes['http.route'] === undefined && point.attributes['http.response.status_code'] === 404)).toBe(true)
    const metric = otlp.metrics.find(candidate => candidate.name === 'http.server.request.duration')!
    expect(metric).toMatchObject({ unit: 's', kind: 'histogram', resource: { 'service.name': 'airi-under-test', 'service.version': expect.any(String) } })

    await until(() => otlp.points('gen_ai.client.token.usage').some(point => point.attributes['gen_ai.token.type'] === 'output'), 'token usage', 60_000)
    expect(otlp.points('gen_ai.client.operation.duration')).toContainEqual(expect.objectContaining({
      attributes: expect.objectContaining({ 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'chat', 'gen_ai.response.model': 'secondary-model' }),
      count: 1,
    }))
    const tokens = otlp.points('gen_ai.client.token.usage').filter(point => point.attributes['gen_ai.request.model'] === 'chat')
    expect(tokens).toContainEqual(expect.objectContaining({ attributes: expect.objectContaining({ 'gen_ai.token.type': 'input' }), sum: 40 }))
    expect(tokens).toContainEqual(expect.objectContaining({ attributes: expect.objectContaining({ 'gen_ai.token.type': 'output' }), sum: 20 }))
    expect(otlp.points('gen_ai.client.first_token.duration').length).toBeGreaterThan(0)
    expect(otlp.points('airi.gen_ai.gateway.fallback.count').some(point => point.value === 1)).toBe(true)
    expect(otlp.points('airi.gen_ai.gateway.upstream.errors')).toContainEqual(expect.objectContaining({ attributes: expect.objectContaining({ 'airi.upstream.id': 'primary', 'error.type': '500' }), value: 1 }))
    await until(() => otlp.points('airi.billing.flux.consumed').some(point => (point.value ?? 0) > 0), 'Flux consumed', 60_000)
    // Counters nobody touched yet are exported at 0.
    expect(otlp.points('airi.stripe.revenue')).toContainEqual(expect.objectContaining({ value: 0 }))

    // The trace: HTTP server span → gateway span → two upstream attempts, the first failed.
    const gatewaySpan = () => otlp.spans.find(span => span.name === 'chat chat')
    await until(() => gatewaySpan() !== undefined && otlp.spans.filter(span => span.parentSpanId === gatewaySpan()!.spanId).length === 2, 'the gateway trace', 60_000)
    const gateway = gatewaySpan()!
    const attempts = otlp.spans.filter(span => span.parentSpanId === gateway.spanId).sort((a, b) => (BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1))
    expect(attempts.map(span => span.attributes['airi.upstream.id'])).toEqual(['primary', 'secondary'])
    expect(attempts[0]).toMatchObject({ kind: 3, status: { code: 2 }, attributes: { 'http.response.status_code': 500, 'error.type': '500' } })
    expect(attempts[0]!.events.map(event => event.name)).toContain('exception')
    expect(attempts[1]).toMatchObject({ status: { code: 0 }, attributes: { 'http.response.status_code': 200 } })
    expect(gateway.attributes).toMatchObject({ 'gen_ai.request.model': 'chat', 'gen_ai.response.model': 'secondary-model', 'gen_ai.usage.input_tokens': 40, 'gen_ai.usage.output_tokens': 20 })
    // The request's span ends after the stream it carried, so it may come in a later export.
    expect(gateway.parentSpanId).not.toBe('')
    await until(() => otlp.spans.some(span => span.spanId === gateway.parentSpanId), 'the gateway request\'s span', 60_000)
    const http = otlp.spans.find(span => span.spanId === gateway.parentSpanId)
    expect(http).toMatchObject({ name: 'POST /api/v1/openai/chat/completions', kind: 2, traceId: gateway.traceId, attributes: { 'http.route': '/api/v1/openai/chat/completions', 'airi.request_id': expect.any(String) } })

    // The tRPC procedure's span is a child of its HTTP request's, both with the request id.
    const procedure = (): ReceivedSpan | undefined => otlp.spans.find(span => span.name === 'trpc flux.balance' && span.attributes['airi.request_id'] === balanceRequestId)
    await until(() => procedure() !== undefined, 'the procedure span', 60_000)
    expect(otlp.spans.find(span => span.spanId === procedure()!.parentSpanId)).toMatchObject({ name: 'GET /trpc/:path', attributes: { 'airi.request_id': balanceRequestId } })
    // Probes make no spans.
    expect(otlp.spans.some(span => span.attributes['http.route'] === '/livez')).toBe(false)
  }, 300_000)
})

describe('graceful shutdown', () => {
  it('exports what is still buffered before the process exits', async () => {
    const otlp = await startFakeOtlp()
    const database = await createTestDatabase()
    try {
      // Intervals far beyond the test: only the shutdown flush can deliver.
      const server = await startServer(database, { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_METRIC_EXPORT_INTERVAL: '3600000', OTEL_BSP_SCHEDULE_DELAY: '3600000' })
      expect((await fetch(`${server.baseUrl}/trpc/meta.info`)).status).toBe(200)
      expect(otlp.requests).toEqual({ metrics: 0, traces: 0 })
      server.child.kill('SIGTERM')
      expect(await server.exited, server.output()).toBe(0)
      expect(otlp.points('http.server.request.duration').some(point => point.attributes['http.route'] === '/trpc/:path')).toBe(true)
      expect(otlp.spans.some(span => span.name === 'trpc meta.info')).toBe(true)
    }
    finally {
      await otlp.close()
      await database.drop()
    }
  }, 300_000)
})

describe('graceful shutdown with a collector that never answers', () => {
  it('gives up the flush after TELEMETRY_FLUSH_TIMEOUT_MS, not the whole shutdown deadline, and exits 0', async () => {
    const collector = await startSilentCollector()
    const database = await createTestDatabase()
    let server: ServerProcess | undefined
    try {
      server = await startServer(database, {
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_METRIC_EXPORT_INTERVAL: '3600000',
        OTEL_BSP_SCHEDULE_DELAY: '3600000',
        // The exporter's own timeout and the shutdown deadline far beyond this test's:
        // only the flush bound (1 s) can end the wait in time.
        OTEL_EXPORTER_OTLP_TIMEOUT: '600000',
        SHUTDOWN_TIMEOUT_MS: '600000',
        TELEMETRY_FLUSH_TIMEOUT_MS: '1000',
        LOG_LEVEL: 'info',
      })
      expect((await fetch(`${server.baseUrl}/trpc/meta.info`)).status).toBe(200)
      const { child, output } = server
      child.kill('SIGTERM')
      await until(() => child.exitCode !== null || child.signalCode !== null, 'the server to exit', 60_000).catch((error: Error) => {
        throw new Error(`${error.message}\n${output()}`)
      })
      expect(child.exitCode, output()).toBe(0)
      // The flush was tried (the collector saw it) and given up.
      expect(collector.connections).toBeGreaterThan(0)
      expect(output()).toContain('OpenTelemetry did not flush in time')
      expect(output()).toContain('shutdown complete')
    }
    finally {
      server?.child.kill('SIGKILL')
      await collector.close()
      await database.drop()
    }
  }, 300_000)
})

describe('without OTEL_EXPORTER_OTLP_ENDPOINT', () => {
  it('starts no SDK: the global providers stay the no-op ones', () => {
    const telemetry = startTelemetry(parseEnv({}), { name: 'airi-server', version: '0.0.0' }, silentLogger)
    expect(telemetry.enabled).toBe(false)
    expect(metrics.getMeterProvider().constructor.name).toBe('NoopMeterProvider')
    expect(trace.getTracer('airi-server').startSpan('probe').isRecording()).toBe(false)
  })

  it('exports nothing, even with the per-signal endpoints set, through a graceful shutdown', async () => {
    const otlp = await startFakeOtlp()
    const database = await createTestDatabase()
    try {
      const server = await startServer(database, { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${otlp.url}/v1/metrics`, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otlp.url}/v1/traces`, OTEL_METRIC_EXPORT_INTERVAL: '100' })
      expect((await fetch(`${server.baseUrl}/trpc/meta.info`)).status).toBe(200)
      server.child.kill('SIGTERM')
      expect(await server.exited, server.output()).toBe(0)
      expect(otlp.requests).toEqual({ metrics: 0, traces: 0 })
    }
    finally {
      await otlp.close()
      await database.drop()
    }
  }, 300_000)
})
