import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { AiriError, createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { until } from '@airi/tooling/test/until'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

// `client.rest.chatCompletion` and `streamChatCompletion` (docs/sdk.md) against the real
// gateway and a fake upstream: what they answer, what the call is billed, and how each
// way of failing reaches the caller as one AiriError.

let server: TestServer
let upstream: FakeUpstream

beforeAll(async () => {
  upstream = await startFakeOpenAIUpstream()
  server = await startTestServer()
}, 120_000)

afterAll(async () => {
  await server?.close()
  await upstream?.close()
})

/** Points `chat` at `target`, at one Flux per token in and out, so every token shows in the balance. */
async function route(target: FakeUpstream): Promise<void> {
  const { keyId, ciphertext } = server.api.services.llmGateway.encryptKey('chat', 'k0', 'sk-fake')
  await server.api.services.config.set('LLM_ROUTER_CONFIG', {
    models: { chat: { upstreams: [{ id: target.name, baseUrl: target.url, model: 'gpt-4o-mini', keys: [{ id: keyId, ciphertext }] }], pricing: { inputPer1M: 1_000_000, outputPer1M: 1_000_000 } } },
  })
}

const clientOf = (user: TestUser | null): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => user?.token ?? null })
const balance = (user: TestUser) => server.api.services.billing.getBalance(user.id)
const logRows = (user: TestUser) => server.database.db.selectFrom('llm_request_log').selectAll().where('user_id', '=', user.id).execute()
const MESSAGES = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Say hello.' }]

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(() => expect.unreachable('the call should have failed'), (error: unknown) => error)
}

async function airiRejection(promise: Promise<unknown>): Promise<AiriError> {
  const error = await rejection(promise)
  expect(error).toBeInstanceOf(AiriError)
  return error as AiriError
}

