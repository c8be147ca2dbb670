import { createParser } from 'eventsource-parser'
import { modelToEncodingMap } from 'gpt-tokenizer/mapping'

import type { LlmUsageSource } from '@airi/db'

import type { ChatCompletionBody } from './router.ts'

/** OpenAI's `usage` object, as far as billing reads it. */
export interface Usage {
  prompt_tokens?: number
  completion_tokens?: number
  total_tokens?: number
  /** `cached_tokens`: the part of `prompt_tokens` the upstream served from its prompt cache. */
  prompt_tokens_details?: { cached_tokens?: number }
}

export interface Tokens {
  prompt: number | null
  completion: number | null
  /** Null when the upstream did not say (and always for our own count). */
  cached: number | null
  total: number | null
}

/** What a call is billed on, and where the numbers came from. */
export interface MeasuredUsage {
  usage: Usage
  source: Extract<LlmUsageSource, 'upstream' | 'counted' | 'estimated'>
}

export function tokensOf(usage: Usage | undefined): Tokens {
  if (!usage)
    return { prompt: null, completion: null, cached: null, total: null }
  const total = usage.total_tokens ?? ((usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0))
  return { prompt: usage.prompt_tokens ?? null, completion: usage.completion_tokens ?? null, cached: usage.prompt_tokens_details?.cached_tokens ?? null, total }
}

const isCount = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0

/** The upstream's `usage`, if it is one we can bill on (OpenAI sends `usage: null` on every other chunk). */
export function usageIn(payload: unknown): Usage | undefined {
  const usage = (payload as { usage?: unknown } | null)?.usage
  if (typeof usage !== 'object' || usage === null)
    return undefined
  const { prompt_tokens: prompt, completion_tokens: completion, total_tokens: total, prompt_tokens_details: details } = usage as Record<string, unknown>
  if (!isCount(total) && !(isCount(prompt) && isCount(completion)))
    return undefined
  const cached = (details as { cached_tokens?: unknown } | null | undefined)?.cached_tokens
  return {
    ...(isCount(prompt) ? { prompt_tokens: prompt } : {}),
    ...(isCount(completion) ? { completion_tokens: completion } : {}),
    ...(isCount(total) ? { total_tokens: total } : {}),
    // Cached tokens are part of the prompt: more than the prompt is no count to bill on.
    ...(isCount(prompt) && isCount(cached) && cached <= prompt ? { prompt_tokens_details: { cached_tokens: cached } } : {}),
  }
}

/**
 * Text to count, kept up to a bound: counting is CPU on the event loop (about
 * 250 ms per MB), so past `MAX_COUNTED_CHARS` the rest is extrapolated at the
 * tokens-per-character rate of the part that was counted.
 */
export class TextTally {
  static readonly MAX_COUNTED_CHARS = 256 * 1024
  private readonly parts: string[] = []
  private kept = 0
  chars = 0

  private readonly separator: string

  /** `separator` goes between parts: none for the pieces of one text, a newline between a prompt's fields. */
  constructor(separator = '') {
    this.separator = separator
  }

  add(text: unknown): void {
    if (typeof text !== 'string' || text.length === 0)
      return
    this.chars += text.length
    if (this.kept < TextTally.MAX_COUNTED_CHARS) {
      const part = text.slice(0, TextTally.MAX_COUNTED_CHARS - this.kept)
      this.parts.push(part)
      this.kept += part.length
    }
  }

  /** Any JSON (tool definitions, tool-call arguments) counts as its serialised text. */
  addJson(value: unknown): void {
    if (value !== undefined && value !== null)
      this.add(typeof value === 'string' ? value : JSON.stringify(value))
  }

  count(encode: (text: string) => number): number {
    if (this.kept === 0)
      return 0
    const counted = encode(this.parts.join(this.separator))
    return this.chars === this.kept ? counted : Math.ceil(counted * this.chars / this.kept)
  }
}

/** The generated text of one choice: its `delta` (streaming) or `message`. */
function addGenerated(tally: TextTally, part: unknown): void {
  if (typeof part !== 'object' || part === null)
    return
  const { content, reasoning_content: reasoningContent, reasoning, refusal, tool_calls: toolCalls, function_call: functionCall } = part as Record<string, unknown>
  tally.add(content)
  tally.add(reasoningContent)
  tally.add(reasoning)
  tally.add(refusal)
  for (const call of [...(Array.isArray(toolCalls) ? toolCalls : []), functionCall]) {
    const fn = (call as { function?: unknown } | undefined)?.function ?? call
    if (typeof fn === 'object' && fn !== null) {
      tally.add((fn as { name?: unknown }).name)
      tally.add((fn as { arguments?: unknown }).arguments)
    }
  }
}

/** Adds the generated text of a response or chunk's `choices` to `tally`. */
export function addChoices(tally: TextTally, payload: unknown, field: 'delta' | 'message'): void {
  const choices = (payload as { choices?: unknown } | null)?.choices
  if (!Array.isArray(choices))
    return
  for (const choice of choices)
    addGenerated(tally, (choice as Record<string, unknown> | null)?.[field])
}

