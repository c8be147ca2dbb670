import { setTimeout as sleep } from 'node:timers/promises'

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { until } from '../test/until.ts'
import { createPacer, DEFAULT_USAGE, fakeEmbedding, startFakeOpenAIUpstream, type FakeUpstream } from './openai-upstream.ts'

// The gateway's tests and benchmarks lean on this fake, so it is held to OpenAI's shapes here.

let upstream: FakeUpstream

beforeAll(async () => {
  upstream = await startFakeOpenAIUpstream({ name: 'primary' })
})
afterAll(async () => {
  await upstream.close()
})
beforeEach(() => {
  upstream.reset()
})

function chat(body: object, { key = 'sk-upstream-1', signal }: { key?: string, signal?: AbortSignal } = {}): Promise<Response> {
  return fetch(`${upstream.url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'authorization': `Bearer ${key}` },
    body: JSON.stringify({ model: 'upstream-model', messages: [{ role: 'user', content: 'Hi' }], ...body }),
    signal,
  })
}

/** The JSON payloads of an SSE body, `[DONE]` kept as a string. */
async function events(response: Response): Promise<unknown[]> {
  const text = await response.text()
  return text.split('\n\n').filter(Boolean).map((event) => {
    expect(event.startsWith('data: ')).toBe(true)
    const data = event.slice('data: '.length)
    return data === '[DONE]' ? data : JSON.parse(data)
  })
}

interface Chunk { object: string, model: string, choices: Array<{ delta: { role?: string, content?: string }, finish_reason: string | null }>, usage?: unknown }

describe('fake OpenAI upstream', () => {
  it('answers a chat completion in OpenAI\'s shape, with usage', async () => {
    upstream.behave(() => ({ kind: 'complete', content: 'Hello there', usage: { prompt_tokens: 7, completion_tokens: 3 } }))
    const response = await chat({})
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({
      id: expect.stringMatching(/^chatcmpl-/),
      object: 'chat.completion',
      created: expect.any(Number),
      model: 'upstream-model',
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 },
    })
    expect(upstream.requests).toMatchObject([{ path: '/v1/chat/completions', completed: true, aborted: false }])
  })

  it('answers with default usage, or none when usage is null', async () => {
    expect(await (await chat({})).json()).toHaveProperty('usage', { ...DEFAULT_USAGE, total_tokens: DEFAULT_USAGE.prompt_tokens + DEFAULT_USAGE.completion_tokens })
    upstream.behave(() => ({ kind: 'complete', content: 'x', usage: null }))
    expect(await (await chat({})).json()).not.toHaveProperty('usage')
  })

  it('streams chunks that join back to the content, usage only when asked for', async () => {
    const content = ' Once upon  a time,\nthere was a fox. '
    upstream.behave(() => ({ kind: 'complete', content, usage: { prompt_tokens: 5, completion_tokens: 9 } }))

    const withUsage = await chat({ stream: true, stream_options: { include_usage: true } })
    expect(withUsage.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const streamed = await events(withUsage)
    expect(streamed.at(-1)).toBe('[DONE]')
    const chunks = streamed.slice(0, -1) as Chunk[]
    expect(chunks.every(chunk => chunk.object === 'chat.completion.chunk' && chunk.model === 'upstream-model')).toBe(true)
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' })
    const usageChunk = chunks.at(-1)!
    expect(usageChunk).toMatchObject({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 9, total_tokens: 14 } })
    const finish = chunks.at(-2)!
    expect(finish.choices[0]).toMatchObject({ delta: {}, finish_reason: 'stop' })
    const pieces = chunks.slice(1, -2).map(chunk => chunk.choices[0]!.delta.content)
    expect(pieces).toHaveLength(8)
    expect(pieces.join('')).toBe(content)

    const withoutUsage = (await events(await chat({ stream: true }))).slice(0, -1) as Chunk[]
    expect(withoutUsage.some(chunk => chunk.usage)).toBe(false)
    expect(withoutUsage.at(-1)!.choices[0]!.finish_reason).toBe('stop')
  })

  it('splits the stream into the asked number of chunks, paced by chunkDelayMs', async () => {
    upstream.behave(() => ({ kind: 'complete', content: 'abcdefghij', chunks: 3, chunkDelayMs: 30 }))
    const started = Date.now()
    const chunks = (await events(await chat({ stream: true }))).slice(0, -1) as Chunk[]
    expect(Date.now() - started).toBeGreaterThanOrEqual(4 * 30 - 5)
    const pieces = chunks.slice(1, -1).map(chunk => chunk.choices[0]!.delta.content)
    expect(pieces).toHaveLength(3)
    expect(pieces.join('')).toBe('abcdefghij')
  })

  it('sends each streamed piece only once the test releases it, and ends after the last', async () => {
    const pace = createPacer()
    upstream.behave(() => ({ kind: 'complete', content: 'one two three', pace }))
    const response = await chat({ stream: true })
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
    let received = ''
    const contentSoFar = () => (received.match(/"content":"[^"]*"/g) ?? []).map(field => field.slice('"content":"'.length, -1)).join('')
    // Reads until `condition` holds for what arrived; the stream must not end first.
    const readUntil = async (condition: () => boolean) => {
      while (!condition()) {
        const { value, done } = await reader.read()
        expect(done).toBe(false)
        received += value
      }
    }

    await readUntil(() => received.includes('"role":"assistant"'))
    expect(contentSoFar()).toBe('')
    expect(pace.sent).toBe(0)
    pace.release()
    await readUntil(() => contentSoFar() === 'one ')
    expect(pace.sent).toBe(1)
    pace.release()
    await readUntil(() => contentSoFar() === 'one two ')
    expect(received).not.toContain('[DONE]')
    pace.release()
    await readUntil(() => received.includes('[DONE]'))
    expect(contentSoFar()).toBe('one two three')
    expect(pace.sent).toBe(3)
    await until(() => upstream.requests[0]!.completed, 'the answer to finish')
  })

  it('lets a paced stream go at once with releaseAll, and stops waiting when the client leaves', async () => {
    const all = createPacer()
    upstream.behave(() => ({ kind: 'complete', content: 'a b c d', pace: all }))
    all.releaseAll()
    const pieces = (await events(await chat({ stream: true }))).slice(1, -2) as Chunk[]
    expect(pieces.map(chunk => chunk.choices[0]!.delta.content).join('')).toBe('a b c d')

    upstream.reset()
    const held = createPacer()
    upstream.behave(() => ({ kind: 'complete', content: 'never sent', pace: held }))
    const controller = new AbortController()
    const response = await chat({ stream: true }, { signal: controller.signal })
    await response.body!.getReader().read()
    controller.abort()
    await until(() => upstream.requests[0]!.aborted, 'the abort to be recorded')
    expect(held.sent).toBe(0)
  })

  it('answers a scripted status with OpenAI\'s error shape or the given body', async () => {
    upstream.behave(() => ({ kind: 'status', status: 429 }))
    const limited = await chat({})
    expect(limited.status).toBe(429)
    expect(await limited.json()).toEqual({ error: { message: expect.any(String), type: expect.any(String), code: 'rate_limit_exceeded' } })

    upstream.behave(() => ({ kind: 'status', status: 503, body: { error: { message: 'overloaded' } } }))
    const unavailable = await chat({})
    expect(unavailable.status).toBe(503)
    expect(await unavailable.json()).toEqual({ error: { message: 'overloaded' } })
  })

  it('hangs until the client aborts, and records the abort', async () => {
    upstream.behave(() => ({ kind: 'hang' }))
    const controller = new AbortController()
    const pending = chat({}, { signal: controller.signal })
    await until(() => upstream.requests.length === 1, 'the request to arrive')
    const request = upstream.requests[0]!
    expect(request.aborted).toBe(false)

    await sleep(50)
    controller.abort()
    await expect(pending).rejects.toThrow()
    const abortedAt = Date.now()
    await until(() => request.aborted, 'the abort to be recorded')
    expect(request.abortedAt).toBeGreaterThanOrEqual(abortedAt - 50)
    expect(request.completed).toBe(false)
  })

  it('records an abort in the middle of a stream', async () => {
    upstream.behave(() => ({ kind: 'complete', content: 'one two three four five', chunkDelayMs: 100 }))
    const controller = new AbortController()
    const response = await chat({ stream: true }, { signal: controller.signal })
    await response.body!.getReader().read()
    controller.abort()
    await until(() => upstream.requests[0]!.aborted, 'the abort to be recorded')
    expect(upstream.requests[0]!.completed).toBe(false)
  })

  it('drops the connection, which rejects the fetch', async () => {
    upstream.behave(() => ({ kind: 'drop' }))
    await expect(chat({})).rejects.toThrow()
    expect(upstream.requests).toHaveLength(1)
    expect(upstream.requests[0]!.aborted).toBe(false)
  })

  it('records the bearer token and body, and lets behaviour depend on them', async () => {
    upstream.behave(({ key }) => (key === 'sk-bad' ? { kind: 'status', status: 401 } : { kind: 'complete', content: 'ok' }))
    expect((await chat({}, { key: 'sk-bad' })).status).toBe(401)
    expect((await chat({ temperature: 0.2 }, { key: 'sk-good' })).status).toBe(200)
    expect(upstream.requests.map(request => request.key)).toEqual(['sk-bad', 'sk-good'])
    expect(upstream.requests[1]!.body).toMatchObject({ model: 'upstream-model', temperature: 0.2 })
  })

  it('lists its model, owned by its name', async () => {
    const response = await fetch(`${upstream.url}/models`, { headers: { authorization: 'Bearer sk-list' } })
    expect(await response.json()).toEqual({ object: 'list', data: [{ id: 'upstream-model', object: 'model', created: 0, owned_by: 'primary' }] })
  })

  it('closes even while a request hangs', async () => {
    const other = await startFakeOpenAIUpstream()
    other.behave(() => ({ kind: 'hang' }))
    const pending = fetch(`${other.url}/chat/completions`, { method: 'POST', body: '{}' })
    await until(() => other.requests.length === 1, 'the request to arrive')
    await other.close()
    await expect(pending).rejects.toThrow()
  })
})

describe('embeddings', () => {
  const embed = (body: object) => fetch(`${upstream.url}/embeddings`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'authorization': 'Bearer sk-upstream-1' },
    body: JSON.stringify({ model: 'upstream-model', ...body }),
  })

  it('answers one vector per input, in order, equal for equal texts, with one token per word', async () => {
    const response = await embed({ input: ['two words', 'three more words', 'two words'] })
    expect(response.status).toBe(200)
    const body = await response.json() as { object: string, data: Array<{ index: number, embedding: number[] }>, usage: unknown }
    expect(body.object).toBe('list')
    expect(body.data.map(item => item.index)).toEqual([0, 1, 2])
    expect(body.data[0]!.embedding).toHaveLength(16)
    expect(body.data[0]!.embedding).toEqual(fakeEmbedding('two words'))
    expect(body.data[2]!.embedding).toEqual(body.data[0]!.embedding)
    expect(body.data[1]!.embedding).not.toEqual(body.data[0]!.embedding)
    expect(body.usage).toEqual({ prompt_tokens: 7, total_tokens: 7 })
    expect(upstream.requests[0]!.path).toBe('/v1/embeddings')
  })

  it('honours dimensions and base64, and takes usage and failures from the behaviour', async () => {
    const encoded = await (await embed({ input: 'hello', encoding_format: 'base64', dimensions: 4 })).json() as { data: Array<{ embedding: string }> }
    const bytes = Buffer.from(encoded.data[0]!.embedding, 'base64')
    expect([...new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)]).toEqual(fakeEmbedding('hello', 4))

    upstream.behave(() => ({ kind: 'complete', content: '', usage: { prompt_tokens: 42, completion_tokens: 0 } }))
    expect((await (await embed({ input: 'hello' })).json() as { usage: unknown }).usage).toEqual({ prompt_tokens: 42, total_tokens: 42 })
    upstream.behave(() => ({ kind: 'status', status: 503 }))
    expect((await embed({ input: 'hello' })).status).toBe(503)
  })
})
