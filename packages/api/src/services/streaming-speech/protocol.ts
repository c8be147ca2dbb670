import { z } from 'zod'

import { audioFormats } from '../../adapters/tts/types.ts'
import { text } from '../../routers/schemas.ts'

/** Session caps (SPEC §4.7). */
export const MAX_SESSION_CHARACTERS = 20_000
export const MAX_SESSION_TEXT_FRAMES = 512
/** Characters the user must be able to afford before anything is dialled. */
export const PREFLIGHT_CHARACTERS = 2_000

export const startFrameSchema = z.object({
  event: z.literal('start'),
  model: text().min(1).max(200),
  voice: text().min(1).max(200),
  response_format: z.enum(audioFormats).optional(),
  extra_body: z.record(text().max(200), z.unknown()).optional(),
})

/** Every frame after `start`. One text frame carries at most the session's whole budget. */
export const streamFrameSchema = z.discriminatedUnion('event', [
  z.object({ event: z.literal('text'), text: text().max(MAX_SESSION_CHARACTERS) }),
  z.object({ event: z.literal('finish') }),
  z.object({ event: z.literal('cancel') }),
])

/** What the server sends as JSON text (audio goes as binary frames). */
export type ServerFrame =
  | { event: 'session.started' }
  | { event: 'sentence', text: string }
  | { event: 'session.finished', usage: { characters: number, flux: number }, cancelled?: true }
  | { event: 'error', code: string, message: string }

/**
 * Close codes: 1000 after `session.finished`; after an `error` frame, 4000 plus the
 * HTTP status the error would have (4001 unauthorized, 4402 insufficient Flux, …).
 */
const SPEECH_CLOSE = {
  normal: 1000,
  internal: 1011,
  invalid: 4400,
  unauthorized: 4001,
  insufficientFlux: 4402,
  idle: 4408,
  tooLarge: 4413,
  limit: 4429,
  upstream: 4502,
  unavailable: 4503,
} as const

const closeByCode: Record<string, number> = {
  unauthorized: SPEECH_CLOSE.unauthorized,
  invalid_frame: SPEECH_CLOSE.invalid,
  invalid_start_frame: SPEECH_CLOSE.invalid,
  streaming_tts_model_not_enabled: SPEECH_CLOSE.invalid,
  insufficient_flux: SPEECH_CLOSE.insufficientFlux,
  idle_timeout: SPEECH_CLOSE.idle,
  drain_timeout: SPEECH_CLOSE.idle,
  frame_too_large: SPEECH_CLOSE.tooLarge,
  session_limit_exceeded: SPEECH_CLOSE.limit,
  too_many_connections: SPEECH_CLOSE.limit,
  streaming_tts_not_configured: SPEECH_CLOSE.unavailable,
  service_unavailable: SPEECH_CLOSE.unavailable,
  server_shutting_down: SPEECH_CLOSE.unavailable,
  internal_error: SPEECH_CLOSE.internal,
}

/** The close code after an `error` frame with `code`; the upstream's own codes close with 4502. */
export function closeCodeFor(code: string): number {
  return Object.hasOwn(closeByCode, code) ? closeByCode[code]! : SPEECH_CLOSE.upstream
}
