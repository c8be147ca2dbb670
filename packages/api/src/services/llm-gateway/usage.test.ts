import { describe, expect, it } from 'vitest'

import { countUsage, createStreamWatcher, promptOf, TextTally, tokenizerFor, tokensOf, usageIn } from './usage.ts'

const event = (payload: unknown, eol = '\n') => `data: ${JSON.stringify(payload)}${eol}${eol}`
const delta = (content: string) => ({ choices: [{ index: 0, delta: { content } }], usage: null })

describe('the stream watcher', () => {
  it.each([['LF', '\n'], ['CRLF', '\r\n'], ['CR', '\r']])('finds the usage and the text with %s line endings, across chunk boundaries', (_, eol) => {
    const stream = [event(delta('Hello'), eol), event(delta(', world'), eol), event({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } }), `data: [DONE]${eol}${eol}`].join('')
    const watcher = createStreamWatcher()
    // Three bytes at a time: events and line endings split anywhere.
    for (let i = 0; i < stream.length; i += 3)
      watcher.feed(stream.slice(i, i + 3))
    expect(watcher.usage).toEqual({ prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 })
    expect(watcher.completion.chars).toBe('Hello, world'.length)
  })

  it('tallies tool-call arguments and reasoning, and ignores what is not JSON', () => {
    const watcher = createStreamWatcher()
    watcher.feed(event({ choices: [{ delta: { reasoning_content: 'think', tool_calls: [{ function: { name: 'f', arguments: '{"a":1}' } }] } }] }))
    watcher.feed('data: not json\n\n: a comment\n\n')
    expect(watcher.completion.chars).toBe('think'.length + 'f'.length + '{"a":1}'.length)
    expect(watcher.usage).toBeUndefined()
  })
})

describe('usageIn', () => {
  it('takes whole counts only', () => {
    expect(usageIn({ usage: null })).toBeUndefined()
    expect(usageIn({ usage: { total_tokens: -1 } })).toBeUndefined()
    expect(usageIn({ usage: { prompt_tokens: 1.5, completion_tokens: 2 } })).toBeUndefined()
    expect(usageIn({ usage: { prompt_tokens: 1, completion_tokens: 2 } })).toEqual({ prompt_tokens: 1, completion_tokens: 2 })
  })

  it('keeps the cached part of the prompt when it is a count within the prompt', () => {
    const usage = (details: unknown) => usageIn({ usage: { prompt_tokens: 100, completion_tokens: 2, prompt_tokens_details: details } })
    expect(usage({ cached_tokens: 64 })).toEqual({ prompt_tokens: 100, completion_tokens: 2, prompt_tokens_details: { cached_tokens: 64 } })
    expect(tokensOf(usage({ cached_tokens: 64 }))).toEqual({ prompt: 100, completion: 2, cached: 64, total: 102 })
    expect(usage({ cached_tokens: 101 })).toEqual({ prompt_tokens: 100, completion_tokens: 2 })
    expect(usage({ cached_tokens: '64' })).toEqual({ prompt_tokens: 100, completion_tokens: 2 })
    expect(usage(null)).toEqual({ prompt_tokens: 100, completion_tokens: 2 })
    expect(tokensOf(usage(null)).cached).toBeNull()
  })
})

describe('tokenizerFor', () => {
  it.each([
    ['gpt-4o-mini', 'o200k_base', true],
    ['openai/gpt-4o-mini', 'o200k_base', true],
    ['gpt-4', 'cl100k_base', true],
    ['gpt-3.5-turbo', 'cl100k_base', true],
    ['gpt-5.9-future', 'o200k_base', true],
    ['o3-mini', 'o200k_base', true],
    ['anthropic/claude-sonnet-4', 'o200k_base', false],
    ['meta-llama/llama-3.1-70b', 'o200k_base', false],
    ['constructor', 'o200k_base', false],
    ['__proto__', 'o200k_base', false],
  ] as const)('%s → %s (known: %s)', (model, encoding, known) => {
    expect(tokenizerFor(model)).toEqual({ encoding, known })
  })
})

describe('counting', () => {
  it('counts the prompt with the chat framing and the completion as one text', async () => {
    const completion = new TextTally()
    for (const piece of ['the ', 'the ', 'the '])
      completion.add(piece)
    const { usage, source } = await countUsage('gpt-4o', promptOf({ model: 'x', messages: [{ role: 'user', content: 'Tell me a story.' }] }), completion)
    // "user\nTell me a story." is 7 tokens, + 3 per message + 3 for the reply; "the the the " is 4.
    expect(usage).toEqual({ prompt_tokens: 13, completion_tokens: 4, total_tokens: 17 })
    expect(source).toBe('counted')
  })

  it('counts text parts of a multi-part message and tool definitions', async () => {
    const plain = await countUsage('gpt-4o', promptOf({ model: 'x', messages: [{ role: 'user', content: 'hello there' }] }), new TextTally())
    const parts = await countUsage('gpt-4o', promptOf({ model: 'x', messages: [{ role: 'user', content: [{ type: 'text', text: 'hello there' }, { type: 'image_url', image_url: { url: 'https://x' } }] }] }), new TextTally())
    expect(parts.usage).toEqual(plain.usage)
    const withTools = await countUsage('gpt-4o', promptOf({ model: 'x', messages: [{ role: 'user', content: 'hello there' }], tools: [{ type: 'function', function: { name: 'lookup' } }] }), new TextTally())
    expect(withTools.usage.prompt_tokens!).toBeGreaterThan(plain.usage.prompt_tokens!)
  })

  it('counts special-token text as plain text', async () => {
    const completion = new TextTally()
    completion.add('<|endoftext|>')
    const { usage } = await countUsage('gpt-4o', promptOf({ model: 'x', messages: [] }), completion)
    expect(usage.completion_tokens).toBeGreaterThan(1)
  })

  it('counts past the bound by extrapolating the rate of what was counted', () => {
    const tally = new TextTally()
    const chunk = 'x'.repeat(1024)
    for (let i = 0; i < 512; i++)
      tally.add(chunk)
    expect(tally.chars).toBe(512 * 1024)
    // A fake encoder at one token per 4 characters: the counted half extrapolates to the whole.
    expect(tally.count(text => text.length / 4)).toBe(512 * 1024 / 4)
  })
})
