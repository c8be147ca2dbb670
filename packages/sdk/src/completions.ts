import { createParser, type EventSourceMessage } from 'eventsource-parser'

import { AiriError } from './errors.ts'

// Chat completions through the gateway (`POST /api/v1/openai/chat/completions`,
// docs/gateway.md), plain and streamed, on the REST helpers' one request path, so a
// refusal before any answer is the same AiriError as on every other route.

/** A text part of a message; the gateway passes other parts (images, audio) on without counting them. */
export interface ChatContentPart { type: 'text', text: string }

export interface ChatCompletionMessage {
  role: 'system' | 'user' | 'assistant'
  content: string | ChatContentPart[]
  name?: string
}

/**
 * The body the gateway takes (OpenAI's; what it does not check passes through to the
 * upstream). `model` is an alias of `client.rest.models()`. The reservation is sized
 * on `max_tokens`/`max_completion_tokens` (whole numbers 1–1 000 000) and `n` (1–128).
 */
export interface ChatCompletionRequest {
  model: string
  messages: ChatCompletionMessage[]
  max_tokens?: number
  max_completion_tokens?: number
  n?: number
  temperature?: number
  top_p?: number
  stop?: string | string[]
  presence_penalty?: number
  frequency_penalty?: number
  seed?: number
  user?: string
}

/** What the streamed helper takes: one choice, whose text it follows. */
export type StreamChatCompletionRequest = Omit<ChatCompletionRequest, 'n'>

/** The upstream's token counts, which the call was billed on (absent when it reported none; the gateway then counts). */
export interface CompletionUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details?: { cached_tokens?: number }
}

/** Why the upstream stopped; upstreams may name others. */
export type FinishReason = 'stop' | 'length' | 'content_filter' | 'tool_calls' | (string & {})

/** The upstream's answer as the gateway relays it (OpenAI's shape). */
export interface ChatCompletion {
  id: string
  object: 'chat.completion'
  created: number
  model: string
  choices: Array<{
    index: number
    message: { role: 'assistant', content: string | null, refusal?: string | null }
    finish_reason: FinishReason | null
  }>
  usage?: CompletionUsage
}

export interface ChatCompletionOptions {
  /** Aborts the call: the promise rejects with the signal's reason. */
  signal?: AbortSignal
}

export interface StreamChatCompletionOptions extends ChatCompletionOptions {
  /** Each piece of text as it arrives; never called once the signal aborted or the call failed. */
  onDelta?: (text: string) => void
}

export interface StreamedCompletion {
  /** Every delta joined. */
  text: string
  finishReason: FinishReason | null
  /** The last chunk's usage (the SDK asks for it); absent when the upstream sent none. */
  usage?: CompletionUsage
}

/** The REST helpers' request: the client's token, and an AiriError for any non-2xx answer. */
export type Send = (path: string, init?: RequestInit) => Promise<Response>

const PATH = 'api/v1/openai/chat/completions'

/** The status of a failure the gateway could only report inside the stream (docs/gateway.md). */
const STREAM_FAILURE_STATUS: Record<string, number> = { DEADLINE_EXCEEDED: 504, SHUTTING_DOWN: 503 }

/** Runs `call`; once `signal` has aborted, whatever it rejects with becomes the signal's reason. */
async function abortable<T>(signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
  try {
    signal?.throwIfAborted()
    return await call()
  }
  catch (error) {
    if (signal?.aborted)
      throw signal.reason
    throw error
  }
}

const post = (send: Send, body: object, signal: AbortSignal | undefined) =>
  send(PATH, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal })

/** `POST /api/v1/openai/chat/completions` without streaming: the answer, sent once the call is billed. */
export function chatCompletion(send: Send, body: ChatCompletionRequest, { signal }: ChatCompletionOptions = {}): Promise<ChatCompletion> {
  return abortable(signal, async () => await (await post(send, { ...body, stream: false }, signal)).json() as ChatCompletion)
}

/** An `{ error }` event: the gateway's way to fail a stream whose status was already sent. */
function streamFailure(error: { code?: unknown, message?: unknown, details?: unknown }): AiriError {
  // Our codes are strings; an upstream's own error event, relayed as is, may carry its HTTP status instead.
  const code = typeof error.code === 'string' ? error.code : 'UPSTREAM_UNAVAILABLE'
  const status = typeof error.code === 'number' && error.code >= 400 && error.code < 600 ? error.code : STREAM_FAILURE_STATUS[code] ?? 502
  return new AiriError(status, code, typeof error.message === 'string' ? error.message : 'The stream failed', error.details)
}

interface Chunk {
  choices?: Array<{ index?: number, delta?: { content?: unknown }, finish_reason?: FinishReason | null }>
  usage?: CompletionUsage | null
  error?: { code?: unknown, message?: unknown, details?: unknown }
}

/** Folds the stream's events into the result; `failure` or `done` ends it. */
function createTally(onDelta: ((text: string) => void) | undefined, signal: AbortSignal | undefined) {
  const state: { result: StreamedCompletion, done: boolean, failure?: AiriError } = { result: { text: '', finishReason: null }, done: false }
  const onEvent = ({ data }: EventSourceMessage): void => {
    if (state.done || state.failure || signal?.aborted)
      return
    if (data === '[DONE]') {
      state.done = true
      return
    }
    let chunk: Chunk
    try {
      chunk = JSON.parse(data) as Chunk
    }
    catch {
      state.failure = new AiriError(502, 'BAD_STREAM', 'The stream sent an event that is not JSON')
      return
    }
    if (chunk.error) {
      state.failure = streamFailure(chunk.error)
      return
    }
    if (chunk.usage)
      state.result.usage = chunk.usage
    const choice = chunk.choices?.find(({ index }) => (index ?? 0) === 0)
    if (choice?.finish_reason)
      state.result.finishReason = choice.finish_reason
    const text = choice?.delta?.content
    if (typeof text === 'string' && text) {
      state.result.text += text
      onDelta?.(text)
    }
  }
  return { state, onEvent }
}

/**
 * `POST /api/v1/openai/chat/completions` streamed (SSE): `onDelta` per piece of text,
 * resolving at `[DONE]` once the server has ended the stream (so the call is logged
 * complete). An error event rejects with its code; an end without `[DONE]` with
 * `STREAM_INTERRUPTED`.
 */
export function streamChatCompletion(send: Send, body: StreamChatCompletionRequest, { signal, onDelta }: StreamChatCompletionOptions = {}): Promise<StreamedCompletion> {
  return abortable(signal, async () => {
    const response = await post(send, { ...body, stream: true, stream_options: { include_usage: true } }, signal)
    const { state, onEvent } = createTally(onDelta, signal)
    const parser = createParser({ onEvent })
    const reader = response.body?.getReader()
    const decoder = new TextDecoder()
    try {
      // After `[DONE]` the rest is read too: leaving early would end the call as a client gone away.
      while (reader && !state.failure && !signal?.aborted) {
        const { done, value } = await reader.read()
        if (done)
          break
        parser.feed(decoder.decode(value, { stream: true }))
      }
      parser.feed(decoder.decode())
      parser.reset({ consume: true })
    }
    finally {
      void reader?.cancel().catch(() => {})
    }
    if (state.failure)
      throw state.failure
    signal?.throwIfAborted()
    if (!state.done)
      throw new AiriError(502, 'STREAM_INTERRUPTED', 'The stream ended before the answer was complete')
    return state.result
  })
}
