/**
 * A streaming speech-to-text upstream (SPEC §4.13): PCM goes in as the user
 * speaks, partial and final transcripts come back per utterance. The
 * streaming-transcription service talks only to this interface, so another
 * vendor (Deepgram-style sockets) is another adapter.
 */

/** What the session asks for. */
interface StreamingSttStart {
  /** The upstream's transcription model. */
  model: string
  /** The spoken language (ISO 639-1, e.g. `en`), when the client named it. */
  language?: string
}

/** One key to try, already decrypted. */
export interface StreamingSttKey {
  id: string
  apiKey: string
}

export interface StreamingSttTarget {
  /** The upstream's WebSocket URL. */
  url: string
  /** The next key to dial with, or undefined when none is left. Called again after a refused or failed dial. */
  nextKey: () => StreamingSttKey | undefined
  /** The upstream refused a key at the handshake (401/403/429…), so rotation can cool it down. */
  onKeyRefused?: (keyId: string, status: number, retryAfter: string | undefined) => void
  /** Bound of one dial (TCP and the WebSocket handshake). */
  connectTimeoutMs?: number
}

/** An upstream failure, in the words the client will see. */
export interface StreamingSttError {
  code: string
  message: string
}

/**
 * What the upstream reports. Exactly one of `finished` and `error` ends a
 * session; nothing is reported after it, nor after `close`.
 */
export interface StreamingSttHandlers {
  /** The upstream accepted the session: from here on, audio sent is audio it transcribes. */
  started: () => void
  /** More text of an utterance still being transcribed. */
  delta: (itemId: string, text: string) => void
  /** The whole transcript of one utterance. */
  final: (itemId: string, text: string) => void
  /** After `commit`: every utterance has its final transcript. */
  finished: () => void
  /** The upstream's own error (its code), or `upstream_closed` / `upstream_unavailable` / `upstream_rejected`. */
  error: (error: StreamingSttError) => void
  /** Audio given to `appendAudio` reached the upstream's connection: `pendingBytes` went down. */
  written: () => void
}

export interface StreamingSttSession {
  /** PCM16LE mono at the adapter's `sampleRate`; queued until the upstream is open, then sent in order. */
  appendAudio: (pcm: Buffer) => void
  /** Audio bytes given to `appendAudio` that the upstream's connection has not taken yet (queued or buffered). */
  readonly pendingBytes: number
  /** No more audio: the upstream transcribes what it has, then reports `finished`. */
  commit: () => void
  /** Stops at once; no handler is called afterwards. Idempotent. */
  close: () => void
  /** Stops reading the upstream (the client is not reading its transcripts); a frame already read may still be reported. */
  pause: () => void
  /** Reads the upstream again after `pause`. */
  resume: () => void
}

export interface StreamingSttAdapter {
  /** The only rate `appendAudio` takes; the service resamples the client's audio to it. */
  sampleRate: number
  /** Starts dialling at once and returns a session that already accepts audio. */
  open: (target: StreamingSttTarget, start: StreamingSttStart, handlers: StreamingSttHandlers) => StreamingSttSession
}
