import { randomUUID } from 'node:crypto'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeStripe, type FakeStripe } from '@airi/tooling/fakes/stripe'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'
import { createTestMeter, type TestMetricReader } from '@airi/tooling/test/metrics'
import { startTcpProxy, type TcpProxy } from '@airi/tooling/test/tcp-proxy'
import { createTestDatabase, testRedisPrefix } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Per-user rate limits (SPEC §4.9). The window is an hour here, so no window ends
 * halfway through a test on a slow machine; one test keeps the real minute and
 * tolerates a window rolling over.
 */
const HOUR = 3600

let upstream: FakeUpstream
const closers: Array<() => Promise<unknown>> = []
beforeAll(async () => {
  upstream = await startFakeOpenAIUpstream({ name: 'limits' })
})
afterAll(async () => {
  for (const close of closers.reverse())
    await close()
  await upstream.close()
})

async function serve(options: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
  const server = await startTestServer(options)
  closers.push(() => server.close())
  return server
}

/** Points the `chat` alias at the fake upstream (in the server's database, so every instance on it sees it). */
async function routeChat(server: TestServer): Promise<void> {
  const sealed = server.api.services.llmGateway.encryptKey('chat', 'k0', 'sk-limits')
  await server.api.services.config.set('LLM_ROUTER_CONFIG', {
    models: { chat: { upstreams: [{ id: `limits-${randomUUID().slice(0, 8)}`, baseUrl: upstream.url, model: 'limits-model', keys: [{ id: sealed.keyId, ciphertext: sealed.ciphertext }] }] } },
  })
}

/** What a plain HTTP client sees of a call: status, retry-after and the JSON body. */
interface Answer {
  status: number
  retryAfter: string | null
  body: { error?: Record<string, unknown> } & Record<string, unknown>
}