describe('the SDK\'s chat-completion helpers', () => {
  beforeAll(async () => {
    await route(upstream)
  })

  it('answers a plain completion with its usage, billed before it resolves', async () => {
    const user = await createVerifiedUser(server)
    upstream.behave(() => ({ kind: 'complete', content: 'Hello there, traveller.', usage: { prompt_tokens: 10, completion_tokens: 20 } }))
    const before = await balance(user)

    const answer = await clientOf(user).rest.chatCompletion({ model: 'chat', messages: MESSAGES, max_tokens: 50, temperature: 0.2 })
    expect(answer.choices[0]).toMatchObject({ message: { role: 'assistant', content: 'Hello there, traveller.' }, finish_reason: 'stop' })
    expect(answer.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 })
    // 30 tokens at one Flux each, settled before the answer was sent.
    expect(before - await balance(user)).toBe(30)
    expect(upstream.requests.at(-1)!.body).toMatchObject({ messages: MESSAGES, temperature: 0.2, max_tokens: 50 })
  })

  it('streams the deltas as they come and resolves with the whole text, the finish reason and the usage', async () => {
    const user = await createVerifiedUser(server)
    const content = 'Streaming is just many small answers, one after another.'
    upstream.behave(() => ({ kind: 'complete', content, usage: { prompt_tokens: 10, completion_tokens: 20 } }))
    const before = await balance(user)

    const deltas: string[] = []
    const result = await clientOf(user).rest.streamChatCompletion({ model: 'chat', messages: MESSAGES, max_tokens: 50 }, { onDelta: text => deltas.push(text) })
    expect(deltas.length).toBeGreaterThan(1)
    expect(deltas.join('')).toBe(content)
    expect(result).toEqual({ text: content, finishReason: 'stop', usage: { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 } })
    // A stream settles after its last chunk; the SDK read the stream to its end, so the call completed.
    await until(async () => (await logRows(user))[0]?.state === 'completed', 'the streamed call to settle')
    expect((await logRows(user))[0]).toMatchObject({ status: 200, flux_consumed: 30 })
    expect(before - await balance(user)).toBe(30)
  })

  it('a refusal before any answer is an AiriError with the gateway\'s status and code: 401, 400 naming the field, 402', async () => {
    const user = await createVerifiedUser(server)
    upstream.reset()

    const anonymous = await airiRejection(clientOf(null).rest.streamChatCompletion({ model: 'chat', messages: MESSAGES }))
    expect([anonymous.status, anonymous.code]).toEqual([401, 'UNAUTHORIZED'])

    const bad = await airiRejection(clientOf(user).rest.chatCompletion({ model: 'chat', messages: MESSAGES, max_tokens: 0 }))
    expect([bad.status, bad.code]).toEqual([400, 'BAD_REQUEST'])
    expect(bad.message).toContain('max_tokens')
    expect(bad.details).toMatchObject({ param: 'max_tokens' })

    await server.api.services.billing.debit({ userId: user.id, amount: await balance(user), requestId: 'test:empty' })
    // One after the other: a call started before the loop reaches it would reject with no handler yet.
    for (const call of [() => clientOf(user).rest.chatCompletion({ model: 'chat', messages: MESSAGES }), () => clientOf(user).rest.streamChatCompletion({ model: 'chat', messages: MESSAGES })]) {
      const broke = await airiRejection(call())
      expect([broke.status, broke.code]).toEqual([402, 'INSUFFICIENT_FLUX'])
    }
    expect(upstream.requests).toHaveLength(0)
  })

  it('an upstream that breaks off mid-stream rejects with the gateway\'s error event as an AiriError', async () => {
    const user = await createVerifiedUser(server)
    const flaky = await startFakeOpenAIUpstream({ name: 'flaky' })
    let closed = false
    try {
      await route(flaky)
      flaky.behave(() => ({ kind: 'complete', content: 'the '.repeat(40), stallAfter: 2 }))
      const deltas: string[] = []
      const call = clientOf(user).rest.streamChatCompletion({ model: 'chat', messages: MESSAGES, max_tokens: 50 }, { onDelta: text => deltas.push(text) })
      await until(() => deltas.length === 2, 'the first two deltas')
      // The upstream's connection dies with the answer half sent.
      closed = true
      await flaky.close()

      const error = await airiRejection(call)
      expect([error.status, error.code]).toEqual([502, 'UPSTREAM_UNAVAILABLE'])
      expect(deltas.join('')).toBe('the the ')
    }
    finally {
      if (!closed)
        await flaky.close()
      await route(upstream)
    }
  })

  it('a stream cut before [DONE] rejects with STREAM_INTERRUPTED', async () => {
    const user = await createVerifiedUser(server)
    upstream.behave(() => ({ kind: 'complete', content: 'Cut short.' }))
    // A network path that loses the end of the stream: the real server's bytes, until the one that says it is done.
    const cutting: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      const reader = response.body!.getReader()
      const decoder = new TextDecoder()
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const { done, value } = await reader.read()
          if (done || decoder.decode(value, { stream: true }).includes('[DONE]')) {
            await reader.cancel()
            controller.close()
            return
          }
          controller.enqueue(value)
        },
      })
      return new Response(body, { status: response.status, headers: response.headers })
    }
    const client = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, fetch: cutting })
    const error = await airiRejection(client.rest.streamChatCompletion({ model: 'chat', messages: MESSAGES, max_tokens: 50 }))
    expect(error.code).toBe('STREAM_INTERRUPTED')
  })

  it('aborting through the signal rejects with its reason, calls nothing more, and the call is charged only for what was sent', async () => {
    const user = await createVerifiedUser(server)
    // A few pieces, then the upstream waits: only the abort ends the call.
    upstream.behave(() => ({ kind: 'complete', content: 'the '.repeat(40), usage: { prompt_tokens: 500, completion_tokens: 500 }, stallAfter: 3 }))
    const before = await balance(user)
    const controller = new AbortController()
    const reason = new Error('the person pressed stop')
    const deltas: string[] = []

    const error = await rejection(clientOf(user).rest.streamChatCompletion({ model: 'chat', messages: MESSAGES, max_tokens: 50 }, {
      signal: controller.signal,
      onDelta: (text) => {
        deltas.push(text)
        controller.abort(reason)
      },
    }))
    expect(error).toBe(reason)
    expect(deltas).toEqual(['the '])

    // docs/gateway.md: a stream the client aborts pays for the prompt and what was relayed
    // (counted, since the usage chunk never came); the rest of the reservation comes back.
    await until(async () => (await logRows(user))[0]?.state === 'completed', 'the aborted call to settle')
    const [row] = await logRows(user)
    expect(row).toMatchObject({ status: 499, usage_source: 'counted' })
    expect(row!.flux_consumed).toBeLessThan(row!.flux_reserved)
    expect(before - await balance(user)).toBe(row!.flux_consumed)
  })
})
