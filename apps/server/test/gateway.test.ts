import { randomUUID } from 'node:crypto'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createKeyVault } from '@airi/api'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { createTestMeter } from '@airi/tooling/test/metrics'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, TEST_LLM_MASTER_KEY, type TestServer, type TestUser } from './harness.ts'

const { reader, meter } = createTestMeter()

let server: TestServer
let primary: FakeUpstream
let secondary: FakeUpstream
const vault = createKeyVault(TEST_LLM_MASTER_KEY)

beforeAll(async () => {
  ;[primary, secondary] = await Promise.all([startFakeOpenAIUpstream({ name: 'primary' }), startFakeOpenAIUpstream({ name: 'secondary' })])
  server = await startTestServer({ meter })
})
afterAll(async () => {
  await server.close()
  await Promise.all([primary.close(), secondary.close()])
})

interface UpstreamSpec { upstream: FakeUpstream, keys: string[], timeoutMs?: number }

/**
 * Points the alias at the given upstreams (fresh upstream ids every time, so
 * round-robin and cooldowns start clean) with keys encrypted the way an operator
 * would: by the server, under the model + key id.
 */
async function route(alias: string, specs: UpstreamSpec[], extra: { deadlineMs?: number } = {}): Promise<void> {
  primary.reset()
  secondary.reset()
  const upstreams = specs.map((spec, index) => ({
    id: `${spec.upstream.name}-${randomUUID().slice(0, 8)}`,
    baseUrl: spec.upstream.url,
    model: `${spec.upstream.name}-model-${index}`,
    ...(spec.timeoutMs ? { timeoutMs: spec.timeoutMs } : {}),
    keys: spec.keys.map((apiKey, keyIndex) => server.api.services.llmGateway.encryptKey(alias, `k${keyIndex}`, apiKey)).map(({ keyId, ciphertext }) => ({ id: keyId, ciphertext })),
  }))
  await server.api.services.config.set('LLM_ROUTER_CONFIG', { models: { [alias]: { upstreams } }, ...extra })
}

function openai(token: string): OpenAI {
  return new OpenAI({ apiKey: token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
}

async function balance(user: TestUser): Promise<number> {
  return server.api.services.billing.getBalance(user.id)
}

/** The ledger rows one call made (reservation, settlement, refund), by the call id they carry. */
async function callLedger(userId: string) {
  const rows = await server.database.db.selectFrom('flux_transaction').selectAll().where('user_id', '=', userId).where('request_id', 'like', 'llm:%').orderBy('seq').execute()
  return rows
}

const signedAmount = (row: { type: string, amount: number }) => row.type === 'debit' ? row.amount : -row.amount

describe('the OpenAI-compatible gateway, through the official openai client', () => {
  let user: TestUser
  beforeAll(async () => {
    user = await createVerifiedUser(server)
  })

  it('answers a plain completion with what the upstream produced, billed exactly once', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-primary-1'] }])
    primary.behave(() => ({ kind: 'complete', content: 'Hello there, traveller.', usage: { prompt_tokens: 1200, completion_tokens: 850 } }))
    const before = await balance(user)

    const completion = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'hi' }] })
    expect(completion.choices[0]!.message.content).toBe('Hello there, traveller.')
    expect(completion.usage).toMatchObject({ total_tokens: 2050 })

    // 2 050 tokens × 1 Flux / 1k tokens, rounded up.
    expect(before - await balance(user)).toBe(3)
    const rows = await callLedger(user.id)
    expect(rows.map(row => row.request_id!.split(':')[2])).toEqual(['reserve', 'settle'])
    expect(rows.reduce((sum, row) => sum + signedAmount(row), 0)).toBe(3)
    const logs = await server.database.db.selectFrom('llm_request_log').selectAll().where('user_id', '=', user.id).execute()
    expect(logs).toHaveLength(1)
    expect(logs[0]).toMatchObject({ model: 'chat', status: 200, prompt_tokens: 1200, completion_tokens: 850, total_tokens: 2050, flux_consumed: 3 })

    expect(primary.requests).toHaveLength(1)
    expect(primary.requests[0]).toMatchObject({ key: 'sk-primary-1', body: { model: expect.stringMatching(/^primary-model-/), messages: [{ role: 'user', content: 'hi' }] } })
  })

  it('streams the upstream\'s tokens as they come and settles after the last chunk', async () => {
    const streamer = await createVerifiedUser(server)
    await route('chat', [{ upstream: primary, keys: ['sk-primary-1'] }])
    const content = 'Streaming is just many small answers, one after another.'
    primary.behave(() => ({ kind: 'complete', content, usage: { prompt_tokens: 400, completion_tokens: 700 }, chunkDelayMs: 5 }))

    const stream = await openai(streamer.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'stream please' }], stream: true })
    let text = ''
    let pieces = 0
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta?.content
      if (delta) {
        text += delta
        pieces++
      }
    }
    expect(text).toBe(content)
    expect(pieces).toBeGreaterThan(5)
    expect(primary.requests[0]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } })
    // 1 100 tokens → 2 Flux.
    expect(100 - await balance(streamer)).toBe(2)
    expect((await callLedger(streamer.id)).reduce((sum, row) => sum + signedAmount(row), 0)).toBe(2)
    expect(await server.database.db.selectFrom('llm_request_log').select('total_tokens').where('user_id', '=', streamer.id).execute()).toEqual([{ total_tokens: 1100 }])
  })

  it('refunds the excess when a call costs less than the reservation', async () => {
    const frugal = await createVerifiedUser(server)
    await server.api.services.config.set('FLUX_PER_REQUEST', 5)
    try {
      await route('chat', [{ upstream: primary, keys: ['sk-primary-1'] }])
      primary.behave(() => ({ kind: 'complete', content: 'short', usage: { prompt_tokens: 10, completion_tokens: 5 } }))
      await openai(frugal.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })
      expect(100 - await balance(frugal)).toBe(1)
      expect((await callLedger(frugal.id)).map(row => [row.type, row.amount])).toEqual([['debit', 5], ['credit', 4]])
    }
    finally {
      await server.api.services.config.set('FLUX_PER_REQUEST', 1)
    }
  })

  it('accepts an OIDC access token (JWT) as the API key', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-primary-1'] }])
    primary.behave(() => ({ kind: 'complete', content: 'hello, token holder' }))
    const { token } = await server.api.auth.api.signJWT({ body: { payload: { sub: user.id, iss: `${server.baseUrl}/api/auth`, aud: server.baseUrl } } })
    const completion = await openai(token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })
    expect(completion.choices[0]!.message.content).toBe('hello, token holder')
  })

  it('lists the configured aliases', async () => {
    await route('chat', [{ upstream: primary, keys: ['k'] }])
    const models = await openai(user.token).models.list()
    expect(models.data.map(model => model.id)).toEqual(['chat'])
  })
})

