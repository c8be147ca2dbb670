import { createHash } from 'node:crypto'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { AiriClient } from '@airi/sdk'
import type { FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'
import { until } from '@airi/tooling/test/until'

import { startConversationDeployment, type ConversationDeployment } from './conversations-setup.ts'
import { authPost, badRequestFields, createVerifiedUser, emailTo, failure, type TestServer, type TestUser } from './harness.ts'

/**
 * Personal API keys (issue 29, SPEC §4.17, docs/gateway.md#personal-api-keys): made
 * with a session, used with the official `openai` client on the REST gateways of two
 * instances of one deployment, refused everywhere else.
 */

let deployment: ConversationDeployment
let llm: FakeUpstream
let a: TestServer
let b: TestServer
let tts: FakeTtsUpstream

beforeAll(async () => {
  deployment = await startConversationDeployment({ chat: 'gpt-4o-mini' })
  ;({ llm, a, b } = deployment)
  tts = await startFakeTtsUpstream()
  const { keyId, ciphertext } = a.api.services.llmGateway.encryptKey('voice', 'k0', 'sk-tts')
  await a.api.services.config.set('TTS_UPSTREAMS', { defaultModel: 'voice', models: { voice: { adapter: 'openai-compatible', baseUrl: tts.url, model: 'upstream-tts', keys: [{ id: keyId, ciphertext }] } } })
})
afterAll(async () => {
  await deployment?.close()
  await tts?.close()
})

const sdk = (user: TestUser, server: TestServer = a): AiriClient => deployment.client(user.token, server)
const openai = (key: string, server: TestServer = a) => new OpenAI({ apiKey: key, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
const refusal = (promise: Promise<unknown>) => promise.then(() => expect.fail('the call succeeded'), (error: unknown) => error as InstanceType<typeof OpenAI.APIError>)

type CreateInput = Parameters<AiriClient['apiKeys']['create']['mutate']>[0]
const makeKey = (user: TestUser, input: Partial<CreateInput> = {}) => sdk(user).apiKeys.create.mutate({ name: 'SillyTavern', scopes: ['llm'], ...input })

const chat = (key: string, server: TestServer = a) => openai(key, server).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Hello' }] })

describe('making and listing keys', () => {
  it('shows the key once, stores only its hash, and lists it without the key', async () => {
    const user = await createVerifiedUser(a)
    const created = await makeKey(user, { name: 'My script', scopes: ['llm'], budget: { flux: 50, period: 'month' }, rateLimitPerMinute: 30 })
    expect(created.key).toMatch(/^airi_sk_[\w-]{43}$/)
    expect(created).toMatchObject({ name: 'My script', prefix: created.key.slice(0, 14), scopes: ['llm'], budget: { flux: 50, period: 'month' }, spent: 0, rateLimitPerMinute: 30, lastUsedAt: null, expiresAt: null })

    const [listed] = await sdk(user).apiKeys.list.query()
    expect(listed).toEqual({ id: created.id, name: 'My script', prefix: created.prefix, scopes: ['llm'], budget: { flux: 50, period: 'month' }, spent: 0, rateLimitPerMinute: 30, lastUsedAt: null, expiresAt: null, createdAt: created.createdAt })
    expect(JSON.stringify(listed)).not.toContain(created.key.slice(14))
    const row = await a.database.db.selectFrom('api_keys').select('key_hash').where('id', '=', created.id).executeTakeFirstOrThrow()
    expect(row.key_hash).toBe(createHash('sha256').update(created.key).digest('hex'))
  })

  it('refuses bad input naming the field, a 21st live key, and anyone else\'s key', async () => {
    const user = await createVerifiedUser(a)
    const client = sdk(user)
    expect(await badRequestFields(client.apiKeys.create.mutate({ name: 'x', scopes: [] }))).toEqual(['scopes'])
    expect(await badRequestFields(client.apiKeys.create.mutate({ name: 'x', scopes: ['admin' as 'llm'] }))).toEqual(['scopes.0'])
    expect(await badRequestFields(client.apiKeys.create.mutate({ name: 'x', scopes: ['llm'], budget: { flux: 0, period: 'day' } }))).toEqual(['budget.flux'])
    expect(await badRequestFields(client.apiKeys.create.mutate({ name: 'x', scopes: ['llm'], budget: { flux: -5, period: 'week' as 'day' } }))).toEqual(['budget.flux', 'budget.period'])
    expect(await badRequestFields(client.apiKeys.create.mutate({ name: '', scopes: ['llm'] }))).toEqual(['name'])
    await client.apiKeys.revoke.mutate({ id: (await makeKey(user, { name: 'x', scopes: ['llm', 'speech'], budget: { flux: 10, period: 'day' } })).id })
    const past = await failure(client.apiKeys.create.mutate({ name: 'x', scopes: ['llm'], expiresAt: new Date(Date.now() - 1000) }))
    expect(past.data).toMatchObject({ httpStatus: 400, details: { field: 'expiresAt' } })

    const keys = await Promise.all(Array.from({ length: 20 }, (_, index) => makeKey(user, { name: `key ${index}` })))
    const over = await failure(makeKey(user, { name: 'one more' }))
    expect(over.data).toMatchObject({ httpStatus: 409, apiCode: 'API_KEY_LIMIT' })
    await client.apiKeys.revoke.mutate({ id: keys[0]!.id })
    await makeKey(user, { name: 'in its place' })

    const stranger = await createVerifiedUser(a)
    expect((await failure(sdk(stranger).apiKeys.revoke.mutate({ id: keys[1]!.id }))).data).toMatchObject({ httpStatus: 404, apiCode: 'API_KEY_NOT_FOUND' })
    expect(await sdk(stranger).apiKeys.list.query()).toEqual([])
  })
})

describe('where a key works', () => {
  it('serves chat, streamed chat and models through the official openai client, on either instance', async () => {
    const user = await createVerifiedUser(a)
    const { key, id } = await makeKey(user)
    const answer = await chat(key, b)
    expect(answer.choices[0]!.message.content).toBe('Hello from the fake upstream.')
    const stream = await openai(key).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Hello' }], stream: true })
    let text = ''
    for await (const chunk of stream)
      text += chunk.choices[0]?.delta?.content ?? ''
    expect(text).toBe('Hello from the fake upstream.')
    expect((await openai(key).models.list()).data.map(model => model.id)).toEqual(['chat'])
    await until(async () => (await sdk(user).apiKeys.list.query()).find(item => item.id === id)?.lastUsedAt != null, 'lastUsedAt to be set')
  })

  it('refuses a gateway outside the key\'s scopes with 403 KEY_SCOPE, and an unknown or malformed credential with 401', async () => {
    const user = await createVerifiedUser(a)
    const { key } = await makeKey(user, { scopes: ['speech'] })
    const scoped = await refusal(chat(key))
    expect(scoped.status).toBe(403)
    expect(scoped.error).toMatchObject({ code: 'KEY_SCOPE' })
    expect(llm.requests.filter(request => request.key === key)).toEqual([])

    for (const bad of [`airi_sk_${'x'.repeat(43)}`, key.slice(0, -1)]) {
      const unknown = await refusal(chat(bad))
      expect(unknown.status).toBe(401)
      expect(unknown.message).not.toMatch(/revoked|expired|unknown/i)
    }
    for (const authorization of ['Bearer', 'Basic abc', `Bearer ${key} extra`, key]) {
      const response = await fetch(`${a.baseUrl}/api/v1/openai/models`, { headers: { authorization } })
      expect(response.status, authorization).toBe(401)
      expect(await response.json()).toMatchObject({ error: { type: expect.any(String), code: 'UNAUTHORIZED' } })
    }
  })

  it('is refused on tRPC, /api/auth/*, the account export and card downloads', async () => {
    const user = await createVerifiedUser(a)
    const { key } = await makeKey(user, { scopes: ['llm', 'speech', 'transcription'] })
    const withKey = { authorization: `Bearer ${key}` }
    const trpc = await fetch(`${a.baseUrl}/trpc/apiKeys.list`, { headers: withKey })
    expect(trpc.status).toBe(401)
    const publicProcedure = await fetch(`${a.baseUrl}/trpc/meta.features`, { headers: withKey })
    expect(publicProcedure.status).toBe(401)
    expect((await authPost(a, '/sign-out', {}, key)).status).toBe(401)
    expect((await fetch(`${a.baseUrl}/api/auth/get-session`, { headers: withKey })).status).toBe(401)
    expect((await fetch(`${a.baseUrl}/api/v1/account/export`, { headers: withKey })).status).toBe(401)
    // The session still works beside it: only the key is refused.
    expect((await fetch(`${a.baseUrl}/trpc/apiKeys.list`, { headers: { authorization: `Bearer ${user.token}` } })).status).toBe(200)
  })

  it('keeps to its own rate limit on top of the user\'s', async () => {
    const user = await createVerifiedUser(a)
    const { key } = await makeKey(user, { rateLimitPerMinute: 2 })
    await chat(key)
    await chat(key)
    const limited = await refusal(chat(key))
    expect(limited.status).toBe(429)
    expect(limited.error).toMatchObject({ code: 'RATE_LIMITED' })
    // Another key of the same user has its own count.
    const { key: other } = await makeKey(user)
    await chat(other)
  })
})

describe('speech with a key', () => {
  it('speaks with a speech key through the official openai client, and refuses an llm-only key', async () => {
    const user = await createVerifiedUser(a)
    const { key } = await makeKey(user, { scopes: ['speech'] })
    const speech = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${a.baseUrl}/api/v1`, maxRetries: 0 }).audio.speech.create({ model: 'voice', voice: 'alloy', input: 'Hello there.', response_format: 'wav' })
    const audio = Buffer.from(await (await speech(key)).arrayBuffer())
    expect(audio.subarray(0, 4).toString()).toBe('RIFF')
    const { key: llmOnly } = await makeKey(user)
    expect((await refusal(speech(llmOnly))).status).toBe(403)
  })
})

describe('budgets', () => {
  it('serves exactly what the budget covers under concurrency, bills every ledger row to the key, and names the key in usage', async () => {
    const user = await createVerifiedUser(a)
    // What one call reserves, measured on a key without a budget.
    const probe = await makeKey(user, { name: 'probe' })
    await chat(probe.key)
    const { flux_reserved: reserved } = await a.database.db.selectFrom('llm_request_log').select('flux_reserved').where('api_key_id', '=', probe.id).executeTakeFirstOrThrow()
    expect(reserved).toBeGreaterThan(0)

    const budgeted = await makeKey(user, { name: 'budgeted', budget: { flux: 3 * reserved, period: 'day' } })
    let release!: () => void
    const hold = new Promise<void>((resolve) => {
      release = resolve
    })
    llm.behave(() => ({ kind: 'complete', content: 'Held.', hold }))
    const seen = llm.requests.length
    try {
      const calls = Array.from({ length: 20 }, (_, index) => chat(budgeted.key, index % 2 === 0 ? a : b).then(() => 200, (error: InstanceType<typeof OpenAI.APIError>) => error))
      // Every call is decided: refused (its log row completed with 402), or reserved and held at the upstream.
      const refusedRows = async () => (await a.database.db.selectFrom('llm_request_log').select(eb => eb.fn.countAll<number>().as('count'))
        .where('api_key_id', '=', budgeted.id).where('status', '=', 402).executeTakeFirstOrThrow()).count
      await until(async () => await refusedRows() === 17 && llm.requests.length - seen === 3, '17 refusals and 3 calls held at the upstream')
      expect(llm.requests.length - seen, 'only the calls the budget covers reach the upstream').toBe(3)
      release()
      const outcomes = await Promise.all(calls)
      expect(outcomes.filter(outcome => outcome === 200)).toHaveLength(3)
      const refused = outcomes.filter((outcome): outcome is InstanceType<typeof OpenAI.APIError> => outcome !== 200)
      expect(refused.every(error => error.status === 402 && (error.error as { code?: string }).code === 'KEY_BUDGET_EXCEEDED')).toBe(true)
    }
    finally {
      release()
      llm.reset()
    }

    // Every ledger row of the key's calls carries the key, and `spent` is their sum.
    const logRows = await a.database.db.selectFrom('llm_request_log').select(['request_id', 'flux_consumed']).where('api_key_id', '=', budgeted.id).execute()
    const served = logRows.filter(row => row.flux_consumed > 0)
    expect(served).toHaveLength(3)
    const ledger = await a.database.db.selectFrom('flux_transaction').select(['type', 'amount', 'api_key_id', 'request_id']).where('user_id', '=', user.id)
      .where(eb => eb.or(served.map(row => eb('request_id', 'like', `llm:${row.request_id}:%`)))).execute()
    expect(ledger.length).toBeGreaterThanOrEqual(3)
    expect(ledger.every(row => row.api_key_id === budgeted.id)).toBe(true)
    const net = ledger.reduce((sum, row) => sum + (row.type === 'debit' ? row.amount : -row.amount), 0)
    expect(net).toBe(served.reduce((sum, row) => sum + row.flux_consumed, 0))
    const listed = (await sdk(user).apiKeys.list.query()).find(item => item.id === budgeted.id)!
    expect(listed.spent).toBe(net)

    const usage = await sdk(user).usage.calls.query({ kind: 'llm', limit: 100 })
    const named = usage.items.filter(item => item.apiKey?.id === budgeted.id)
    expect(named.length).toBe(20)
    expect(named[0]!.apiKey).toEqual({ id: budgeted.id, name: 'budgeted', prefix: budgeted.prefix })
    expect(usage.items.filter(item => item.apiKey?.id === probe.id)).toHaveLength(1)
  })
})

describe('when a key stops working', () => {
  it('stops on every instance once revoked, and at its expiry', async () => {
    const user = await createVerifiedUser(a)
    const { key, id } = await makeKey(user)
    // Both instances have the key's identity cached.
    await chat(key, a)
    await chat(key, b)
    await sdk(user, a).apiKeys.revoke.mutate({ id })
    await until(async () => (await refusal(chat(key, b)).catch(() => undefined))?.status === 401, 'instance B to refuse the revoked key')
    expect((await refusal(chat(key, a))).status).toBe(401)
    expect(await sdk(user).apiKeys.list.query()).toEqual([])

    const soon = await makeKey(user, { expiresAt: new Date(Date.now() + 1500) })
    await chat(soon.key, b)
    await until(async () => (await chat(soon.key, b).then(() => 200, (error: InstanceType<typeof OpenAI.APIError>) => error.status)) === 401, 'the key to expire')
  })

  it('stops every key of a deleted account, on every instance', async () => {
    const user = await createVerifiedUser(a)
    const { key } = await makeKey(user)
    await chat(key, b)
    expect((await authPost(a, '/delete-user', { callbackURL: '/goodbye' }, user.token)).status).toBe(200)
    const mail = await emailTo(a, user.email, /deletion/i)
    const callback = await fetch(a.resend.linkIn(mail), { redirect: 'manual', headers: { authorization: `Bearer ${user.token}` } })
    expect(callback.status).toBe(302)
    await until(async () => (await chat(key, b).then(() => 200, (error: InstanceType<typeof OpenAI.APIError>) => error.status)) === 401, 'instance B to refuse the deleted account\'s key')
    expect(await a.database.db.selectFrom('api_keys').select('id').where('user_id', '=', user.id).execute()).toEqual([])
  })
})
