import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { DEFAULT_CONTENT, fakeExtraction, startFakeOpenAIUpstream, type FakeUpstream } from './openai-upstream.ts'

// JSON mode is how the server asks for memories (packages/api/src/services/memory/extraction.ts); the fake answers it with facts.

let upstream: FakeUpstream

beforeAll(async () => {
  upstream = await startFakeOpenAIUpstream()
})
afterAll(async () => {
  await upstream.close()
})
beforeEach(() => {
  upstream.reset()
})

/** A user message shaped like the one extraction.ts sends. */
const turn = (person: string) => `<person_message>\n${person}\n</person_message>\n\n<assistant_reply>\nI am the assistant. My name is Airi.\n</assistant_reply>\n\n<remembered>\n- I live in Paris\n</remembered>`

async function chat(body: object): Promise<Response> {
  return fetch(`${upstream.url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'authorization': 'Bearer sk-upstream-1' },
    body: JSON.stringify({ model: 'upstream-model', ...body }),
  })
}

async function contentOf(response: Response): Promise<string> {
  expect(response.status).toBe(200)
  const answer = await response.json() as { choices: Array<{ message: { content: string }, finish_reason: string }> }
  expect(answer.choices[0]!.finish_reason).toBe('stop')
  return answer.choices[0]!.message.content
}

describe('fake OpenAI upstream in JSON mode', () => {
  it('answers with the person\'s statements about themselves, from the last user message only', async () => {
    const response = await chat({
      response_format: { type: 'json_object' },
      max_tokens: 512,
      messages: [
        { role: 'system', content: 'Extract facts. I am the system prompt.' },
        { role: 'user', content: turn('I am the wrong turn.') },
        { role: 'assistant', content: '{"memories":[]}' },
        { role: 'user', content: turn('Hi there! My cat is called Miso. I moved to Lyon in 2024.\nDo you like cats? I wonder if you do?\n我喜欢吃火锅。今天天气很好。我住在上海！') },
      ],
    })
    expect(JSON.parse(await contentOf(response))).toEqual({
      memories: [
        { content: 'My cat is called Miso.', importance: 3 },
        { content: 'I moved to Lyon in 2024.', importance: 3 },
        { content: '我喜欢吃火锅。', importance: 3 },
        { content: '我住在上海！', importance: 3 },
      ],
    })
  })

  it('reads a user message without the tags whole, and content parts', async () => {
    const plain = await chat({ response_format: { type: 'json_object' }, messages: [{ role: 'user', content: 'I like tea. Nice weather.' }] })
    expect(JSON.parse(await contentOf(plain))).toEqual({ memories: [{ content: 'I like tea.', importance: 3 }] })
    const parts = await chat({ response_format: { type: 'json_object' }, messages: [{ role: 'user', content: [{ type: 'text', text: turn('My sister is Anna.') }] }] })
    expect(JSON.parse(await contentOf(parts))).toEqual({ memories: [{ content: 'My sister is Anna.', importance: 3 }] })
  })

  it('answers an empty list when nothing is about the person', async () => {
    const response = await chat({ response_format: { type: 'json_object' }, messages: [{ role: 'user', content: turn('Hello! What time is it? In Paris it rains.') }] })
    expect(JSON.parse(await contentOf(response))).toEqual({ memories: [] })
  })

  it('streams the same JSON when asked to stream', async () => {
    const response = await chat({ stream: true, response_format: { type: 'json_object' }, messages: [{ role: 'user', content: turn('I like green tea. My dog is Rex.') }] })
    const text = await response.text()
    const content = text.split('\n\n').filter(event => event.startsWith('data: {'))
      .map(event => (JSON.parse(event.slice('data: '.length)) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content ?? '')
      .join('')
    expect(JSON.parse(content)).toEqual({ memories: fakeExtraction('I like green tea. My dog is Rex.') })
  })

  it('keeps plain requests, and other response formats, on the default answer', async () => {
    for (const extra of [{}, { response_format: { type: 'text' } }, { response_format: null }]) {
      const response = await chat({ ...extra, messages: [{ role: 'user', content: turn('I like tea.') }] })
      expect(await contentOf(response)).toBe(DEFAULT_CONTENT)
    }
  })

  it('lets a scripted behaviour override the JSON-mode answer', async () => {
    upstream.behave(() => ({ kind: 'complete', content: 'Sure! Here are the facts: you like tea.' }))
    const response = await chat({ response_format: { type: 'json_object' }, messages: [{ role: 'user', content: turn('I like tea.') }] })
    expect(await contentOf(response)).toBe('Sure! Here are the facts: you like tea.')
  })
})
