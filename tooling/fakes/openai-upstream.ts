import { createHash, randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

import { answer, readBody } from './http.ts'

export interface UpstreamUsage {
  prompt_tokens: number
  completion_tokens: number
  /** Reported as `prompt_tokens_details.cached_tokens` (the part of the prompt served from cache); left out by default. */
  cached_tokens?: number
}

/** How the fake answers one `POST /v1/chat/completions`. */
export type Behavior =
  | {
    kind: 'complete'
    content: string
    /** `null` leaves usage out of the answer; absent means `DEFAULT_USAGE`. */
    usage?: UpstreamUsage | null
    /** Pause between streamed chunks; 0 by default. */
    chunkDelayMs?: number
    /** Split the streamed content into this many pieces; one per word by default. */
    chunks?: number
    /** Line ending of the SSE stream: `\n` (default) or `\r\n`, as some upstreams send. */
    lineEnding?: '\n' | '\r\n'
    /** Stop after this many content pieces and hang, until the client goes away or `close()`. */
    stallAfter?: number
    /** Answer only once this settles (to hold several calls in flight at once). */
    hold?: Promise<unknown>
    /** Send each streamed content piece only once the test has released it (see `createPacer`). */
    pace?: Pacer
    /**
     * Generate past the request's `max_tokens` / `max_completion_tokens`, as an
     * upstream that ignores the cap would. By default the fake honours it: at most
     * that many content pieces (one piece stands for one token), `completion_tokens`
     * at most the cap, and `finish_reason: 'length'` when it cut the answer.
     */
    ignoreMaxTokens?: boolean
  }
  /**
   * Stream content pieces of `pieceBytes` until `totalBytes` are written, as fast
   * as the connection takes them (waiting for drain), with no usage: for tests of
   * backpressure, which read `bytesWritten` and `waitingForDrain`.
   */
  | { kind: 'flood', totalBytes: number, pieceBytes?: number }
  | { kind: 'status', status: number, body?: unknown }
  /** Accept the request and never answer, until the client goes away or `close()`. */
  | { kind: 'hang' }
  /** Destroy the socket at once: a connection error for the client. */
  | { kind: 'drop' }

export type BehaviorHandler = (request: { key: string, body: any }) => Behavior // eslint-disable-line @typescript-eslint/no-explicit-any -- parsed JSON that tests read freely

/** One request as the fake received it; the object stays live, so tests can poll it. */
export interface UpstreamRequest {
  /** The bearer token sent ('' without one). */
  key: string
  path: string
  /** The parsed JSON body (`undefined` for a request without one). */
  body: any // eslint-disable-line @typescript-eslint/no-explicit-any -- parsed JSON that tests read freely
  receivedAt: number
  /** The client closed the connection before the fake finished its answer. */
  aborted: boolean
  abortedAt?: number
  /** The fake finished its answer. */
  completed: boolean
  /** Bytes of the answer body handed to the connection so far. */
  bytesWritten: number
  /** The connection's buffer is full and the fake is waiting for it to drain. */
  waitingForDrain: boolean
}

export interface FakeUpstreamOptions {
  /** Shows up as the models' `owned_by`, to tell several fakes apart. */
  name?: string
}

export interface FakeUpstream {
  name: string
  /** The base URL, ending in `/v1`, as an upstream's `baseUrl`. */
  url: string
  requests: UpstreamRequest[]
  /** Answer the following chat completions as `handler` says, until `reset()`. */
  behave: (handler: BehaviorHandler) => void
  /** Forget the requests and go back to normal completions. */
  reset: () => void
  close: () => Promise<void>
}

/**
 * A stream the test lets out piece by piece: content piece n of a streamed answer
 * is sent once `release` has let n pieces go (the role chunk goes at once, the end
 * of the stream right after the last piece). For tests that look at a reply while
 * it is half made, without timing.
 */
export interface Pacer {
  /** Lets `count` more content pieces go (1 by default). */
  release: (count?: number) => void
  /** Lets every remaining piece go, and the end of the stream with them. */
  releaseAll: () => void
  /** Pieces let go so far (Infinity after `releaseAll`). */
  readonly released: number
  /** Content pieces the fake has written so far. */
  readonly sent: number
}

/** The fake's side of a pacer: wait for a piece's release, count it written. */
interface PacerGate {
  /** Resolves once piece `n` may go, or when `gone` does (the connection ended). */
  waitFor: (n: number, gone: Promise<void>) => Promise<void>
  wrote: () => void
}

const gates = new WeakMap<Pacer, PacerGate>()

export function createPacer(): Pacer {
  let released = 0
  let sent = 0
  const waiters = new Set<{ n: number, resolve: () => void }>()
  const wake = () => {
    for (const waiter of waiters) {
      if (waiter.n <= released) {
        waiters.delete(waiter)
        waiter.resolve()
      }
    }
  }
  const pacer: Pacer = {
    release(count = 1) {
      released += count
      wake()
    },
    releaseAll() {
      released = Infinity
      wake()
    },
    get released() {
      return released
    },
    get sent() {
      return sent
    },
  }
  gates.set(pacer, {
    async waitFor(n, gone) {
      if (n <= released)
        return
      const waiter = { n, resolve: () => {} }
      const allowed = new Promise<void>((resolve) => {
        waiter.resolve = resolve
      })
      waiters.add(waiter)
      await Promise.race([allowed, gone])
      waiters.delete(waiter)
    },
    wrote() {
      sent++
    },
  })
  return pacer
}

export const DEFAULT_CONTENT = 'Hello from the fake upstream.'
export const DEFAULT_USAGE: UpstreamUsage = { prompt_tokens: 10, completion_tokens: 20 }

// A JSON-mode request is memory extraction (the only one our server makes): it gets facts, anything else the default text.
const defaultHandler: BehaviorHandler = ({ body }) => ({ kind: 'complete', content: extractionAnswer(body) ?? DEFAULT_CONTENT })

/** The fake's answer to a JSON-mode request (memory extraction), or undefined for any other: for handlers that script only the rest. */
export function extractionAnswer(body: unknown): string | undefined {
  return isJsonMode(body) ? JSON.stringify({ memories: fakeExtraction(extractionSource(body)) }) : undefined
}

function isJsonMode(body: unknown): boolean {
  const format = (body as { response_format?: { type?: unknown } | null } | null)?.response_format
  return typeof format === 'object' && format !== null && format.type === 'json_object'
}

// The same tags as `packages/api/src/services/memory/extraction.ts` wraps the person's message in; change both together.
const PERSON_MESSAGE = /<person_message>\n?([\s\S]*?)\n?<\/person_message>/

/** The person's words in a JSON-mode request: inside the tags of the last user message, or that whole message. */
function extractionSource(body: unknown): string {
  const messages = (body as { messages?: unknown } | null)?.messages
  const last = Array.isArray(messages) ? messages.findLast(message => (message as { role?: unknown } | null)?.role === 'user') as { content?: unknown } | undefined : undefined
  const content = last?.content
  const text = typeof content === 'string'
    ? content
    : Array.isArray(content) ? content.map(part => (part as { type?: unknown, text?: unknown } | null)?.type === 'text' ? String((part as { text: unknown }).text) : '').join('\n') : ''
  return PERSON_MESSAGE.exec(text)?.[1] ?? text
}

/**
 * The fake's extraction, deterministic and simple: every sentence of `text` that
 * states something about the speaker (it starts with "I" or "My", or with 我 in
 * Chinese, and is not a question) is a fact of importance 3, as written. No cap on
 * how many: tests of the server's limits script a longer answer with `behave`.
 */
export function fakeExtraction(text: string): Array<{ content: string, importance: number }> {
  return text
    // A Latin stop ends a sentence before a space (not in "3.5"); a Chinese one ends it anyway.
    .split(/(?<=[.!?])\s+|(?<=[。！？])\s*|\n+/u)
    .map(sentence => sentence.trim())
    .filter(sentence => /^(?:(?:i|my)\b|我)/iu.test(sentence) && !/[?？]$/u.test(sentence))
    .map(content => ({ content, importance: 3 }))
}

/**
 * A local stand-in for an OpenAI-compatible upstream: `POST /v1/chat/completions`
 * (JSON or SSE, in OpenAI's shapes) and `GET /v1/models`, with scripted failures,
 * hangs and dropped connections, and a record of every request including whether
 * the client gave up on it.
 */
export async function startFakeOpenAIUpstream({ name = 'fake-upstream' }: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const requests: UpstreamRequest[] = []
  const open = new Set<ServerResponse>()
  let handler = defaultHandler
  let closing = false

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // Mid-stream there is no status left to send; cutting the stream keeps the client from waiting forever.
      if (res.headersSent)
        res.destroy()
      else
        answer(res, 500, errorBody(500, error instanceof Error ? error.message : String(error)))
    })
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const receivedAt = Date.now()
    const path = new URL(req.url ?? '/', 'http://fake').pathname
    const auth = req.headers.authorization ?? ''
    const key = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : ''
    const raw = await readBody(req)
    let body: unknown
    let invalidJson = false
    try {
      body = raw ? JSON.parse(raw) : undefined
    }
    catch {
      invalidJson = true
    }

    const request: UpstreamRequest = { key, path, body, receivedAt, aborted: false, completed: false, bytesWritten: 0, waitingForDrain: false }
    requests.push(request)
    open.add(res)
    // Set by the fake when it cuts the connection itself, which is no client abort.
    let cutByFake = false
    res.on('finish', () => {
      request.completed = true
    })
    res.on('close', () => {
      open.delete(res)
      if (!res.writableEnded && !cutByFake && !closing) {
        request.aborted = true
        request.abortedAt = Date.now()
      }
    })

    if (path === '/v1/models') {
      if (req.method !== 'GET')
        return answer(res, 405, errorBody(405, `Method ${req.method} is not allowed on ${path}.`))
      return answer(res, 200, { object: 'list', data: [{ id: 'upstream-model', object: 'model', created: 0, owned_by: name }] })
    }
    if (path !== '/v1/chat/completions' && path !== EMBEDDINGS_PATH)
      return answer(res, 404, errorBody(404, `Unknown path ${path}.`))
    if (req.method !== 'POST')
      return answer(res, 405, errorBody(405, `Method ${req.method} is not allowed on ${path}.`))
    if (invalidJson || typeof body !== 'object' || body === null)
      return answer(res, 400, errorBody(400, 'The body must be a JSON object.'))

    const behavior = handler({ key, body })
    switch (behavior.kind) {
      case 'status':
        return answer(res, behavior.status, behavior.body ?? errorBody(behavior.status, 'Fake failure'))
      case 'hang':
        return
      case 'drop':
        cutByFake = true
        req.socket.destroy()
        return
      case 'complete':
        await behavior.hold
        if (path === EMBEDDINGS_PATH)
          return answer(res, 200, embeddingsAnswer(body as EmbeddingsBody, behavior.usage))
        return complete(res, request, body as ChatBody, behavior)
      case 'flood':
        return flood(res, request, body as ChatBody, behavior)
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  return {
    name,
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    behave(next) {
      handler = next
    },
    reset() {
      // Emptied in place: tests may hold the array.
      requests.length = 0
      handler = defaultHandler
    },
    close() {
      closing = true
      for (const res of open)
        res.destroy()
      // fetch keeps connections alive; without this, close() would wait for them to time out.
      server.closeAllConnections()
      return new Promise<void>((resolve, reject) => server.close(error => (error ? reject(error) : resolve())))
    },
  }
}

