import { randomUUID } from 'node:crypto'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { manualClock, type ConfigValue } from '@airi/api'
import { createAiriClient, type AiriClient } from '@airi/sdk'
import { createPacer, startFakeOpenAIUpstream, type FakeUpstream, type UpstreamUsage } from '@airi/tooling/fakes/openai-upstream'
import { until } from '@airi/tooling/test/until'

import { botChat, createCharacter, replyEnded } from './conversations-setup.ts'
import { ADMIN_EMAIL, createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Prices per model (SPEC §4.5, docs/billing.md#prices-per-model) through the
 * official openai client against a fake upstream that reports cached tokens:
 * every rule's exact ledger rows, balances and request-log row, /models, and
 * admin.config.set refusing bad prices. The clock is manual, so the log's
 * durations and times to first token are exact.
 */

type Pricing = NonNullable<ConfigValue<'LLM_ROUTER_CONFIG'>['models'][string]['pricing']>
/** A pricing as an operator might send it, valid or not. */
type PricingInput = Pricing | Record<string, number | string | null>

const clock = manualClock()
let server: TestServer
let fake: FakeUpstream
let admin: AiriClient

beforeAll(async () => {
  ;[server, fake] = await Promise.all([startTestServer({ clock }), startFakeOpenAIUpstream({ name: 'priced' })])
  const operator = await createVerifiedUser(server, ADMIN_EMAIL)
  admin = createAiriClient({ baseUrl: server.baseUrl, getToken: () => operator.token })
})
afterAll(async () => {
  await admin?.close()
  await server?.close()
  await fake?.close()
})

// "user\nTell me a story." is 7 tokens with o200k_base, plus 3 for the message and 3 for the reply's priming.
const STORY_PROMPT = [{ role: 'user' as const, content: 'Tell me a story.' }]
const STORY_PROMPT_TOKENS = 13

/** The router config: each alias (with its pricing, if any) on the fake, as an upstream that counts with o200k_base. */
function routerConfig(models: Record<string, { pricing?: PricingInput }>, defaultModel?: string) {
  return {
    ...(defaultModel ? { defaultModel } : {}),
    models: Object.fromEntries(Object.entries(models).map(([alias, spec]) => [alias, {
      ...spec,
      upstreams: [{ id: `fake-${alias}`, baseUrl: fake.url, model: 'gpt-4o-mini', keys: [server.api.services.llmGateway.encryptKey(alias, 'k0', `sk-${alias}`)].map(({ keyId, ciphertext }) => ({ id: keyId, ciphertext })) }],
    }])),
  }
}

/** Sets LLM_ROUTER_CONFIG the way an operator does, through admin.config.set. */
async function configure(models: Record<string, { pricing?: Pricing }>, defaultModel?: string): Promise<void> {
  fake.reset()
  await admin.admin.config.set.mutate({ key: 'LLM_ROUTER_CONFIG', value: routerConfig(models, defaultModel) })
}

const openai = (user: TestUser) => new OpenAI({ apiKey: user.token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })

const balance = (user: TestUser) => server.api.services.billing.getBalance(user.id)

/** The gateway's ledger rows for `user`, in order: [reserve|settle|refund, amount]. */
async function ledger(user: TestUser): Promise<Array<[string, number]>> {
  const rows = await server.database.db.selectFrom('flux_transaction').select(['request_id', 'amount']).where('user_id', '=', user.id).where('request_id', 'like', 'llm:%').orderBy('seq').execute()
  return rows.map(row => [row.request_id!.split(':')[2]!, row.amount])
}

/** The one request-log row of `user`, as far as a bill reads it. */
async function logRow(user: TestUser) {
  const rows = await server.database.db.selectFrom('llm_request_log')
    .select(['state', 'status', 'upstream', 'usage_source', 'prompt_tokens', 'completion_tokens', 'cached_tokens', 'total_tokens', 'first_token_ms', 'duration_ms', 'flux_reserved', 'flux_consumed'])
    .where('user_id', '=', user.id).execute()
  expect(rows).toHaveLength(1)
  return rows[0]!
}

/** A promise the test settles: holds the fake's answer while the clock moves. */
function gate() {
  let open!: () => void
  const opened = new Promise<void>((resolve) => {
    open = resolve
  })
  return { opened, open }
}

const answered = (usage: UpstreamUsage | null, content = 'Priced by the token.') => () => ({ kind: 'complete' as const, content, usage })

describe('a priced alias', () => {
  it('prices input and output apart and logs the plain call\'s tokens and duration', async () => {
    const user = await createVerifiedUser(server)
    await configure({ priced: { pricing: { inputPer1M: 2000, outputPer1M: 8000 } } })
    const held = gate()
    fake.behave(() => ({ ...answered({ prompt_tokens: 1000, completion_tokens: 500 })(), hold: held.opened }))

    const completion = openai(user).chat.completions.create({ model: 'priced', messages: STORY_PROMPT })
    await until(() => fake.requests.length === 1, 'the upstream to be called')
    clock.advance(250)
    held.open()
    expect((await completion).choices[0]!.message.content).toBe('Priced by the token.')

    // Reserved: ⌈(13 × 2 000 + 4 096 × 8 000) / 1e6⌉ = ⌈32.794⌉ = 33. Cost: (1 000 × 2 000 + 500 × 8 000) / 1e6 = 6.
    expect(await ledger(user)).toEqual([['reserve', 33], ['refund', 27]])
    expect(await balance(user)).toBe(94)
    expect(await logRow(user)).toEqual({
      state: 'completed',
      status: 200,
      upstream: 'fake-priced',
      usage_source: 'upstream',
      prompt_tokens: 1000,
      completion_tokens: 500,
      cached_tokens: null,
      total_tokens: 1500,
      first_token_ms: null,
      duration_ms: 250,
      flux_reserved: 33,
      flux_consumed: 6,
    })
  })

  it('prices cached prompt tokens at their own price, and logs a stream\'s time to first token', async () => {
    const user = await createVerifiedUser(server)
    await configure({ cached: { pricing: { inputPer1M: 3000, outputPer1M: 12_000, cachedInputPer1M: 300 } } })
    const pace = createPacer()
    fake.behave(() => ({ ...answered({ prompt_tokens: 2000, completion_tokens: 250, cached_tokens: 1500 }, 'Cached prompts cost less.')(), pace }))

    const stream = await openai(user).chat.completions.create({ model: 'cached', messages: STORY_PROMPT, max_tokens: 500, stream: true })
    const chunks = stream[Symbol.asyncIterator]()
    // The role chunk carries no text: the first token is still to come.
    expect((await chunks.next()).value?.choices[0]?.delta).toEqual({ role: 'assistant', content: '' })
    clock.advance(40)
    pace.release()
    expect((await chunks.next()).value?.choices[0]?.delta?.content).toBe('Cached ')
    clock.advance(60)
    pace.releaseAll()
    let rest = ''
    for (let chunk = await chunks.next(); !chunk.done; chunk = await chunks.next())
      rest += chunk.value.choices[0]?.delta?.content ?? ''
    expect(rest).toBe('prompts cost less.')

    // Reserved: ⌈(13 × 3 000 + 500 × 12 000) / 1e6⌉ = ⌈6.039⌉ = 7.
    // Cost: (500 fresh × 3 000 + 1 500 cached × 300 + 250 × 12 000) / 1e6 = 4.95 → 5 (9 without the cache price).
    expect(fake.requests[0]!.body).toMatchObject({ max_tokens: 500, stream: true })
    expect(await ledger(user)).toEqual([['reserve', 7], ['refund', 2]])
    expect(await balance(user)).toBe(95)
    expect(await logRow(user)).toMatchObject({ status: 200, usage_source: 'upstream', prompt_tokens: 2000, completion_tokens: 250, cached_tokens: 1500, total_tokens: 2250, first_token_ms: 40, duration_ms: 100, flux_reserved: 7, flux_consumed: 5 })
  })

  it('prices cached tokens at the input price when the alias names no cached price, and charges past the reservation', async () => {
    const user = await createVerifiedUser(server)
    await configure({ plain: { pricing: { inputPer1M: 1000, outputPer1M: 2000 } } })
    fake.behave(answered({ prompt_tokens: 4000, completion_tokens: 100, cached_tokens: 3000 }))
    await openai(user).chat.completions.create({ model: 'plain', messages: STORY_PROMPT, max_tokens: 100 })

    // Reserved: ⌈(13 × 1 000 + 100 × 2 000) / 1e6⌉ = 1. Cost: (4 000 × 1 000 + 100 × 2 000) / 1e6 = 4.2 → 5; 4 more settled.
    expect(await ledger(user)).toEqual([['reserve', 1], ['settle', 4]])
    expect(await balance(user)).toBe(95)
    expect(await logRow(user)).toMatchObject({ prompt_tokens: 4000, completion_tokens: 100, cached_tokens: 3000, flux_reserved: 1, flux_consumed: 5 })
  })

  it('charges at least minFlux, and reserves it', async () => {
    const user = await createVerifiedUser(server)
    await configure({ floor: { pricing: { inputPer1M: 1, outputPer1M: 1, minFlux: 3 } } })
    fake.behave(answered({ prompt_tokens: 10, completion_tokens: 20 }))
    await openai(user).chat.completions.create({ model: 'floor', messages: STORY_PROMPT })

    // 30 tokens at 1 Flux per million cost ⌈0.00003⌉ = 1; the alias's minimum is 3, which the reservation took: nothing moves after.
    expect(await ledger(user)).toEqual([['reserve', 3]])
    expect(await balance(user)).toBe(97)
    expect(await logRow(user)).toMatchObject({ state: 'completed', status: 200, flux_reserved: 3, flux_consumed: 3 })
  })

  it('charges at least 1 Flux without a minFlux, and nothing for a free alias with minFlux 0', async () => {
    const user = await createVerifiedUser(server)
    await configure({ cheap: { pricing: { inputPer1M: 0.5, outputPer1M: 1.5 } }, free: { pricing: { inputPer1M: 0, outputPer1M: 0, minFlux: 0 } } })
    fake.behave(answered({ prompt_tokens: 10, completion_tokens: 20 }))
    await openai(user).chat.completions.create({ model: 'cheap', messages: STORY_PROMPT })
    expect(await ledger(user)).toEqual([['reserve', 1]])

    await openai(user).chat.completions.create({ model: 'free', messages: STORY_PROMPT })
    // The reservation's floor (FLUX_PER_REQUEST) is taken and given back whole.
    expect((await ledger(user)).slice(1)).toEqual([['reserve', 1], ['refund', 1]])
    expect(await balance(user)).toBe(99)
  })

  it('prices decimals without a float hair costing a Flux more, and rounds any fraction up', async () => {
    const user = await createVerifiedUser(server)
    await configure({ decimal: { pricing: { inputPer1M: 1.1, outputPer1M: 2.5 } } })
    // 30 000 000 × 1.1 / 1e6 is 33.00000000000001 in floating point: 33 Flux, not 34.
    fake.behave(answered({ prompt_tokens: 30_000_000, completion_tokens: 0 }))
    await openai(user).chat.completions.create({ model: 'decimal', messages: STORY_PROMPT })
    expect(await ledger(user)).toEqual([['reserve', 1], ['settle', 32]])

    // One output token more: 33.0000025 → 34.
    fake.behave(answered({ prompt_tokens: 30_000_000, completion_tokens: 1 }))
    await openai(user).chat.completions.create({ model: 'decimal', messages: STORY_PROMPT })
    expect((await ledger(user)).slice(2)).toEqual([['reserve', 1], ['settle', 33]])
    expect(await balance(user)).toBe(100 - 33 - 34)
  })

  it('takes pricing.reserve as the reservation\'s floor, settles from it, and refuses a balance below it before any upstream call', async () => {
    const user = await createVerifiedUser(server)
    await configure({ reserved: { pricing: { inputPer1M: 1000, outputPer1M: 1000, reserve: 20 } }, dear: { pricing: { inputPer1M: 1000, outputPer1M: 1000, reserve: 150 } } })
    fake.behave(answered({ prompt_tokens: 1000, completion_tokens: 2000 }))
    await openai(user).chat.completions.create({ model: 'reserved', messages: STORY_PROMPT })
    // The request alone would reserve ⌈(13 + 4 096) × 1 000 / 1e6⌉ = 5; the alias's floor is 20. Cost: 3.
    expect(await ledger(user)).toEqual([['reserve', 20], ['refund', 17]])
    expect(await balance(user)).toBe(97)

    const refused = await openai(user).chat.completions.create({ model: 'dear', messages: STORY_PROMPT }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(OpenAI.APIError)
    expect(refused).toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX' })
    expect(fake.requests).toHaveLength(1)
    expect(await ledger(user)).toHaveLength(2)
    expect(await balance(user)).toBe(97)
  })

  it.each([false, true])('prices its own token count when the upstream reports no usage (stream: %s)', async (stream) => {
    const user = await createVerifiedUser(server)
    await configure({ counted: { pricing: { inputPer1M: 1_000_000, outputPer1M: 2_000_000 } } })
    fake.behave(answered(null, 'the the the the the'))
    const request = { model: 'counted', messages: STORY_PROMPT, max_tokens: 20 }
    let text = ''
    if (stream) {
      for await (const chunk of await openai(user).chat.completions.create({ ...request, stream: true }))
        text += chunk.choices[0]?.delta?.content ?? ''
    }
    else {
      text = (await openai(user).chat.completions.create(request)).choices[0]!.message.content!
    }
    expect(text).toBe('the the the the the')

    // A Flux per prompt token, two per output token: reserved 13 + 2 × 20 = 53; counted 13 + 2 × 5 = 23.
    expect(await ledger(user)).toEqual([['reserve', STORY_PROMPT_TOKENS + 40], ['refund', 30]])
    expect(await balance(user)).toBe(77)
    expect(await logRow(user)).toMatchObject({ usage_source: 'counted', prompt_tokens: STORY_PROMPT_TOKENS, completion_tokens: 5, cached_tokens: null, total_tokens: 18, flux_consumed: 23 })
  })
})

describe('an alias without pricing', () => {
  it('keeps the flat rule: FLUX_PER_1K_TOKENS on the total, cached tokens not told apart (but logged)', async () => {
    const user = await createVerifiedUser(server)
    await configure({ flat: {}, priced: { pricing: { inputPer1M: 100_000, outputPer1M: 100_000 } } })
    fake.behave(answered({ prompt_tokens: 1200, completion_tokens: 850, cached_tokens: 1000 }))
    await openai(user).chat.completions.create({ model: 'flat', messages: STORY_PROMPT })

    // 2 050 tokens × 1 Flux per 1 000, rounded up; reserved ⌈(13 + 4 096) / 1 000⌉ = 5.
    expect(await ledger(user)).toEqual([['reserve', 5], ['refund', 2]])
    expect(await balance(user)).toBe(97)
    expect(await logRow(user)).toMatchObject({ usage_source: 'upstream', prompt_tokens: 1200, completion_tokens: 850, cached_tokens: 1000, total_tokens: 2050, flux_reserved: 5, flux_consumed: 3 })
  })
})

describe('GET /api/v1/openai/models', () => {
  it('lists every alias, with its pricing in Flux when it has one', async () => {
    const user = await createVerifiedUser(server)
    await configure({
      'with-cache': { pricing: { inputPer1M: 2.5, outputPer1M: 10, cachedInputPer1M: 1.25, minFlux: 2, reserve: 5 } },
      'no-cache': { pricing: { inputPer1M: 0.15, outputPer1M: 0.6 } },
      'unpriced': {},
    })
    const response = await fetch(`${server.baseUrl}/api/v1/openai/models`, { headers: { authorization: `Bearer ${user.token}` } })
    expect(response.status).toBe(200)
    const body = await response.json() as { object: string, data: Array<{ id: string }> }
    expect(body.object).toBe('list')
    expect(body.data.sort((a, b) => a.id.localeCompare(b.id))).toEqual([
      { id: 'no-cache', object: 'model', created: 0, owned_by: 'airi', pricing: { inputPer1M: 0.15, outputPer1M: 0.6, unit: 'flux' } },
      { id: 'unpriced', object: 'model', created: 0, owned_by: 'airi' },
      { id: 'with-cache', object: 'model', created: 0, owned_by: 'airi', pricing: { inputPer1M: 2.5, outputPer1M: 10, cachedInputPer1M: 1.25, unit: 'flux' } },
    ])
    // The official client hands the pricing through as it came.
    const listed = await openai(user).models.list()
    expect(listed.data.find(model => model.id === 'no-cache')).toMatchObject({ pricing: { inputPer1M: 0.15, outputPer1M: 0.6, unit: 'flux' } })
  })
})

describe('admin.config.set', () => {
  it('refuses a negative, non-numeric, missing or misspelt price with the field\'s path, and keeps the config it had', async () => {
    await configure({ chat: { pricing: { inputPer1M: 1, outputPer1M: 2 } } })
    const before = (await admin.admin.config.get.query({ key: 'LLM_ROUTER_CONFIG' })).value

    async function refusedPaths(pricing: PricingInput): Promise<string[]> {
      const error = await failure(admin.admin.config.set.mutate({ key: 'LLM_ROUTER_CONFIG', value: routerConfig({ chat: { pricing } }) }))
      expect(error.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CONFIG_VALUE', details: { key: 'LLM_ROUTER_CONFIG' } })
      return (error.data?.details as { issues: Array<{ path: Array<string | number> }> }).issues.map(issue => issue.path.join('.'))
    }
    const at = (field?: string) => ['models.chat.pricing', ...(field ? [field] : [])].join('.')
    expect(await refusedPaths({ inputPer1M: -1, outputPer1M: 2 })).toEqual([at('inputPer1M')])
    expect(await refusedPaths({ inputPer1M: 1, outputPer1M: '2' })).toEqual([at('outputPer1M')])
    // JSON has no Infinity or NaN: a client's serialiser sends them as null.
    expect(await refusedPaths({ inputPer1M: 1, outputPer1M: null })).toEqual([at('outputPer1M')])
    expect(await refusedPaths({ inputPer1M: 1, outputPer1M: 2, cachedInputPer1M: -0.5 })).toEqual([at('cachedInputPer1M')])
    expect(await refusedPaths({ inputPer1M: 1, outputPer1M: 2, minFlux: 1.5 })).toEqual([at('minFlux')])
    expect(await refusedPaths({ inputPer1M: 1, outputPer1M: 2, minFlux: -1 })).toEqual([at('minFlux')])
    expect(await refusedPaths({ inputPer1M: 1, outputPer1M: 2, reserve: 0 })).toEqual([at('reserve')])
    expect(await refusedPaths({ inputPer1M: 1 })).toEqual([at('outputPer1M')])
    expect(await refusedPaths({ inputPer1M: 1, outputPer1M: 2, cachedInputPer1m: 0.5 })).toEqual([at()])

    expect((await admin.admin.config.get.query({ key: 'LLM_ROUTER_CONFIG' })).value).toEqual(before)
  })
})

describe('a reply made on the server', () => {
  it('is priced and logged through the same settlement', async () => {
    const user = await createVerifiedUser(server)
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    try {
      await configure({ 'reply-priced': { pricing: { inputPer1M: 1000, outputPer1M: 4000, cachedInputPer1M: 100 } } }, 'reply-priced')
      const character = await createCharacter(sdk, { prompts: [{ language: 'en', type: 'system', content: 'You are a priced helper.' }] })
      const chatId = await botChat(sdk, character)
      const pace = createPacer()
      fake.behave(() => ({ ...answered({ prompt_tokens: 900, completion_tokens: 300, cached_tokens: 600 }, 'A reply, priced.')(), pace }))

      const { reply } = await sdk.chats.respond.mutate({ chatId, message: { id: randomUUID(), content: 'Hello?' } })
      await until(() => fake.requests.length === 1, 'the reply\'s upstream call')
      clock.advance(30)
      pace.releaseAll()
      expect(await replyEnded(sdk, chatId, reply.id)).toMatchObject({ status: 'complete' })

      // (300 fresh × 1 000 + 600 cached × 100 + 300 × 4 000) / 1e6 = 1.56 → 2.
      const rows = await ledger(user)
      expect(rows.map(([kind]) => kind)).toEqual(['reserve', 'refund'])
      expect(rows[0]![1] - rows[1]![1]).toBe(2)
      expect(await balance(user)).toBe(98)
      expect(await logRow(user)).toMatchObject({ status: 200, usage_source: 'upstream', prompt_tokens: 900, completion_tokens: 300, cached_tokens: 600, first_token_ms: 30, duration_ms: 30, flux_consumed: 2 })
    }
    finally {
      await sdk.close()
    }
  })
})
