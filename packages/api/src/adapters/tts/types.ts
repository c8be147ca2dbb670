import { ApiError } from '../../errors.ts'

/** Formats of OpenAI's speech API. */
export const audioFormats = ['mp3', 'opus', 'aac', 'flac', 'wav', 'pcm'] as const
export type AudioFormat = typeof audioFormats[number]

/** One speech request, as the transport validated it. */
export interface SpeechInput {
  input: string
  voice: string
  responseFormat?: AudioFormat
  speed?: number
  /** OpenAI's voice instructions (gpt-4o-mini-tts); adapters that cannot use them ignore them. */
  instructions?: string
  /** Passed on as `extra_body` to OpenAI-compatible proxies (unspeech reads vendor options there). */
  extraBody?: Record<string, unknown>
}

/** Where one attempt goes, with the one key it uses. */
interface TtsTarget {
  baseUrl: string
  /** The upstream model (OpenAI-compatible) or output format (Azure). */
  model: string
  apiKey: string
  signal: AbortSignal
}

export interface Voice {
  id: string
  name: string
  languages?: string[]
  gender?: string
}

export interface SynthesizedAudio {
  audio: Buffer
  contentType: string
}

/**
 * One kind of speech upstream. Each method makes one HTTP attempt with one key;
 * the speech service picks the keys, retries and bills.
 */
export interface TtsAdapter {
  /** Throws ApiError 400 for a request this upstream must never receive; runs before billing and any call. */
  validate: (request: SpeechInput) => void
  /** The audio of a 2xx answer; throws `UpstreamHttpError` for any other answer. */
  synthesize: (target: TtsTarget, request: SpeechInput) => Promise<SynthesizedAudio>
  /** The upstream's voices; throws `UpstreamHttpError` for a non-2xx answer. */
  listVoices: (target: TtsTarget) => Promise<Voice[]>
}

/** A non-2xx answer; the caller decides from its status whether another key may do better. */
export class UpstreamHttpError extends Error {
  override readonly name = 'UpstreamHttpError'

  constructor(readonly response: Response, message: string) {
    super(message)
  }

  get status(): number {
    return this.response.status
  }
}

/** The largest audio answer we buffer (4 096 characters of speech are a few MB at most). */
export const MAX_AUDIO_BYTES = 32 * 1024 * 1024
/** The largest voice list we read. */
const MAX_CATALOGUE_BYTES = 8 * 1024 * 1024

/** Throws `UpstreamHttpError` unless `response` is 2xx, with the upstream's own message when it gave one. */
export async function expectOk(response: Response): Promise<void> {
  if (response.ok)
    return
  const text = await readBounded(response, 64 * 1024).then(bytes => bytes.toString('utf8'), () => '')
  let message = `The upstream answered ${response.status}`
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown } | string, message?: unknown }
    const detail = typeof body.error === 'string' ? body.error : body.error?.message ?? body.message
    if (typeof detail === 'string' && detail)
      message = detail.slice(0, 500)
  }
  catch {
    // Not JSON: the status says enough.
  }
  throw new UpstreamHttpError(response, message)
}

/** Reads a body up to `maxBytes`; more is a 502 (and the rest is not read). */
export async function readBounded(response: Response, maxBytes: number): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length'))
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => {})
    throw tooLarge(maxBytes)
  }
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of (response.body ?? []) as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength
    if (size > maxBytes) {
      await response.body?.cancel().catch(() => {})
      throw tooLarge(maxBytes)
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

const tooLarge = (maxBytes: number) => new ApiError(502, 'UPSTREAM_UNAVAILABLE', `The upstream answered more than ${maxBytes} bytes`)

/** A JSON body of at most `maxBytes`; malformed JSON is a 502. */
export async function readJson(response: Response, maxBytes = MAX_CATALOGUE_BYTES): Promise<unknown> {
  const bytes = await readBounded(response, maxBytes)
  try {
    return JSON.parse(bytes.toString('utf8')) as unknown
  }
  catch {
    throw new ApiError(502, 'UPSTREAM_UNAVAILABLE', 'The upstream answered with something that is not JSON')
  }
}

const str = (value: unknown, max = 200): string | undefined =>
  typeof value === 'string' && value.length > 0 && value.length <= max ? value : undefined

/**
 * One voice from an upstream's list, in the shapes the OpenAI-compatible proxies
 * use: a bare id, or an object with `id` / `voice_id`, an optional `name`,
 * `languages` as strings or `{ code }`, and `gender` (or `labels.gender`).
 * Anything without a usable id is dropped.
 */
function voiceFrom(item: unknown): Voice | undefined {
  if (typeof item === 'string')
    return str(item) ? { id: item, name: item } : undefined
  if (typeof item !== 'object' || item === null)
    return undefined
  const record = item as Record<string, unknown>
  const id = str(record.id) ?? str(record.voice_id)
  if (!id)
    return undefined
  const languages = Array.isArray(record.languages)
    ? record.languages.map(language => str(language, 35) ?? str((language as { code?: unknown } | null)?.code, 35)).filter(language => language !== undefined)
    : undefined
  const labels = typeof record.labels === 'object' && record.labels !== null ? record.labels as Record<string, unknown> : {}
  const gender = str(record.gender, 50) ?? str(labels.gender, 50)
  return {
    id,
    name: str(record.name) ?? id,
    ...(languages?.length ? { languages } : {}),
    ...(gender ? { gender } : {}),
  }
}

/** The voices of a list answer: `{ voices: [...] }`, `{ data: [...] }` or a bare array. */
export function voicesFrom(body: unknown): Voice[] {
  const list = Array.isArray(body)
    ? body
    : (body as { voices?: unknown, data?: unknown } | null)?.voices ?? (body as { data?: unknown } | null)?.data
  if (!Array.isArray(list))
    throw new ApiError(502, 'UPSTREAM_UNAVAILABLE', 'The upstream\'s voice list has no voices array')
  return list.map(voiceFrom).filter(voice => voice !== undefined)
}
