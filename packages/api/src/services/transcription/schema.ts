import { z } from 'zod'

import { text } from '../../routers/schemas.ts'

/** What a client may ask `POST /api/v1/audio/transcriptions` to answer. */
const transcriptionFormats = ['json', 'text', 'verbose_json'] as const

/**
 * The text fields of `POST /api/v1/audio/transcriptions` (OpenAI's transcription
 * form), as multipart delivers them: strings. Other fields OpenAI clients may send
 * (`timestamp_granularities[]`, `include[]`, …) are accepted and not passed on.
 */
export const transcriptionFieldsSchema = z.looseObject({
  model: text().min(1).max(200),
  /** ISO 639-1 (or BCP 47) code of the spoken language, a hint for the upstream. */
  language: z.string().regex(/^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$/i, 'Must be a language code such as en or pt-BR').max(35).optional(),
  prompt: text().max(4096).optional(),
  response_format: z.enum(transcriptionFormats).default('json'),
  temperature: z.string().trim().min(1).transform(Number).pipe(z.number().min(0).max(1)).optional(),
})

type TranscriptionFields = z.output<typeof transcriptionFieldsSchema>

/** One audio file as the client uploaded it. */
interface UploadedAudio {
  data: Buffer
  /** The part's file name (used as a format hint and passed on). */
  name: string
  /** The part's content type. */
  type: string
}

export type TranscriptionRequest = TranscriptionFields & { file: UploadedAudio }
