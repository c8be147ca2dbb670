import { z } from 'zod'

import { ApiError } from '../../errors.ts'
import { expectOk, readJson } from '../tts/types.ts'
import type { SttAdapter, Transcript } from './types.ts'

/** The largest transcript answer we read (25 MiB of audio is a few hours of speech at most). */
const MAX_TRANSCRIPT_BYTES = 8 * 1024 * 1024

const base = (baseUrl: string) => baseUrl.replace(/\/+$/, '')

/** `json` and `verbose_json` answers alike; fields we do not use are ignored. */
const answerSchema = z.object({
  text: z.string(),
  language: z.string().min(1).max(100).optional().catch(undefined),
  segments: z.array(z.object({
    id: z.number(),
    start: z.number(),
    end: z.number(),
    text: z.string(),
  })).optional().catch(undefined),
})

/**
 * OpenAI's transcription API and the servers that speak it (Groq, vLLM,
 * faster-whisper servers): a multipart form to `POST {baseUrl}/audio/transcriptions`
 * with a bearer key.
 */
export const openAiCompatibleStt: SttAdapter = {
  async transcribe({ baseUrl, model, key, file, language, prompt, temperature, responseFormat, signal }): Promise<Transcript> {
    const form = new FormData()
    form.append('file', new Blob([file.data as Uint8Array<ArrayBuffer>], { type: file.type }), file.name)
    form.append('model', model)
    form.append('response_format', responseFormat)
    if (language !== undefined)
      form.append('language', language)
    if (prompt !== undefined)
      form.append('prompt', prompt)
    if (temperature !== undefined)
      form.append('temperature', String(temperature))

    const response = await fetch(`${base(baseUrl)}/audio/transcriptions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, accept: 'application/json' },
      body: form,
      signal,
    })
    await expectOk(response)
    const parsed = answerSchema.safeParse(await readJson(response, MAX_TRANSCRIPT_BYTES))
    if (!parsed.success)
      throw new ApiError(502, 'UPSTREAM_UNAVAILABLE', 'The transcription upstream answered without a text')
    const { text, language: detected, segments } = parsed.data
    return { text, ...(detected ? { language: detected } : {}), ...(segments ? { segments } : {}) }
  },
}