describe('fallback', () => {
  let user: TestUser
  beforeAll(async () => {
    user = await createVerifiedUser(server)
  })

  it('uses the second key when the first answers 429', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-limited', 'sk-fine'] }])
    primary.behave(({ key }) => key === 'sk-limited' ? { kind: 'status', status: 429 } : { kind: 'complete', content: 'from the second key' })
    const completion = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })
    expect(completion.choices[0]!.message.content).toBe('from the second key')
    expect(primary.requests.map(request => request.key)).toEqual(['sk-limited', 'sk-fine'])

    // The limited key is cooling down: the next call goes straight to the healthy one.
    await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'again' }] })
    expect(primary.requests.map(request => request.key)).toEqual(['sk-limited', 'sk-fine', 'sk-fine'])
  })

  it('uses the second upstream when the first answers 500', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-a'] }, { upstream: secondary, keys: ['sk-b'] }])
    primary.behave(() => ({ kind: 'status', status: 500 }))
    secondary.behave(() => ({ kind: 'complete', content: 'from the second upstream' }))
    const completion = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })
    expect(completion.choices[0]!.message.content).toBe('from the second upstream')
    expect(primary.requests).toHaveLength(1)
    expect(secondary.requests).toHaveLength(1)
    expect(primary.requests[0]!.completed).toBe(true)
  })

  it('moves on from an upstream that does not answer within its timeout', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-slow'], timeoutMs: 300 }, { upstream: secondary, keys: ['sk-b'] }])
    primary.behave(() => ({ kind: 'hang' }))
    secondary.behave(() => ({ kind: 'complete', content: 'patient answer' }))
    const completion = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })
    expect(completion.choices[0]!.message.content).toBe('patient answer')
    await expect.poll(() => primary.requests[0]?.aborted).toBe(true)
  })

  it('moves on from an upstream that drops the connection', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-a'] }, { upstream: secondary, keys: ['sk-b'] }])
    primary.behave(() => ({ kind: 'drop' }))
    secondary.behave(() => ({ kind: 'complete', content: 'still here' }))
    const completion = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })
    expect(completion.choices[0]!.message.content).toBe('still here')
    expect(primary.requests).toHaveLength(1)
  })

  it('ends a call that hangs past the whole-chain deadline with 504 and refunds it', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-slow'] }], { deadlineMs: 500 })
    primary.behave(() => ({ kind: 'hang' }))
    const before = await balance(user)
    const startedAt = Date.now()
    const error = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.APIError)
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(504)
    expect(Date.now() - startedAt).toBeLessThan(5000)
    expect(await balance(user)).toBe(before)
  })

  it('answers 502 naming the last upstream status when every upstream fails, and refunds the reservation', async () => {
    const unlucky = await createVerifiedUser(server)
    await route('chat', [{ upstream: primary, keys: ['sk-a'] }, { upstream: secondary, keys: ['sk-b'] }])
    primary.behave(() => ({ kind: 'status', status: 500 }))
    secondary.behave(() => ({ kind: 'status', status: 503 }))
    const error = await openai(unlucky.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(error.status).toBe(502)
    expect(error.message).toContain('503')
    expect(await balance(unlucky)).toBe(100)
    const rows = await callLedger(unlucky.id)
    expect(rows.map(row => [row.type, row.amount, row.request_id!.split(':')[2]])).toEqual([['debit', 1, 'reserve'], ['credit', 1, 'refund']])
  })

  it('does not use a key that fails to decrypt (wrong AAD or master key), and reports it', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-good'] }])
    const config = await server.api.services.config.getOrThrow('LLM_ROUTER_CONFIG')
    const upstream = config.models.chat!.upstreams[0]!
    const otherVault = createKeyVault(Buffer.alloc(32, 9))
    upstream.keys = [
      { id: 'wrong-aad', ciphertext: vault.encrypt('another-model', 'wrong-aad', 'sk-stolen') },
      { id: 'wrong-master', ciphertext: otherVault.encrypt('chat', 'wrong-master', 'sk-other') },
      { id: 'k0', ciphertext: vault.encrypt('chat', 'k0', 'sk-good') },
    ]
    await server.api.services.config.set('LLM_ROUTER_CONFIG', config)
    primary.behave(() => ({ kind: 'complete', content: 'only the good key' }))
    const completion = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })
    expect(completion.choices[0]!.message.content).toBe('only the good key')
    expect(primary.requests.map(request => request.key)).toEqual(['sk-good'])

    upstream.keys = [{ id: 'wrong-aad', ciphertext: vault.encrypt('another-model', 'wrong-aad', 'sk-stolen') }]
    await server.api.services.config.set('LLM_ROUTER_CONFIG', { ...config, models: { chat: { upstreams: [{ ...upstream, id: `fresh-${randomUUID()}` }] } } })
    const error = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(error.status).toBe(502)
    expect(error.message).toContain('cannot be decrypted')
    expect(primary.requests.map(request => request.key)).toEqual(['sk-good'])
  })

  it('aborts the upstream within 200 ms when the client aborts mid-stream', async () => {
    await route('chat', [{ upstream: primary, keys: ['sk-a'] }])
    primary.behave(() => ({ kind: 'complete', content: Array.from({ length: 200 }, (_, i) => `word${i}`).join(' '), chunkDelayMs: 50 }))
    const stream = await openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'long story' }], stream: true })
    let abortedAt = 0
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) {
        abortedAt = Date.now()
        stream.controller.abort()
        break
      }
    }
    await expect.poll(() => primary.requests[0]?.aborted, { timeout: 2000, interval: 10 }).toBe(true)
    expect(primary.requests[0]!.abortedAt! - abortedAt).toBeLessThan(200)
  })
})

