import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

import { XMLParser, XMLValidator } from 'fast-xml-parser'

import { answer, readBody } from './http.ts'

/** How the fake answers one request (any of its routes). */
export type TtsBehavior =
  /** The route's normal answer. */
  | { kind: 'normal', hold?: Promise<unknown> }
  | { kind: 'status', status: number, body?: unknown, headers?: Record<string, string> }
  /** Accept the request and never answer, until the client goes away or `close()`. */
  | { kind: 'hang' }
  /** Destroy the socket at once: a connection error for the client. */
  | { kind: 'drop' }

/** One request as the fake received it; the object stays live, so tests can poll it. */
export interface TtsRequest {
  method: string
  path: string
  query: URLSearchParams
  /** The key sent: bearer token, or Azure's `Ocp-Apim-Subscription-Key` ('' without one). */
  key: string
  headers: IncomingMessage['headers']
  /** The raw body text. */
  raw: string
  /** The parsed JSON body (OpenAI-compatible speech), else undefined. */
  body?: any // eslint-disable-line @typescript-eslint/no-explicit-any -- parsed JSON that tests read freely
  /** The parsed SSML (Azure), else undefined. */
  ssml?: { voice: string, lang: string, text: string, rate?: string }
  /** The audio bytes the fake answered with, once it did. */
  audio?: Buffer
  aborted: boolean
  completed: boolean
}

export type TtsBehaviorHandler = (request: TtsRequest) => TtsBehavior

export interface FakeTtsUpstream {
  /** OpenAI-compatible base URL (`…/v1`): `POST /audio/speech`, `GET /voices`. */
  url: string
  /** Azure-style origin: `POST /cognitiveservices/v1` (SSML), `GET /cognitiveservices/voices/list`. */
  azureUrl: string
  /** A streaming bridge's WebSocket URL; its catalogue answers at `GET /api/voices?provider=`. */
  streamingUrl: string
  requests: TtsRequest[]
  /** Voices the lists answer with (OpenAI-compatible and streaming: `{ id, name }`; Azure: its own shape). */
  voices: Array<{ id: string, name: string, locale?: string, gender?: string }>
  behave: (handler: TtsBehaviorHandler) => void
  /** Forget the requests and go back to normal answers. */
  reset: () => void
  close: () => Promise<void>
}

export const DEFAULT_VOICES = [
  { id: 'alloy', name: 'Alloy', locale: 'en-US', gender: 'Female' },
  { id: 'en-US-JennyNeural', name: 'Jenny', locale: 'en-US', gender: 'Female' },
  { id: 'ja-JP-NanamiNeural', name: 'Nanami', locale: 'ja-JP', gender: 'Female' },
]

const SAMPLE_RATE = 8000

/** 16-bit mono PCM: a tone whose pitch comes from `seed`, 10 ms per character of `text` (at least 50 ms, at most 2 s). */
export function generatePcm(seed: string, text: string): Buffer {
  const digest = createHash('sha256').update(seed).digest()
  const frequency = 220 + (digest.readUInt16BE(0) % 660)
  const samples = Math.round(SAMPLE_RATE * Math.min(2, Math.max(0.05, Array.from(text).length * 0.01)))
  const pcm = Buffer.alloc(samples * 2)
  for (let i = 0; i < samples; i++)
    pcm.writeInt16LE(Math.round(Math.sin((2 * Math.PI * frequency * i) / SAMPLE_RATE) * 12_000), i * 2)
  return pcm
}

/** A complete RIFF/WAVE file around 16-bit mono PCM at 8 kHz: real audio any player opens. */
export function generateWav(seed: string, text: string): Buffer {
  const pcm = generatePcm(seed, text)
  const header = Buffer.alloc(44)
  header.write('RIFF', 0, 'ascii')
  header.writeUInt32LE(36 + pcm.length, 4)
  header.write('WAVE', 8, 'ascii')
  header.write('fmt ', 12, 'ascii')
  header.writeUInt32LE(16, 16) // fmt chunk size
  header.writeUInt16LE(1, 20) // PCM
  header.writeUInt16LE(1, 22) // mono
  header.writeUInt32LE(SAMPLE_RATE, 24)
  header.writeUInt32LE(SAMPLE_RATE * 2, 28) // byte rate
  header.writeUInt16LE(2, 32) // block align
  header.writeUInt16LE(16, 34) // bits per sample
  header.write('data', 36, 'ascii')
  header.writeUInt32LE(pcm.length, 40)
  return Buffer.concat([header, pcm])
}

/**
 * What the fake reads of an SSML element, as fast-xml-parser returns it: attributes
 * prefixed `@_`, text under `#text`. A repeated child comes back as an array, whose
 * missing `@_name` makes the fake refuse it: it reads one voice, as we send.
 */
interface SsmlElement {
  '#text'?: string
  '@_name'?: string
  '@_rate'?: string
  '@_xml:lang'?: string
  voice?: SsmlElement
  prosody?: SsmlElement
}

// Text is kept as sent (no trimming, no number parsing) so tests can compare it with what we escaped.
const ssmlParser = new XMLParser({ ignoreAttributes: false, alwaysCreateTextNode: true, trimValues: false, parseTagValue: false })

