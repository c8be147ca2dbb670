import { z } from 'zod'

import { audioFormats } from '../../adapters/tts/types.ts'
import { text } from '../../routers/schemas.ts'

/**
 * The body of `POST /api/v1/audio/speech`: OpenAI's speech request. Other fields
 * OpenAI clients may send are accepted and not passed on. The length of `input`
 * is bounded by `TTS_MAX_INPUT_CHARS` in the service (the operator can change it).
 */
export const speechRequestSchema = z.looseObject({
  model: z.string().min(1).max(200),
  input: text().min(1),
  voice: text().min(1).max(200),
  response_format: z.enum(audioFormats).optional(),
  speed: z.number().min(0.25).max(4).optional(),
  instructions: text().max(4096).optional(),
  extra_body: z.record(z.string().max(200), z.unknown()).optional(),
})

export type SpeechRequest = z.output<typeof speechRequestSchema>