/** The prompt as text: every message's role, name, text parts and tool calls, and the tool definitions. */
export function promptOf(body: ChatCompletionBody): { tally: TextTally, messages: number } {
  const tally = new TextTally('\n')
  for (const message of body.messages) {
    if (typeof message !== 'object' || message === null)
      continue
    const { role, name, content, tool_calls: toolCalls, tool_call_id: toolCallId } = message as Record<string, unknown>
    tally.add(role)
    tally.add(name)
    tally.add(toolCallId)
    if (typeof content === 'string')
      tally.add(content)
    else if (Array.isArray(content))
      // Text parts only: images and audio are not counted (see docs/gateway.md).
      content.forEach(part => tally.add((part as { text?: unknown } | null)?.text))
    if (toolCalls !== undefined)
      tally.addJson(toolCalls)
  }
  tally.addJson(body.tools)
  tally.addJson(body.functions)
  return { tally, messages: body.messages.length }
}

/**
 * Reads an OpenAI-shaped SSE stream (any line ending: LF, CRLF or CR) and hands each
 * event's JSON payload to `onPayload` (`[DONE]` and events that are not JSON are
 * skipped). A stream that is not SSE, or a line past the buffer bound, ends the
 * reading; `feed` never throws.
 */
export function createSseJsonReader(onPayload: (payload: unknown) => void): { feed: (text: string) => void } {
  let broken = false
  const parser = createParser({
    // Generous for one event; bounds memory against an upstream that never ends a line.
    maxBufferSize: 8 * 1024 * 1024,
    onEvent(event) {
      if (event.data === '[DONE]')
        return
      let payload: unknown
      try {
        payload = JSON.parse(event.data)
      }
      catch {
        return
      }
      onPayload(payload)
    },
    onError() {
      broken = true
    },
  })
  return {
    feed(text: string): void {
      if (broken)
        return
      try {
        parser.feed(text)
      }
      catch {
        // A parser past its buffer bound refuses more input; reading stops there.
        broken = true
      }
    },
  }
}

/**
 * Watches a relayed SSE stream for the usage chunk and tallies the generated
 * text, for counting when the usage never comes. A stream that is not SSE only
 * ends the watching; the bytes are relayed anyway.
 */
export function createStreamWatcher() {
  let usage: Usage | undefined
  const completion = new TextTally()
  const reader = createSseJsonReader((payload) => {
    usage = usageIn(payload) ?? usage
    addChoices(completion, payload, 'delta')
  })
  return {
    feed: reader.feed,
    get usage() {
      return usage
    },
    completion,
  }
}

type EncodingName = 'o200k_base' | 'cl100k_base'

/**
 * The tokenizer for an upstream model: gpt-tokenizer's own model table (provider
 * prefixes such as `openai/` dropped), with o200k_base for OpenAI families it has
 * not listed yet. Any other family is estimated with o200k_base.
 */
export function tokenizerFor(upstreamModel: string): { encoding: EncodingName, known: boolean } {
  const name = upstreamModel.slice(upstreamModel.lastIndexOf('/') + 1).toLowerCase()
  if (Object.hasOwn(modelToEncodingMap, name)) {
    const encoding = modelToEncodingMap[name as keyof typeof modelToEncodingMap]
    if (encoding === 'cl100k_base')
      return { encoding, known: true }
    if (encoding === 'o200k_base' || encoding === 'o200k_harmony')
      return { encoding: 'o200k_base', known: true }
    // Pre-chat models (p50k, r50k) cannot answer chat completions.
    return { encoding: 'o200k_base', known: false }
  }
  return { encoding: 'o200k_base', known: /^(?:gpt-|chatgpt-|o\d)/.test(name) }
}

const encoders = new Map<EncodingName, Promise<(text: string) => number>>()
/** Special-token text in a message is just text to the upstream; count it as such. */
const asPlainText = { disallowedSpecial: new Set<string>() }

/** Loaded on first use: each encoding's table is megabytes and takes a second to load. */
function encoder(name: EncodingName): Promise<(text: string) => number> {
  let loaded = encoders.get(name)
  if (!loaded) {
    loaded = (name === 'cl100k_base' ? import('gpt-tokenizer/encoding/cl100k_base') : import('gpt-tokenizer/encoding/o200k_base'))
      .then(encoding => (text: string) => encoding.countTokens(text, asPlainText))
    loaded.catch(() => encoders.delete(name))
    encoders.set(name, loaded)
  }
  return loaded
}

/** The token counter of an upstream model's tokenizer (see `tokenizerFor`). */
export async function tokenCounterFor(upstreamModel: string): Promise<(text: string) => number> {
  return encoder(tokenizerFor(upstreamModel).encoding)
}

/** OpenAI's chat framing: a few tokens around every message, and the reply's priming. */
export const TOKENS_PER_MESSAGE = 3
const TOKENS_PER_REPLY = 3

function countWith(count: (text: string) => number, prompt: { tally: TextTally, messages: number }): number {
  return prompt.tally.count(count) + prompt.messages * TOKENS_PER_MESSAGE + TOKENS_PER_REPLY
}

/** Our count of the prompt alone, with the upstream model's tokenizer: what the reservation is sized on. */
export async function countPrompt(upstreamModel: string, prompt: { tally: TextTally, messages: number }): Promise<number> {
  return countWith(await encoder(tokenizerFor(upstreamModel).encoding), prompt)
}

/**
 * Our own count of a call whose upstream reported no usage: the prompt, and the
 * generated text that was relayed. `counted` for a model family the tokenizer
 * knows, `estimated` for any other.
 */
export async function countUsage(upstreamModel: string, prompt: { tally: TextTally, messages: number }, completion: TextTally): Promise<MeasuredUsage> {
  const { encoding, known } = tokenizerFor(upstreamModel)
  const count = await encoder(encoding)
  const promptTokens = countWith(count, prompt)
  const completionTokens = completion.count(count)
  return {
    usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    source: known ? 'counted' : 'estimated',
  }
}
