import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { ConfigValue } from '@airi/api'
import { createAiriClient } from '@airi/sdk'
import { fakeEmbedding, startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * POST /api/v1/openai/embeddings (docs/gateway.md#embeddings) through the official
 * openai client against the fake upstream: the vectors in order, billing per input
 * token as the ledger, the request log and usage.calls show it, the flat rule,
 * fallback and refunds, and the request's bounds.
 */

type Pricing = NonNullable<ConfigValue<'LLM_ROUTER_CONFIG'>['models'][string]['pricing']>

let server: TestServer
let fake: FakeUpstream

beforeAll(async () => {
  ;[server, fake] = await Promise.all([startTestServer(), startFakeOpenAIUpstream({ name: 'embedder' })])
})
afterAll(async () => {
  await server?.close()
  await fake?.close()
})

const UPSTREAM_MODEL = 'text-embedding-3-small'

/** One alias on the fake, with one upstream per key in `keys` (in order, so a failing first one falls back). */
async function route(alias: string, { pricing, keys = ['sk-good'] }: { pricing?: Pricing, keys?: string[] } = {}): Promise<void> {
  fake.reset()
  const upstreams = keys.map((apiKey, index) => ({
    id: `up-${index}`,
    baseUrl: fake.url,
    model: UPSTREAM_MODEL,
    keys: [server.api.services.llmGateway.encryptKey(alias, `k${index}`, apiKey)].map(({ keyId, ciphertext }) => ({ id: keyId, ciphertext })),
  }))
  await server.api.services.config.set('LLM_ROUTER_CONFIG', { models: { [alias]: { upstreams, ...(pricing ? { pricing } : {}) } } })
}

const openai = (token: string) => new OpenAI({ apiKey: token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
const fails = (promise: Promise<unknown>) => promise.then(() => expect.fail('the call succeeded'), (error: unknown) => error as InstanceType<typeof OpenAI.APIError>)

/** The gateway's ledger rows for `user`, in order: [reserve|settle|refund, amount]. */
async function ledger(user: TestUser): Promise<Array<[string, number]>> {
  const rows = await server.database.db.selectFrom('flux_transaction').select(['request_id', 'amount']).where('user_id', '=', user.id).where('request_id', 'like', 'llm:%').orderBy('seq').execute()
  return rows.map(row => [row.request_id!.split(':')[2]!, row.amount])
}

async function logRows(user: TestUser) {
  return server.database.db.selectFrom('llm_request_log')
    .select(['kind', 'model', 'state', 'status', 'upstream', 'usage_source', 'prompt_tokens', 'completion_tokens', 'flux_reserved', 'flux_consumed'])
    .where('user_id', '=', user.id).execute()
}

/** What the reservation counts for `texts`: the alias's tokenizer over them, plus the few tokens of the counter's priming. */
async function counted(alias: string, texts: string[]): Promise<number> {
  const { count } = await server.api.services.llmGateway.tokenCounter(alias)
  return count(texts.join('\n')) + 3
}

const balance = (user: TestUser) => server.api.services.billing.getBalance(user.id)

describe('a priced alias', () => {
  // One Flux per input token: the reservation and the bill are the token counts themselves.
  const pricing = { inputPer1M: 1_000_000, outputPer1M: 0 }

  it('embeds one string, bills the upstream\'s prompt tokens, and shows the call in the log and in usage', async () => {
    const user = await createVerifiedUser(server)
    await route('embed', { pricing })
    const text = 'The quick brown fox jumps over the lazy dog'

    const result = await openai(user.token).embeddings.create({ model: 'embed', input: text })
    // The client asked for base64 (its default) and decoded it: the same numbers as floats.
    expect(fake.requests[0]!.body).toMatchObject({ model: UPSTREAM_MODEL, input: text, encoding_format: 'base64' })
    expect(result.data).toEqual([{ object: 'embedding', index: 0, embedding: fakeEmbedding(text) }])
    expect(result.usage).toEqual({ prompt_tokens: 9, total_tokens: 9 })

    // Reserved on our count of the input; the fake counts one token per word: 9 Flux.
    const reserved = await counted('embed', [text])
    expect(await ledger(user)).toEqual([['reserve', reserved], ['refund', reserved - 9]])
    expect(await balance(user)).toBe(100 - 9)
    expect(await logRows(user)).toEqual([{ kind: 'embedding', model: 'embed', state: 'completed', status: 200, upstream: 'up-0', usage_source: 'upstream', prompt_tokens: 9, completion_tokens: 0, flux_reserved: reserved, flux_consumed: 9 }])

    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    try {
      const { items } = await sdk.usage.calls.query({ kind: 'embedding' })
      expect(items).toMatchObject([{ kind: 'embedding', model: 'embed', status: 'completed', inputTokens: 9, flux: 9 }])
    }
    finally {
      await sdk.close()
    }
  })

  it('embeds an array in order, passes dimensions through, and never charges past the reservation', async () => {
    const user = await createVerifiedUser(server)
    await route('embed', { pricing })
    const input = ['alpha beta', 'gamma', 'alpha beta']
    const reserved = await counted('embed', input)
    // An upstream counting far more than we did still pays only what was reserved.
    fake.behave(() => ({ kind: 'complete', content: '', usage: { prompt_tokens: reserved + 50, completion_tokens: 0 } }))

    const result = await openai(user.token).embeddings.create({ model: 'embed', input, dimensions: 8, encoding_format: 'float' })
    expect(fake.requests[0]!.body).toMatchObject({ input, dimensions: 8, encoding_format: 'float' })
    expect(result.data.map(item => item.index)).toEqual([0, 1, 2])
    expect(result.data.map(item => item.embedding)).toEqual(input.map(text => fakeEmbedding(text, 8)))

    expect(await ledger(user)).toEqual([['reserve', reserved]])
    expect(await logRows(user)).toMatchObject([{ kind: 'embedding', prompt_tokens: reserved + 50, flux_reserved: reserved, flux_consumed: reserved }])
  })
})

describe('an alias without a price', () => {
  it('reserves at least FLUX_PER_REQUEST and settles on FLUX_PER_1K_TOKENS', async () => {
    const user = await createVerifiedUser(server)
    await route('plain')
    await server.api.services.config.set('FLUX_PER_REQUEST', 5)
    await server.api.services.config.set('FLUX_PER_1K_TOKENS', 1000)
    try {
      await openai(user.token).embeddings.create({ model: 'plain', input: 'hi' })
      // 'hi' is 1 token (4 counted): the floor of 5 is reserved; the fake's 1 token costs 1.
      expect(await ledger(user)).toEqual([['reserve', 5], ['refund', 4]])
      expect(await logRows(user)).toMatchObject([{ kind: 'embedding', prompt_tokens: 1, flux_reserved: 5, flux_consumed: 1 }])
    }
    finally {
      await server.api.services.config.set('FLUX_PER_REQUEST', 1)
      await server.api.services.config.set('FLUX_PER_1K_TOKENS', 1)
    }
  })
})

describe('failures', () => {
  it('falls back to the next upstream, and refunds the reservation when every upstream fails', async () => {
    const user = await createVerifiedUser(server)
    await route('embed', { keys: ['sk-bad', 'sk-good'] })
    fake.behave(({ key }) => key === 'sk-bad' ? { kind: 'status', status: 500 } : { kind: 'complete', content: '' })
    await openai(user.token).embeddings.create({ model: 'embed', input: 'one two' })
    expect((await logRows(user))[0]).toMatchObject({ status: 200, upstream: 'up-1', flux_consumed: 1 })

    const other = await createVerifiedUser(server)
    fake.behave(() => ({ kind: 'status', status: 503 }))
    const error = await fails(openai(other.token).embeddings.create({ model: 'embed', input: 'one two' }))
    expect(error.status).toBe(502)
    expect(error.error).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE' })
    expect(await ledger(other)).toEqual([['reserve', 1], ['refund', 1]])
    expect(await balance(other)).toBe(100)
    expect(await logRows(other)).toMatchObject([{ kind: 'embedding', state: 'completed', status: 502, upstream: null, flux_consumed: 0 }])
  })

  it('404 for an unknown alias, with nothing billed or logged', async () => {
    const user = await createVerifiedUser(server)
    await route('embed')
    const error = await fails(openai(user.token).embeddings.create({ model: 'nope', input: 'hello' }))
    expect(error.status).toBe(404)
    expect(error.error).toMatchObject({ code: 'MODEL_NOT_FOUND' })
    expect(await ledger(user)).toEqual([])
    expect(await logRows(user)).toEqual([])
    expect(fake.requests).toHaveLength(0)
  })

  it('400 in OpenAI\'s shape for input past the bounds, before anything is billed', async () => {
    const user = await createVerifiedUser(server)
    await route('embed')
    const cases: Array<Parameters<OpenAI['embeddings']['create']>[0]> = [
      { model: 'embed', input: Array.from({ length: 2049 }, () => 'x') },
      { model: 'embed', input: 'x'.repeat(32_769) },
      { model: 'embed', input: Array.from({ length: 40 }, () => 'x'.repeat(32_768)) },
      { model: 'embed', input: [] },
      { model: 'embed', input: '' },
      { model: 'embed', input: [1, 2, 3] },
    ]
    for (const body of cases) {
      const error = await fails(openai(user.token).embeddings.create(body))
      expect(error.status).toBe(400)
      expect(error.error).toMatchObject({ code: 'BAD_REQUEST', type: 'invalid_request_error' })
      expect(error.param).toMatch(/^input/)
    }
    expect(await ledger(user)).toEqual([])
    expect(fake.requests).toHaveLength(0)
  })

  it('401 without a valid token', async () => {
    const error = await fails(openai('not-a-token').embeddings.create({ model: 'embed', input: 'hello' }))
    expect(error.status).toBe(401)
    expect(error.error).toMatchObject({ code: 'UNAUTHORIZED', type: 'invalid_request_error' })
  })
})