/** One chat completion through the gateway as a plain HTTP client sees it. */
async function complete(server: TestServer, user: TestUser): Promise<Answer> {
  const response = await fetch(`${server.baseUrl}/api/v1/openai/chat/completions`, {
    method: 'POST',
    headers: { 'authorization': `Bearer ${user.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'chat', messages: [{ role: 'user', content: 'hi' }] }),
  })
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: await response.json() as Answer['body'] }
}

/** `airi.rate_limit.blocked` for one route. */
async function blocked(reader: TestMetricReader, route: string): Promise<number> {
  const { resourceMetrics } = await reader.collect()
  const metric = resourceMetrics.scopeMetrics.flatMap(scope => scope.metrics).find(candidate => candidate.descriptor.name === 'airi.rate_limit.blocked')
  return (metric?.dataPoints ?? []).filter(point => point.attributes['airi.rate_limit.route'] === route).reduce((sum, point) => sum + (point.value as number), 0)
}

/** The OpenAI-shaped 429 every limited REST route answers. */
function expectRateLimited(result: Answer, limit: number, windowSeconds = HOUR) {
  expect(result.status).toBe(429)
  expect(Number(result.retryAfter)).toBeGreaterThanOrEqual(1)
  expect(Number(result.retryAfter)).toBeLessThanOrEqual(windowSeconds)
  expect(result.body).toEqual({
    error: {
      message: expect.stringMatching(/rate limit/i),
      type: 'rate_limit_error',
      code: 'RATE_LIMITED',
      param: null,
      details: { retryAfterSeconds: Number(result.retryAfter), limit },
    },
  })
}

describe('the LLM gateway', () => {
  it('answers the 61st call of a user within the window with 429, retry-after and an OpenAI-shaped error, counted', async () => {
    const { reader, meter } = createTestMeter()
    const server = await serve({ meter, rateLimits: { windowSeconds: HOUR } })
    await routeChat(server)
    const [user, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
    upstream.reset()

    for (let round = 0; round < 6; round++) {
      const results = await Promise.all(Array.from({ length: 10 }, () => complete(server, user)))
      expect(results.map(result => result.status)).toEqual(Array.from({ length: 10 }, () => 200))
    }
    expect(await blocked(reader, 'gateway')).toBe(0)
    const balance = await server.api.services.billing.getBalance(user.id)

    const refused = await complete(server, user)
    expectRateLimited(refused, 60)
    expect(await blocked(reader, 'gateway')).toBe(1)
    // Refused before any upstream call or billing.
    expect(upstream.requests).toHaveLength(60)
    expect(await server.api.services.billing.getBalance(user.id)).toBe(balance)

    // The official client surfaces it as its RateLimitError.
    const client = new OpenAI({ apiKey: user.token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
    const error = await client.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'hi' }] }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.RateLimitError)
    expect(error).toMatchObject({ status: 429, code: 'RATE_LIMITED', type: 'rate_limit_error' })
    expect(await blocked(reader, 'gateway')).toBe(2)

    // Per user: someone else is not affected.
    expect((await complete(server, other)).status).toBe(200)
  })

  it('shares the limit between two instances on one Redis: 30 on A, the 31st on B is refused', async () => {
    const database = await createTestDatabase()
    closers.push(() => database.drop())
    const redisPrefix = testRedisPrefix()
    const rateLimits = { limits: { gateway: 30 }, windowSeconds: HOUR }
    const { reader, meter } = createTestMeter()
    const a = await serve({ database, redisPrefix, rateLimits })
    const b = await serve({ database, redisPrefix, rateLimits, meter })
    await routeChat(a)
    const user = await createVerifiedUser(a)

    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(Array.from({ length: 10 }, () => complete(a, user)))
      expect(results.map(result => result.status)).toEqual(Array.from({ length: 10 }, () => 200))
    }
    expectRateLimited(await complete(b, user), 30)
    expect(await blocked(reader, 'gateway')).toBe(1)
  })

  it('keeps the real one-minute window: retry-after counts down to its end', async () => {
    const server = await serve({ rateLimits: { limits: { gateway: 2 } } })
    await routeChat(server)
    const user = await createVerifiedUser(server)

    // A window may end between the calls on a slow machine; then the next one starts fresh.
    let refused: Answer | undefined
    for (let attempt = 0; attempt < 2 && !refused; attempt++) {
      const results = [await complete(server, user), await complete(server, user), await complete(server, user)]
      refused = results.find(result => result.status === 429)
    }
    expect(refused).toBeDefined()
    expectRateLimited(refused!, 2, 60)
  })

  it('answers 503 with retry-after when the counter store (Redis) cannot be reached', async () => {
    const redisUrl = new URL(inject('redisUrl'))
    const proxy: TcpProxy = await startTcpProxy(Number(redisUrl.port))
    closers.push(() => proxy.close())
    redisUrl.port = String(proxy.port)
    const server = await serve({ redisUrl: redisUrl.toString(), rateLimits: { windowSeconds: HOUR } })
    await routeChat(server)
    const user = await createVerifiedUser(server)
    expect((await complete(server, user)).status).toBe(200)

    await proxy.cut()
    let result = await complete(server, user)
    await until(async () => (result = await complete(server, user)).status === 503, 'a 503 while Redis is cut')
    expect(result.retryAfter).toBe('5')
    expect(result.body.error).toMatchObject({ type: 'api_error', code: 'SERVICE_UNAVAILABLE' })

    await proxy.restore()
    await until(async () => (await complete(server, user)).status === 200, 'calls served again once Redis is back')
  })
})

describe('speech REST', () => {
  let tts: FakeTtsUpstream
  beforeAll(async () => {
    tts = await startFakeTtsUpstream()
  })
  afterAll(async () => {
    await tts.close()
  })

  it('answers the call past TTS_RATE_LIMIT_PER_MINUTE with 429 in OpenAI\'s shape; the catalogues are not limited', async () => {
    const { reader, meter } = createTestMeter()
    const server = await serve({ meter, rateLimits: { limits: { speech: 3 }, windowSeconds: HOUR } })
    const sealed = server.api.services.llmGateway.encryptKey('voice', 'k0', 'sk-tts')
    await server.api.services.config.set('TTS_UPSTREAMS', {
      defaultModel: 'voice',
      models: { voice: { adapter: 'openai-compatible', baseUrl: tts.url, model: 'upstream-tts', keys: [{ id: sealed.keyId, ciphertext: sealed.ciphertext }] } },
    })
    const user = await createVerifiedUser(server)
    const speak = async () => {
      const response = await fetch(`${server.baseUrl}/api/v1/audio/speech`, {
        method: 'POST',
        headers: { 'authorization': `Bearer ${user.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'voice', voice: 'alloy', input: 'Hello.' }),
      })
      const bytes = Buffer.from(await response.arrayBuffer())
      return { status: response.status, retryAfter: response.headers.get('retry-after'), body: response.ok ? bytes : JSON.parse(bytes.toString('utf8')) }
    }

    for (let call = 0; call < 3; call++)
      expect((await speak()).status).toBe(200)
    expectRateLimited(await speak(), 3)
    expect(await blocked(reader, 'speech')).toBe(1)
    expect(tts.requests).toHaveLength(3)

    const models = await fetch(`${server.baseUrl}/api/v1/audio/models`, { headers: { authorization: `Bearer ${user.token}` } })
    expect(models.status).toBe(200)
  })
})

