import { z } from 'zod'

import { text } from '../../routers/schemas.ts'

/** Session caps (SPEC §4.13). */
export const MAX_SESSION_AUDIO_MS = 15 * 60_000
/** Audio the user must be able to afford before anything is dialled. */
export const PREFLIGHT_AUDIO_MS = 60_000
/** The client's audio rates, and the one it gets without naming any. */
const MIN_SAMPLE_RATE = 8_000
const MAX_SAMPLE_RATE = 48_000
const DEFAULT_SAMPLE_RATE = 16_000

export const transcriptionStartFrameSchema = z.object({
  event: z.literal('start'),
  /** Must be the configured model when given; the upstream serves one. */
  model: text().min(1).max(200).optional(),
  /** ISO 639-1 (`en`), optionally with a region (`en-US`). */
  language: z.string().regex(/^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$/i).max(35).optional(),
  sample_rate: z.number().int().min(MIN_SAMPLE_RATE).max(MAX_SAMPLE_RATE).default(DEFAULT_SAMPLE_RATE),
})

/** The text frames that may follow `start` (audio comes as binary frames). */
export const transcriptionControlFrameSchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('stop') }),
  z.object({ event: z.literal('cancel') }),
])

/** What the server sends, all as JSON text. */
export type TranscriptionServerFrame =
  | { event: 'session.started' }
  | { event: 'transcript.delta', itemId: string, text: string }
  | { event: 'transcript.final', itemId: string, text: string }
  | { event: 'session.finished', usage: { seconds: number, flux: number }, cancelled?: true }
  | { event: 'error', code: string, message: string }

/**
 * Close codes, as on the speech socket: 1000 after `session.finished`; after an
 * `error` frame, 4000 plus the HTTP status the error would have.
 */
const closeByCode: Record<string, number> = {
  unauthorized: 4001,
  invalid_frame: 4400,
  invalid_start_frame: 4400,
  streaming_stt_model_not_enabled: 4400,
  insufficient_flux: 4402,
  idle_timeout: 4408,
  drain_timeout: 4408,
  session_limit_exceeded: 4429,
  too_many_connections: 4429,
  upstream_timeout: 4504,
  streaming_stt_not_configured: 4503,
  service_unavailable: 4503,
  server_shutting_down: 4503,
  internal_error: 1011,
}

/** The close code after an `error` frame with `code`; the upstream's own codes close with 4502. */
export function transcriptionCloseCodeFor(code: string): number {
  return Object.hasOwn(closeByCode, code) ? closeByCode[code]! : 4502
}