const errorBody = (status: number, message: string) => ({ error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', code: null } })

/**
 * A local stand-in for speech upstreams, on one port: OpenAI's speech API (JSON
 * in, WAV or raw PCM out), Azure's SSML endpoint (malformed XML is refused with
 * 400, as Azure does), the voice lists of both, and an unspeech-style streaming
 * bridge's voice catalogue. Every request is recorded with the audio it got, and
 * any of them can be made to fail.
 */
export async function startFakeTtsUpstream(): Promise<FakeTtsUpstream> {
  const requests: TtsRequest[] = []
  const open = new Set<ServerResponse>()
  const defaultHandler: TtsBehaviorHandler = () => ({ kind: 'normal' })
  let handler = defaultHandler
  let closing = false
  const fake = { voices: DEFAULT_VOICES.map(voice => ({ ...voice })) }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent)
        res.destroy()
      else
        answer(res, 500, errorBody(500, error instanceof Error ? error.message : String(error)))
    })
  })

  function sendAudio(res: ServerResponse, request: TtsRequest, audio: Buffer, contentType: string): void {
    request.audio = audio
    res.writeHead(200, { 'content-type': contentType, 'content-length': audio.length })
    res.end(audio)
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake')
    const auth = req.headers.authorization ?? ''
    const azureKey = req.headers['ocp-apim-subscription-key']
    const raw = await readBody(req)
    const request: TtsRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      key: typeof azureKey === 'string' ? azureKey : auth.startsWith('Bearer ') ? auth.slice('Bearer '.length) : '',
      headers: req.headers,
      raw,
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
    const known = ['POST /v1/audio/speech', 'GET /v1/voices', 'POST /cognitiveservices/v1', 'GET /cognitiveservices/voices/list', 'GET /api/voices']
    if (!known.includes(route))
      return answer(res, 404, errorBody(404, `Unknown route ${route}`))

    // Parse first, so a test's handler can look at what arrived.
    if (route === 'POST /v1/audio/speech') {
      try {
        request.body = JSON.parse(raw)
      }
      catch {
        return answer(res, 400, errorBody(400, 'The body must be JSON'))
      }
    }
    if (route === 'POST /cognitiveservices/v1') {
      if (!String(req.headers['content-type'] ?? '').startsWith('application/ssml+xml'))
        return answer(res, 415, errorBody(415, 'Content-Type must be application/ssml+xml'))
      const valid = XMLValidator.validate(raw)
      if (valid !== true)
        return answer(res, 400, errorBody(400, `Malformed SSML: ${valid.err.msg} (line ${valid.err.line}, column ${valid.err.col})`))
      const { speak } = ssmlParser.parse(raw) as { speak?: SsmlElement }
      const voice = speak?.voice
      if (!speak || !voice?.['@_name'])
        return answer(res, 400, errorBody(400, 'SSML needs <speak> with a <voice name="…">'))
      const rate = voice.prosody?.['@_rate']
      request.ssml = { voice: voice['@_name'], lang: speak['@_xml:lang'] ?? '', text: (voice.prosody ?? voice)['#text'] ?? '', ...(rate ? { rate } : {}) }
    }

    const behavior = handler(request)
    switch (behavior.kind) {
      case 'status':
        if (behavior.headers) {
          for (const [name, value] of Object.entries(behavior.headers))
            res.setHeader(name, value)
        }
        return answer(res, behavior.status, behavior.body ?? errorBody(behavior.status, 'Fake failure'))
      case 'hang':
        return
      case 'drop':
        cutByFake = true
        req.socket.destroy()
        return
      case 'normal':
        await behavior.hold
    }

    switch (route) {
      case 'POST /v1/audio/speech': {
        const { input, voice, model, response_format: format } = request.body ?? {}
        if (typeof input !== 'string' || typeof voice !== 'string' || typeof model !== 'string')
          return answer(res, 400, errorBody(400, 'model, input and voice are required'))
        // Only WAV and raw PCM are really encoded; other formats get WAV bytes labelled as such.
        return format === 'pcm'
          ? sendAudio(res, request, generatePcm(`${model}/${voice}`, input), 'audio/pcm')
          : sendAudio(res, request, generateWav(`${model}/${voice}`, input), 'audio/wav')
      }
      case 'POST /cognitiveservices/v1': {
        const format = String(req.headers['x-microsoft-outputformat'] ?? '')
        const { voice, text } = request.ssml!
        return format.startsWith('raw-')
          ? sendAudio(res, request, generatePcm(`${format}/${voice}`, text), 'audio/pcm')
          : sendAudio(res, request, generateWav(`${format}/${voice}`, text), 'audio/wav')
      }
      case 'GET /v1/voices':
        return answer(res, 200, { voices: fake.voices.map(({ id, name, locale, gender }) => ({ id, name, ...(locale ? { languages: [locale] } : {}), ...(gender ? { gender: gender.toLowerCase() } : {}) })) })
      case 'GET /cognitiveservices/voices/list':
        return answer(res, 200, fake.voices.map(({ id, name, locale, gender }) => ({ Name: `Fake (${id})`, DisplayName: name, ShortName: id, Locale: locale, Gender: gender })))
      case 'GET /api/voices':
        if (!request.query.get('provider'))
          return answer(res, 400, errorBody(400, 'provider is required'))
        return answer(res, 200, { voices: fake.voices.map(({ id, name, locale }) => ({ id, name, languages: locale ? [{ code: locale, title: locale }] : [], labels: {} })) })
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  const origin = `http://127.0.0.1:${port}`

  return {
    url: `${origin}/v1`,
    azureUrl: origin,
    streamingUrl: `ws://127.0.0.1:${port}/api/v1/audio/speech/ws`,
    requests,
    get voices() {
      return fake.voices
    },
    set voices(voices) {
      fake.voices = voices
    },
    behave(next) {
      handler = next
    },
    reset() {
      requests.length = 0
      handler = defaultHandler
      fake.voices = DEFAULT_VOICES.map(voice => ({ ...voice }))
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
