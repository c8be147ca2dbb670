import { chatCompletion, streamChatCompletion, type ChatCompletion, type ChatCompletionOptions, type ChatCompletionRequest, type StreamChatCompletionOptions, type StreamChatCompletionRequest, type StreamedCompletion } from './completions.ts'
import { AiriError } from './errors.ts'

// The REST surfaces a client reads besides tRPC: the model and voice catalogues, chat
// completions (completions.ts), one-shot speech, downloads (account export, character
// cards) and account deletion. One request helper, so every failure is the same
// AiriError whatever the route's error shape.

export interface RestOptions {
  baseUrl: string
  getToken: () => Promise<string | undefined>
  fetch?: typeof fetch
}

/** A chat model's price in Flux per million tokens (absent: the flat per-call rate). */
export interface ModelPrice { inputPer1M: number, outputPer1M: number, cachedInputPer1M?: number, unit: 'flux' }
export interface ChatModel { id: string, object: 'model', created: number, owned_by: string, pricing?: ModelPrice }
export interface Voice { id: string, name: string, languages?: string[], gender?: string }
export interface SpeechModels { models: Array<{ id: string, name?: string }>, default: string | null }
/** A file the server sent as an attachment. */
export interface Download { blob: Blob, fileName: string }

export interface SpeechRequest {
  model: string
  voice: string
  input: string
  /** `mp3` unless told; see docs/speech.md for the formats. */
  response_format?: 'mp3' | 'wav' | 'opus' | 'aac' | 'flac' | 'pcm'
  speed?: number
}

export interface RestApi {
  /** `GET /api/v1/openai/models`: the chat models callers may name, with prices. */
  models: () => Promise<ChatModel[]>
  /** `POST /api/v1/openai/chat/completions`: the upstream's answer, once the call is billed. */
  chatCompletion: (body: ChatCompletionRequest, options?: ChatCompletionOptions) => Promise<ChatCompletion>
  /** The same, streamed: `onDelta` per piece of text; resolves at the end with the text, finish reason and usage. */
  streamChatCompletion: (body: StreamChatCompletionRequest, options?: StreamChatCompletionOptions) => Promise<StreamedCompletion>
  /** `GET /api/v1/audio/models` (`streaming`: the streaming voice's models). */
  speechModels: (options?: { streaming?: boolean }) => Promise<SpeechModels>
  /** `GET /api/v1/audio/voices` (`streaming`: the streaming voice's catalogue). */
  voices: (options?: { model?: string, streaming?: boolean }) => Promise<Voice[]>
  /** `POST /api/v1/audio/speech`: the audio of a short text (a voice preview). */
  speech: (request: SpeechRequest, signal?: AbortSignal) => Promise<Blob>
  /** `GET /api/v1/account/export`: everything the service holds about the caller, as one JSON file. */
  exportAccount: () => Promise<Download>
  /** `GET /api/v1/characters/:id/card.json|png`: a Character Card V3. */
  characterCard: (id: string, format: 'json' | 'png') => Promise<Download>
  /**
   * better-auth's `POST /api/auth/delete-user` with the browser's cookie session: mails a
   * confirmation link that ends at `callbackURL`. Browsers only (it needs that cookie).
   */
  requestAccountDeletion: (callbackURL: string) => Promise<void>
}

/** `{ error: { code, message } }` (ours and OpenAI's), better-auth's `{ code, message }`, or just the status. */
async function failure(response: Response): Promise<AiriError> {
  const body = await response.json().catch(() => undefined) as { error?: { code?: unknown, message?: unknown, details?: unknown }, code?: unknown, message?: unknown } | undefined
  const error = body?.error ?? body
  const code = typeof error?.code === 'string' ? error.code : `HTTP_${response.status}`
  const message = typeof error?.message === 'string' ? error.message : `${response.status} ${response.statusText}`.trim()
  // A 429 says when to come back (in `details.retryAfterSeconds`, from Retry-After).
  const retryAfter = Number(response.headers.get('retry-after'))
  const details = Number.isFinite(retryAfter) && retryAfter > 0 ? { ...(body?.error?.details as object | undefined), retryAfterSeconds: retryAfter } : body?.error?.details
  return new AiriError(response.status, code, message, details)
}

/** `attachment; filename="x.json"` → `x.json`. */
function fileNameOf(response: Response, fallback: string): string {
  return /filename="([^"]+)"/.exec(response.headers.get('content-disposition') ?? '')?.[1] ?? fallback
}

export function createRestApi({ baseUrl, getToken, fetch: send = globalThis.fetch }: RestOptions): RestApi {
  const root = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`

  async function request(path: string, init: RequestInit = {}): Promise<Response> {
    const token = await getToken()
    const headers = new Headers(init.headers)
    if (token)
      headers.set('authorization', `Bearer ${token}`)
    // A network failure stays a TypeError: the caller says "cannot reach the server".
    const response = await send(new URL(path, root), { ...init, headers })
    if (!response.ok)
      throw await failure(response)
    return response
  }
  const json = async <T>(path: string): Promise<T> => await (await request(path)).json() as T
  const download = async (path: string, fallback: string): Promise<Download> => {
    const response = await request(path)
    return { blob: await response.blob(), fileName: fileNameOf(response, fallback) }
  }

  return {
    models: async () => (await json<{ data: ChatModel[] }>('api/v1/openai/models')).data,
    chatCompletion: (body, options) => chatCompletion(request, body, options),
    streamChatCompletion: (body, options) => streamChatCompletion(request, body, options),
    speechModels: ({ streaming = false } = {}) => json<SpeechModels>(`api/v1/audio/models${streaming ? '/streaming' : ''}`),
    voices: async ({ model, streaming = false } = {}) => {
      const query = model ? `?${new URLSearchParams({ model })}` : ''
      return (await json<{ voices: Voice[] }>(`api/v1/audio/voices${streaming ? '/streaming' : ''}${query}`)).voices
    },
    speech: async (body, signal) => await (await request('api/v1/audio/speech', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal })).blob(),
    exportAccount: () => download('api/v1/account/export', 'airi-export.json'),
    characterCard: (id, format) => download(`api/v1/characters/${encodeURIComponent(id)}/card.${format}`, `card.${format}`),
    requestAccountDeletion: async (callbackURL) => {
      await request('api/auth/delete-user', { method: 'POST', credentials: 'include', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ callbackURL }) })
    },
  }
}