describe('billing that concurrency cannot exploit', () => {
  it('20 concurrent calls on a balance of exactly 3 reservations: 3 reach the upstream, 17 get 402, nothing goes negative, every token is accounted for', async () => {
    const user = await createVerifiedUser(server)
    await server.api.services.billing.debit({ userId: user.id, amount: 97, requestId: 'test:leave-three' })
    expect(await balance(user)).toBe(3)
    await route('chat', [{ upstream: primary, keys: ['sk-a'] }])
    // Each call reports 2 500 tokens (3 Flux), more than its 1-Flux reservation.
    primary.behave(() => ({ kind: 'complete', content: 'costly', usage: { prompt_tokens: 2000, completion_tokens: 500 }, chunkDelayMs: 0 }))
    const unbilledBefore = await reader.counter('airi.billing.flux.unbilled')

    const results = await Promise.allSettled(Array.from({ length: 20 }, () =>
      openai(user.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] })))
    const ok = results.filter(result => result.status === 'fulfilled')
    const refused = results.filter(result => result.status === 'rejected') as PromiseRejectedResult[]
    expect(ok).toHaveLength(3)
    expect(refused).toHaveLength(17)
    for (const failure of refused)
      expect(failure.reason).toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX' })
    expect(primary.requests).toHaveLength(3)

    expect(await balance(user)).toBe(0)
    const rows = await callLedger(user.id)
    expect(rows.every(row => row.balance_after >= 0)).toBe(true)
    const charged = rows.reduce((sum, row) => sum + signedAmount(row), 0)
    const unbilled = await reader.counter('airi.billing.flux.unbilled') - unbilledBefore
    // Three calls × 3 Flux of tokens: what the ledger took plus what it could not.
    expect(charged + unbilled).toBe(9)
    expect(charged).toBe(3)
  })
})