describe('tRPC: checkout and speech tickets', () => {
  let stripe: FakeStripe
  let server: TestServer
  const { reader, meter } = createTestMeter()
  beforeAll(async () => {
    stripe = await startFakeStripe()
    server = await serve({ stripe: stripe.settings, meter, rateLimits: { limits: { 'speech-ticket': 2 }, windowSeconds: HOUR } })
  })
  afterAll(async () => {
    await stripe.close()
  })

  it('refuses the 11th checkout of a user with TOO_MANY_REQUESTS / RATE_LIMITED and retry-after', async () => {
    await server.api.services.config.set('STRIPE_FLUX_PRODUCT_ID', 'prod_limits')
    const price = stripe.addPrice({ product: 'prod_limits', currency: 'usd', unitAmount: 300, metadata: { fluxAmount: '300' } }).id
    const user = await createVerifiedUser(server)
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    const checkout = () => sdk.billing.checkout.mutate({ stripePriceId: price, returnUrl: `${server.baseUrl}/app/flux` })

    for (let call = 0; call < 10; call++)
      await checkout()
    const sessionsBefore = stripe.sessions.size

    const error = await failure(checkout())
    expect(error.data).toMatchObject({ httpStatus: 429, code: 'TOO_MANY_REQUESTS', apiCode: 'RATE_LIMITED', details: { limit: 10 } })
    expect(error.data?.details?.retryAfterSeconds).toBeGreaterThanOrEqual(1)
    expect(stripe.sessions.size).toBe(sessionsBefore)
    expect(await blocked(reader, 'checkout')).toBe(1)

    // The retry-after header, as a plain HTTP client sees it.
    const raw = await fetch(`${server.baseUrl}/trpc/billing.checkout`, {
      method: 'POST',
      headers: { 'authorization': `Bearer ${user.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ json: { stripePriceId: price, returnUrl: `${server.baseUrl}/app/flux` } }),
    })
    expect(raw.status).toBe(429)
    expect(Number(raw.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
  })

  it('refuses speech tickets past the limit through the shared service', async () => {
    const user = await createVerifiedUser(server)
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    await sdk.audio.createSpeechTicket.mutate()
    await sdk.audio.createSpeechTicket.mutate()
    const error = await failure(sdk.audio.createSpeechTicket.mutate())
    expect(error.data).toMatchObject({ httpStatus: 429, code: 'TOO_MANY_REQUESTS', apiCode: 'RATE_LIMITED', details: { limit: 2 } })
    expect(await blocked(reader, 'speech-ticket')).toBe(1)
  })
})

describe('chat messages (issue 20)', () => {
  it('refuses the send past CHAT_RATE_LIMIT_PER_MINUTE with TOO_MANY_REQUESTS / RATE_LIMITED, storing nothing; a resend counts', async () => {
    const { reader, meter } = createTestMeter()
    const server = await serve({ meter, rateLimits: { limits: { 'chat-messages': 3 }, windowSeconds: HOUR } })
    const [user, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    const chat = await sdk.chats.create.mutate({ type: 'group', title: 'limited', members: [{ type: 'user', id: other.id }] })
    const first = { id: randomUUID(), role: 'user' as const, content: 'one' }

    await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [first] })
    await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'two' }] })
    // A resend stores nothing but still takes the chat's lock: it counts.
    await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [first] })
    const error = await failure(sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'three' }] }))
    expect(error.data).toMatchObject({ httpStatus: 429, code: 'TOO_MANY_REQUESTS', apiCode: 'RATE_LIMITED', details: { limit: 3 } })
    expect(error.data?.details?.retryAfterSeconds).toBeGreaterThanOrEqual(1)
    expect(error.message).toMatch(/message sends/)
    expect(await blocked(reader, 'chat-messages')).toBe(1)
    expect((await sdk.chats.pullMessages.query({ chatId: chat.id })).messages.map(message => message.content)).toEqual(['one', 'two'])

    // Per user: the other member still writes.
    const otherSdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => other.token })
    await otherSdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'four' }] })
  })

  it('lets sends through while the counter store (Redis) is down: chat keeps working through an outage', async () => {
    const redisUrl = new URL(inject('redisUrl'))
    const proxy: TcpProxy = await startTcpProxy(Number(redisUrl.port))
    closers.push(() => proxy.close())
    redisUrl.port = String(proxy.port)
    const server = await serve({ redisUrl: redisUrl.toString(), rateLimits: { limits: { 'chat-messages': 100 }, windowSeconds: HOUR } })
    const user = await createVerifiedUser(server)
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    const chat = await sdk.chats.create.mutate({ type: 'group', title: 'outage', members: [] })

    await proxy.cut()
    await until(async () => (await fetch(`${server.baseUrl}/readyz`)).status === 503, 'the server to see Redis gone')
    const sent = await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'user', content: 'during the outage' }] })
    expect(sent.messages.map(message => message.content)).toEqual(['during the outage'])
    await proxy.restore()
  })
})

describe('/api/auth/* per address', () => {
  it('lets requests through while the counter store (Redis) is down: people can still sign in', async () => {
    const redisUrl = new URL(inject('redisUrl'))
    const proxy: TcpProxy = await startTcpProxy(Number(redisUrl.port))
    closers.push(() => proxy.close())
    redisUrl.port = String(proxy.port)
    const server = await serve({ redisUrl: redisUrl.toString(), authRateLimitPerMinute: 1, rateLimits: { windowSeconds: HOUR } })
    const ok = async () => (await fetch(`${server.baseUrl}/api/auth/ok`)).status
    expect([await ok(), await ok()]).toEqual([200, 429])

    await proxy.cut()
    await until(async () => (await fetch(`${server.baseUrl}/readyz`)).status === 503, 'the server to see Redis gone')
    expect(await ok()).toBe(200)
    await proxy.restore()
  })
})
