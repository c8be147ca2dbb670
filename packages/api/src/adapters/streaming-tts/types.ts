/**
 * A bidirectional streaming TTS upstream (SPEC §4.7): text goes in as it arrives,
 * audio and sentence boundaries come back while more text is still coming. The
 * streaming-speech service talks only to this interface, so another vendor is
 * another adapter.
 */

/** What the session asks for, as the start frame named it. */
interface StreamingTtsStart {
  model: string
  voice: string
  responseFormat?: string
  extraBody?: Record<string, unknown>
}

/** One key to try, already decrypted. */
export interface StreamingTtsKey {
  id: string
  apiKey: string
}

export interface StreamingTtsTarget {
  /** The upstream's WebSocket URL (`http(s)` is dialled as `ws(s)`). */
  url: string
  /** The next key to dial with, or undefined when none is left. Called again after a refused or failed dial. */
  nextKey: () => StreamingTtsKey | undefined
  /** The upstream refused a key at the handshake (401/403/429…), so rotation can cool it down. */
  onKeyRefused?: (keyId: string, status: number, retryAfter: string | undefined) => void
  /** Bound of one dial (TCP and the WebSocket handshake). */
  connectTimeoutMs?: number
}

export interface StreamingTtsUsage {
  /** Characters the upstream says it spoke (unspeech's `usage.text_words`). */
  textWords?: number
}

/** An upstream failure, in the words the client will see. */
export interface StreamingTtsError {
  code: string
  message: string
}

/**
 * What the upstream reports. Exactly one of `finished` and `error` ends a stream;
 * nothing is reported after it, nor after `cancel`.
 */
interface StreamingTtsHandlers {
  started: () => void
  /** An audio chunk, byte for byte as the upstream sent it. */
  audio: (chunk: Buffer) => void
  sentence: (text: string) => void
  finished: (usage?: StreamingTtsUsage) => void
  /** The upstream's own error frame (its code), or `upstream_closed` / `upstream_unavailable` / `upstream_rejected`. */
  error: (error: StreamingTtsError) => void
}

export interface StreamingTtsStream {
  /** Queued until the upstream is open, then sent in order. */
  appendText: (text: string) => void
  /** No more text: the upstream speaks what it has and finishes. */
  finish: () => void
  /** Stops at once; no handler is called afterwards. Idempotent. */
  cancel: () => void
  /**
   * Stops reading the upstream (backpressure: the client is not keeping up), so
   * its audio waits in the network, not in our memory. A frame already read may
   * still be reported.
   */
  pause: () => void
  /** Reads the upstream again after `pause`. */
  resume: () => void
}

export interface StreamingTtsAdapter {
  /** Starts dialling at once and returns a stream that already accepts text. */
  open: (target: StreamingTtsTarget, start: StreamingTtsStart, handlers: StreamingTtsHandlers) => StreamingTtsStream
}
