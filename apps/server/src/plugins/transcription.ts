import multipart, { type Multipart } from '@fastify/multipart'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'

import { ApiError, transcriptionFieldsSchema, type Api } from '@airi/api'

import { requireBearerUser } from './bearer-user.ts'
import { errorHandler } from './errors.ts'
import { clientGone } from './client-gone.ts'
import { parseOrBadRequest } from './validation.ts'

export interface TranscriptionPluginOptions {
  api: Api
}

/** The largest audio file we take (OpenAI's own limit). */
const MAX_TRANSCRIPTION_FILE_BYTES = 25 * 1024 * 1024

/** Bounds of everything around the file, far above what OpenAI's form needs. */
const FORM_LIMITS = { fields: 32, fieldSize: 64 * 1024, parts: 64, headerPairs: 200 }

interface UploadedForm {
  fields: Record<string, unknown>
  file: { data: Buffer, name: string, type: string }
}

const badRequest = (param: string | null, message: string) => new ApiError(400, 'BAD_REQUEST', `${param ?? 'body'}: ${message}`, { param })

/** What the multipart parser's refusals mean to a client: too large is 413, anything else 400. */
function formError(error: unknown): ApiError {
  if (error instanceof ApiError)
    return error
  const { code, statusCode, message } = error as { code?: string, statusCode?: number, message?: string }
  if (code === 'FST_REQ_FILE_TOO_LARGE')
    return new ApiError(413, 'FILE_TOO_LARGE', `file: at most ${MAX_TRANSCRIPTION_FILE_BYTES} bytes (25 MiB)`, { param: 'file', maxBytes: MAX_TRANSCRIPTION_FILE_BYTES })
  if (statusCode === 413)
    return new ApiError(413, 'PAYLOAD_TOO_LARGE', `The form has too many parts (${message ?? code})`)
  // A cut or malformed body (busboy's own errors carry no status): the request's fault, never ours.
  return badRequest(null, `the multipart body could not be read (${message ?? 'malformed'})`)
}

/** Reads a part we will not use to its end, keeping nothing (the file size limit still bounds it). */
async function discard(part: Multipart): Promise<void> {
  if (part.type === 'file') {
    for await (const _ of part.file) {
      // Dropped.
    }
  }
}

/**
 * The form's one `file` (buffered, at most 25 MiB, in whatever order the parts
 * come) and its text fields. Every part is read to the end before a refusal, so
 * the client hears it rather than a reset connection.
 */
async function readForm(request: FastifyRequest): Promise<UploadedForm> {
  if (!request.isMultipart())
    throw badRequest('file', 'send the audio as multipart/form-data')
  const fields = new Map<string, unknown>()
  let file: UploadedForm['file'] | undefined
  let problem: ApiError | undefined
  try {
    for await (const part of request.parts()) {
      if (part.type === 'file' && part.fieldname === 'file' && !file && !problem) {
        file = { data: await part.toBuffer(), name: part.filename, type: part.mimetype }
        continue
      }
      if (part.type === 'file')
        problem ??= badRequest(part.fieldname, part.fieldname === 'file' ? 'send exactly one file' : 'must be a text field, not a file')
      else if (part.fieldname === 'file')
        problem ??= badRequest('file', 'must be a file part (with a filename)')
      else if (part.valueTruncated || part.fieldnameTruncated)
        problem ??= badRequest(part.fieldname, `at most ${FORM_LIMITS.fieldSize} bytes`)
      else
        fields.set(part.fieldname, fields.has(part.fieldname) ? [fields.get(part.fieldname), part.value].flat() : part.value)
      await discard(part)
    }
  }
  catch (error) {
    throw formError(error)
  }
  if (problem)
    throw problem
  if (!file)
    throw badRequest('file', 'required: the audio file to transcribe')
  return { fields: Object.fromEntries(fields), file }
}

/**
 * Speech-to-text at /api/v1/audio/transcriptions (SPEC §4.13): OpenAI's multipart
 * form, streamed through `@fastify/multipart` with the file bounded at 25 MiB,
 * bearer auth through the shared resolver, and errors in OpenAI's shape.
 */
export const transcriptionPlugin: FastifyPluginAsync<TranscriptionPluginOptions> = async (app, { api }) => {
  const transcription = api.services.transcription
  app.setErrorHandler(errorHandler({ shape: 'openai', failure: 'transcription request failed' }))
  // Registered here, so only this plugin's routes parse multipart bodies.
  await app.register(multipart, { limits: { ...FORM_LIMITS, fileSize: MAX_TRANSCRIPTION_FILE_BYTES }, throwFileSizeLimit: true })

  app.addHook('preHandler', requireBearerUser(api, 'transcription'))

  // STT_RATE_LIMIT_PER_MINUTE per user; both refusals come before the upload is read.
  const guards = [
    async () => transcription.assertConfigured(),
    async (request: FastifyRequest) => api.services.rateLimits.hit('transcription', request.bearerUser!.id),
  ]

  app.post('/transcriptions', { preHandler: guards }, async (request, reply: FastifyReply) => {
    // A client that goes away stops the upstream call; nothing is billed then.
    const gone = clientGone(reply)
    const { fields, file } = await readForm(request)
    const body = parseOrBadRequest(transcriptionFieldsSchema, fields)
    const result = await transcription.transcribe(request.bearerUser!.id, { ...body, file }, gone, request.bearerKey ?? undefined)
    switch (body.response_format) {
      case 'text':
        return reply.type('text/plain; charset=utf-8').send(result.text)
      case 'verbose_json':
        // The duration is ours, read from the file: what the call was billed for.
        return { text: result.text, language: result.language ?? null, duration: result.durationMs / 1000, ...(result.segments ? { segments: result.segments } : {}) }
      case 'json':
        return { text: result.text }
    }
  })
}
