import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

import { answer } from './http.ts'

/** How the fake answers one transcription request. */
export type SttBehavior =
  /** The normal answer, after `hold` settles, transcribing to `text` (default `DEFAULT_TRANSCRIPT`) and claiming `duration` seconds. */
  | { kind: 'normal', hold?: Promise<unknown>, text?: string, duration?: number }
  | { kind: 'status', status: number, body?: unknown, headers?: Record<string, string> }
  /** Accept the request and never answer, until the client goes away or `close()`. */
  | { kind: 'hang' }
  /** Destroy the socket at once: a connection error for the client. */
  | { kind: 'drop' }

/** One request as the fake received it; the object stays live, so tests can poll it. */
export interface SttRequest {
  method: string
  path: string
  /** The bearer token ('' without one). */
  key: string
  headers: IncomingMessage['headers']
  /** The form's `model` field, once the body was read. */
  model?: string
  /** Every text field of the form (`model`, `language`, `prompt`, `response_format`, `temperature`, …) as sent. */
  fields: Record<string, string>
  /** The form's `file` part. */
  file?: { name: string, type: string, bytes: Buffer }
  aborted: boolean
  completed: boolean
}

export type SttBehaviorHandler = (request: SttRequest) => SttBehavior

export interface FakeSttUpstream {
  /** OpenAI-compatible base URL (`…/v1`): `POST /audio/transcriptions`. */
  url: string
  requests: SttRequest[]
  behave: (handler: SttBehaviorHandler) => void
  /** Forget the requests and go back to normal answers. */
  reset: () => void
  close: () => Promise<void>
}

export const DEFAULT_TRANSCRIPT = 'Hello from the fake transcriber.'

/** What `verbose_json` claims by default: far from any fixture's length, so a server that bills by it shows. */
export const CLAIMED_DURATION_SECONDS = 42.5

const ROUTE = 'POST /v1/audio/transcriptions'

const errorBody = (status: number, message: string, param: string | null = null) => ({
  error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', param, code: null },
})

async function readBytes(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req)
    chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** Reads a multipart form with the platform's own parser (undici's), so the fake needs no dependency. */
async function readForm(req: IncomingMessage, request: SttRequest): Promise<string | undefined> {
  const contentType = req.headers['content-type'] ?? ''
  if (!contentType.startsWith('multipart/form-data'))
    return 'Content-Type must be multipart/form-data'
  let form: FormData
  try {
    form = await new Request('http://fake/', { method: 'POST', headers: { 'content-type': contentType }, body: await readBytes(req) }).formData()
  }
  catch {
    return 'The multipart body could not be parsed'
  }
  for (const [name, value] of form) {
    if (typeof value === 'string')
      request.fields[name] = value
    else if (name === 'file')
      request.file = { name: value.name, type: value.type, bytes: Buffer.from(await value.arrayBuffer()) }
  }
  request.model = request.fields.model
  return undefined
}

function transcribe(res: ServerResponse, request: SttRequest, text: string, duration: number): void {
  const format = request.fields.response_format ?? 'json'
  if (res.destroyed)
    return
  if (format === 'text') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
    return void res.end(text)
  }
  if (format === 'verbose_json') {
    const language = request.fields.language ?? 'english'
    const segments = [{ id: 0, seek: 0, start: 0, end: duration, text, tokens: [50364, 2425, 50414], temperature: Number(request.fields.temperature ?? 0), avg_logprob: -0.25, compression_ratio: 1.1, no_speech_prob: 0.01 }]
    return answer(res, 200, { task: 'transcribe', language, duration, text, segments })
  }
  return answer(res, 200, { text })
}

/**
 * A local stand-in for an OpenAI-compatible transcription upstream: a multipart
 * form in, `{ text }`, plain text or `verbose_json` out. It refuses what OpenAI
 * refuses (no key 401; no file or model 400), records every request with the
 * file it carried, and can be made to fail, hang or drop.
 */
export async function startFakeSttUpstream(): Promise<FakeSttUpstream> {
  const requests: SttRequest[] = []
  const open = new Set<ServerResponse>()
  const defaultHandler: SttBehaviorHandler = () => ({ kind: 'normal' })
  let handler = defaultHandler
  let closing = false

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent)
        res.destroy()
      else
        answer(res, 500, errorBody(500, error instanceof Error ? error.message : String(error)))
    })
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake')
    const auth = req.headers.authorization ?? ''
    const request: SttRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      key: auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '',
      headers: req.headers,
      fields: {},
      aborted: false,
      completed: false,
    }
    requests.push(request)
    open.add(res)
    let cutByFake = false
    res.on('finish', () => {
      request.completed = true
    })
    res.on('close', () => {
      open.delete(res)
      if (!res.writableEnded && !cutByFake && !closing)
        request.aborted = true
    })

    const route = `${request.method} ${request.path}`
    if (route !== ROUTE) {
      req.resume()
      return answer(res, 404, errorBody(404, `Unknown route ${route}`))
    }
    // The body is read first, so a test's handler can look at what arrived.
    const unreadable = await readForm(req, request)
    if (!request.key)
      return answer(res, 401, { error: { message: 'You didn\'t provide an API key.', type: 'invalid_request_error', param: null, code: null } })
    if (unreadable)
      return answer(res, 400, errorBody(400, unreadable))
    if (!request.file)
      return answer(res, 400, errorBody(400, 'you must provide a file', 'file'))
    if (!request.model)
      return answer(res, 400, errorBody(400, 'you must provide a model parameter', 'model'))
    const format = request.fields.response_format
    if (format !== undefined && !['json', 'text', 'verbose_json'].includes(format))
      return answer(res, 400, errorBody(400, `response_format '${format}' is not supported by this fake`, 'response_format'))

    const behavior = handler(request)
    switch (behavior.kind) {
      case 'status':
        for (const [name, value] of Object.entries(behavior.headers ?? {}))
          res.setHeader(name, value)
        return answer(res, behavior.status, behavior.body ?? errorBody(behavior.status, 'Fake failure'))
      case 'hang':
        return
      case 'drop':
        cutByFake = true
        req.socket.destroy()
        return
      case 'normal':
        await behavior.hold
        return transcribe(res, request, behavior.text ?? DEFAULT_TRANSCRIPT, behavior.duration ?? CLAIMED_DURATION_SECONDS)
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    behave(next) {
      handler = next
    },
    reset() {
      requests.length = 0
      handler = defaultHandler
    },
    close() {
      closing = true
      for (const res of open)
        res.destroy()
      server.closeAllConnections()
      return new Promise<void>((resolve, reject) => server.close(error => (error ? reject(error) : resolve())))
    },
  }
}