describe('refusals', () => {
  it('401 without a valid token, in OpenAI\'s error shape', async () => {
    const error = await openai('not-a-token').chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(error.status).toBe(401)
    expect(error.error).toMatchObject({ code: 'UNAUTHORIZED', type: 'invalid_request_error' })
    const models = await fetch(`${server.baseUrl}/api/v1/openai/models`)
    expect(models.status).toBe(401)
  })

  it('400 naming the field for a bad body, 404 for an unknown model', async () => {
    const user = await createVerifiedUser(server)
    await route('chat', [{ upstream: primary, keys: ['k'] }])
    const bad = await openai(user.token).chat.completions.create({ model: 'chat', messages: [] }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(bad.status).toBe(400)
    expect(bad.param).toBe('messages')
    const unknown = await openai(user.token).chat.completions.create({ model: 'gpt-nonexistent', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(unknown.status).toBe(404)
    expect(unknown.code).toBe('MODEL_NOT_FOUND')
    expect(await balance(user)).toBe(100)
    expect(primary.requests).toHaveLength(0)
  })

  it('402 with no upstream call when the balance is empty', async () => {
    const broke = await createVerifiedUser(server)
    await server.api.services.billing.debit({ userId: broke.id, amount: 100, requestId: 'test:empty' })
    await route('chat', [{ upstream: primary, keys: ['k'] }])
    const error = await openai(broke.token).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
    expect(error.status).toBe(402)
    expect(primary.requests).toHaveLength(0)
  })

  it('503 naming the entry when LLM_ROUTER_CONFIG is not set, while the rest keeps working', async () => {
    const fresh = await startTestServer({ redisUrl: false })
    try {
      const user = await createVerifiedUser(fresh)
      const client = new OpenAI({ apiKey: user.token, baseURL: `${fresh.baseUrl}/api/v1/openai`, maxRetries: 0 })
      const error = await client.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e) as InstanceType<typeof OpenAI.APIError>
      expect(error.status).toBe(503)
      expect(error.code).toBe('CONFIG_NOT_SET')
      expect(error.message).toContain('LLM_ROUTER_CONFIG')
      expect(await fresh.api.services.billing.getBalance(user.id)).toBe(100)
      expect((await fetch(`${fresh.baseUrl}/readyz`)).status).toBe(200)
    }
    finally {
      await fresh.close()
    }
  })
})

describe('admin.llm.encryptKey', () => {
  it('encrypts server-side for admins only, and the result routes', async () => {
    const admin = await createVerifiedUser(server, ADMIN_EMAIL)
    const member = await createVerifiedUser(server)
    const { createAiriClient, TRPCClientError } = await import('@airi/sdk')
    const denied = await createAiriClient({ baseUrl: server.baseUrl, getToken: () => member.token }).admin.llm.encryptKey.mutate({ model: 'chat', keyId: 'k1', apiKey: 'sk-secret' }).catch((e: unknown) => e)
    expect(denied).toBeInstanceOf(TRPCClientError)
    expect((denied as InstanceType<typeof TRPCClientError>).data?.httpStatus).toBe(403)

    const sealed = await createAiriClient({ baseUrl: server.baseUrl, getToken: () => admin.token }).admin.llm.encryptKey.mutate({ model: 'chat', keyId: 'k1', apiKey: 'sk-secret' })
    expect(sealed.keyId).toBe('k1')
    expect(sealed.ciphertext).not.toContain('sk-secret')
    expect(vault.decrypt('chat', 'k1', sealed.ciphertext)).toBe('sk-secret')
  })
})
