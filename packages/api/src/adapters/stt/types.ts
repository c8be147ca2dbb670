/** What we ask the upstream to answer: the shape we read, whatever the client asked for. */
type UpstreamTranscriptionFormat = 'json' | 'verbose_json'

/** One transcription attempt with one key. */
interface SttCall {
  baseUrl: string
  /** The upstream model, in place of the alias the client named. */
  model: string
  key: string
  file: { data: Uint8Array, name: string, type: string }
  language?: string
  prompt?: string
  temperature?: number
  responseFormat: UpstreamTranscriptionFormat
  signal: AbortSignal
}

/** One timed piece of the transcript, as `verbose_json` gives it. */
export interface TranscriptSegment {
  id: number
  start: number
  end: number
  text: string
}

export interface Transcript {
  text: string
  /** The language the upstream detected or was told (OpenAI names it in English: `english`). */
  language?: string
  segments?: TranscriptSegment[]
}

/**
 * One kind of transcription upstream. `transcribe` makes one HTTP attempt with one
 * key and throws `UpstreamHttpError` (of the speech adapters) for a non-2xx answer;
 * the transcription service picks the keys, retries and bills.
 */
export interface SttAdapter {
  transcribe: (call: SttCall) => Promise<Transcript>
}