interface ChatBody {
  model?: unknown
  stream?: unknown
  stream_options?: { include_usage?: unknown } | null
  max_tokens?: unknown
  max_completion_tokens?: unknown
}

/** The output cap the request asked for (the smaller of the two fields when both are set). */
function maxTokensOf(body: ChatBody): number | undefined {
  const caps = [body.max_tokens, body.max_completion_tokens].filter((value): value is number => typeof value === 'number' && Number.isInteger(value) && value > 0)
  return caps.length > 0 ? Math.min(...caps) : undefined
}

/** Writes `text`, waiting while the connection's buffer is full; false when the client is gone. */
async function send(res: ServerResponse, request: UpstreamRequest, text: string): Promise<boolean> {
  if (res.destroyed)
    return false
  request.bytesWritten += Buffer.byteLength(text)
  if (res.write(text))
    return true
  request.waitingForDrain = true
  try {
    await new Promise<void>((resolve) => {
      const done = () => {
        res.off('drain', done)
        res.off('close', done)
        resolve()
      }
      res.on('drain', done)
      res.on('close', done)
    })
  }
  finally {
    request.waitingForDrain = false
  }
  return !res.destroyed
}

async function complete(res: ServerResponse, request: UpstreamRequest, body: ChatBody, behavior: Extract<Behavior, { kind: 'complete' }>): Promise<void> {
  const id = `chatcmpl-${randomUUID()}`
  const created = Math.floor(Date.now() / 1000)
  const model = body.model
  const cap = behavior.ignoreMaxTokens ? undefined : maxTokensOf(body)
  const allPieces = splitContent(behavior.content, behavior.chunks)
  const pieces = cap === undefined ? allPieces : allPieces.slice(0, cap)
  const finishReason = pieces.length < allPieces.length ? 'length' : 'stop'
  const given = behavior.usage === undefined ? DEFAULT_USAGE : behavior.usage
  const usage = given && (cap === undefined ? given : { ...given, completion_tokens: Math.min(given.completion_tokens, cap) })
  const usageBody = usage && {
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
    total_tokens: usage.prompt_tokens + usage.completion_tokens,
    ...(usage.cached_tokens === undefined ? {} : { prompt_tokens_details: { cached_tokens: usage.cached_tokens } }),
  }

  if (body.stream !== true) {
    return answer(res, 200, {
      id,
      object: 'chat.completion',
      created,
      model,
      choices: [{ index: 0, message: { role: 'assistant', content: pieces.join('') }, finish_reason: finishReason }],
      ...(usageBody ? { usage: usageBody } : {}),
    })
  }

  const includeUsage = body.stream_options?.include_usage === true
  const eol = behavior.lineEnding ?? '\n'
  // OpenAI marks every other chunk with `usage: null` when usage was asked for.
  const chunk = (choices: unknown[], extra: object = includeUsage ? { usage: null } : {}) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra })}${eol}${eol}`
  const delta = (value: object, finishReason: string | null = null) => chunk([{ index: 0, delta: value, finish_reason: finishReason }])
  const delayMs = behavior.chunkDelayMs ?? 0
  const stallAt = behavior.stallAfter === undefined ? Infinity : 1 + behavior.stallAfter

  const events = [
    delta({ role: 'assistant', content: '' }),
    ...pieces.map(piece => delta({ content: piece })),
    delta({}, finishReason),
  ]
  if (includeUsage && usageBody)
    events.push(chunk([], { usage: usageBody }))
  events.push(`data: [DONE]${eol}${eol}`)

  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'connection': 'keep-alive' })
  const gate = behavior.pace && gates.get(behavior.pace)
  const gone = res.destroyed ? Promise.resolve() : new Promise<void>(resolve => res.once('close', () => resolve()))

  for (const [index, event] of events.entries()) {
    // Hang here (the role chunk and `stallAfter` pieces sent) until the connection ends.
    if (index === stallAt)
      return
    if (index > 0 && delayMs > 0)
      await sleep(delayMs)
    // Content piece `index` waits for its release; the events after the last piece go with it.
    if (gate && index > 0)
      await gate.waitFor(Math.min(index, pieces.length), gone)
    // The client went away (or the fake closed): nothing more to say.
    if (!await send(res, request, event))
      return
    if (gate && index > 0 && index <= pieces.length)
      gate.wrote()
  }
  res.end()
}

async function flood(res: ServerResponse, request: UpstreamRequest, body: ChatBody, { totalBytes, pieceBytes = 16 * 1024 }: Extract<Behavior, { kind: 'flood' }>): Promise<void> {
  const words = 'lorem ipsum dolor sit amet consectetur adipiscing elit '
  const content = words.repeat(Math.ceil(pieceBytes / words.length)).slice(0, pieceBytes)
  const event = `data: ${JSON.stringify({ id: `chatcmpl-${randomUUID()}`, object: 'chat.completion.chunk', created: 0, model: body.model, choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'connection': 'keep-alive' })
  while (request.bytesWritten < totalBytes) {
    if (!await send(res, request, event))
      return
  }
  res.end('data: [DONE]\n\n')
}

/** One piece per word (spaces kept), or `count` even pieces; joined, they give back `content`. */
function splitContent(content: string, count?: number): string[] {
  if (count === undefined)
    return content.match(/\s*\S+\s*/g) ?? (content ? [content] : [])
  if (!Number.isInteger(count) || count < 1)
    throw new Error(`fake upstream: chunks must be a positive integer, got ${count}`)
  // Code points, so a piece never splits a surrogate pair.
  const chars = Array.from(content)
  return Array.from({ length: count }, (_, i) =>
    chars.slice(Math.floor((i * chars.length) / count), Math.floor(((i + 1) * chars.length) / count)).join(''))
}

const errorKinds: Record<number, { type: string, code: string | null }> = {
  401: { type: 'invalid_request_error', code: 'invalid_api_key' },
  403: { type: 'invalid_request_error', code: 'permission_denied' },
  404: { type: 'invalid_request_error', code: 'not_found' },
  429: { type: 'requests', code: 'rate_limit_exceeded' },
}

/** OpenAI's error body, with the `type` and `code` OpenAI uses for `status`. */
function errorBody(status: number, message: string) {
  const { type, code } = errorKinds[status] ?? (status >= 500 ? { type: 'server_error', code: 'server_error' } : { type: 'invalid_request_error', code: null })
  return { error: { message, type, code } }
}

const EMBEDDINGS_PATH = '/v1/embeddings'

/** The dimension of the fake's vectors unless the request asks for `dimensions`. */
export const FAKE_EMBEDDING_DIMENSIONS = 16

interface EmbeddingsBody {
  model?: unknown
  input?: unknown
  encoding_format?: unknown
  dimensions?: unknown
}

/**
 * The fake's vector for `text`: `dimensions` numbers in [-1, 1) drawn from SHA-256
 * of the text (and a block counter), so equal texts get equal vectors and tests
 * can compute what to expect. Nothing about meaning: similar texts are unrelated.
 */
export function fakeEmbedding(text: string, dimensions = FAKE_EMBEDDING_DIMENSIONS): number[] {
  const values: number[] = []
  for (let block = 0; values.length < dimensions; block++) {
    const digest = createHash('sha256').update(`${block}:${text}`).digest()
    for (let i = 0; i + 1 < digest.length && values.length < dimensions; i += 2)
      // Multiples of 1/32768 are exact in float32, so a base64 answer decodes to the same numbers.
      values.push(digest.readUInt16BE(i) / 32_768 - 1)
  }
  return values
}

/** The fake's count of an input: one token per word, at least one. */
export const fakeEmbeddingTokens = (text: string): number => Math.max(1, text.split(/\s+/).filter(Boolean).length)

/**
 * `POST /v1/embeddings` in OpenAI's shape: one vector per input, in order, as
 * floats or (`encoding_format: 'base64'`) little-endian float32 in base64; usage
 * as the behaviour gives it (`usage: null` leaves it out), else one token per word.
 */
function embeddingsAnswer(body: EmbeddingsBody, usage: UpstreamUsage | null | undefined) {
  const inputs = Array.isArray(body.input) ? body.input.map(String) : [String(body.input ?? '')]
  const dimensions = typeof body.dimensions === 'number' && Number.isInteger(body.dimensions) && body.dimensions > 0 ? body.dimensions : FAKE_EMBEDDING_DIMENSIONS
  const data = inputs.map((text, index) => {
    const vector = fakeEmbedding(text, dimensions)
    const embedding = body.encoding_format === 'base64' ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector
    return { object: 'embedding', index, embedding }
  })
  const promptTokens = usage === undefined ? inputs.reduce((sum, text) => sum + fakeEmbeddingTokens(text), 0) : usage?.prompt_tokens
  return { object: 'list', data, model: body.model, ...(promptTokens === undefined ? {} : { usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } }) }
}
