import WebSocket, { type RawData } from 'ws'
import { z } from 'zod'

import { isRetryableStatus } from '../../services/upstream-keys.ts'
import { createItemLedger, type ItemLedger } from './realtime-items.ts'
import type { StreamingSttAdapter, StreamingSttError, StreamingSttHandlers, StreamingSttKey } from './types.ts'

/** The only input rate of the protocol's `audio/pcm` format. */
const REALTIME_SAMPLE_RATE = 24_000
/** Largest event we accept from the upstream (transcripts are small). */
const MAX_UPSTREAM_FRAME_BYTES = 1024 * 1024

/** The fields of the upstream's events that we read; everything else is ignored. */
const upstreamEvent = z.looseObject({
  type: z.string(),
  item_id: z.string().optional(),
  delta: z.string().optional(),
  transcript: z.string().optional(),
  error: z.looseObject({
    code: z.string().nullish(),
    type: z.string().nullish(),
    message: z.string().nullish(),
  }).optional(),
})

/** Only short, plain codes are passed on to clients; anything else becomes `upstream_error`. */
function safeCode(code: string | null | undefined): string {
  return code && /^[\w.-]{1,100}$/.test(code) ? code : 'upstream_error'
}

function rawText(data: RawData): string {
  return (Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)).toString('utf8')
}

/**
 * The OpenAI Realtime transcription protocol (also served by vLLM), as SPEC
 * §4.13 spells it: the key as `Authorization: Bearer`, one `session.update` of
 * type `transcription` (PCM at 24 kHz, server VAD), audio as base64
 * `input_audio_buffer.append`, `input_audio_buffer.commit` on stop. A dial the
 * upstream refuses (401/403/429/5xx) or that fails to connect is retried with
 * the next key; events wait in order meanwhile.
 */
export const openaiRealtimeSttAdapter: StreamingSttAdapter = {
  sampleRate: REALTIME_SAMPLE_RATE,
  open(target, start, handlers) {
    const update = {
      type: 'session.update',
      session: {
        type: 'transcription',
        audio: {
          input: {
            format: { type: 'audio/pcm', rate: REALTIME_SAMPLE_RATE },
            transcription: { model: start.model, ...(start.language ? { language: start.language } : {}) },
            turn_detection: { type: 'server_vad' },
          },
        },
      },
    }
    // Events not yet written, each with the audio bytes it carries.
    const outbox: Array<{ frame: string, bytes: number }> = [{ frame: JSON.stringify(update), bytes: 0 }]
    const items = createItemLedger()
    let socket: WebSocket | undefined
    let open = false
    let done = false
    let paused = false
    let started = false
    let pendingBytes = 0

    function end(): void {
      done = true
      outbox.length = 0
    }
    function fail(error: StreamingSttError): void {
      if (done)
        return
      end()
      const current = socket
      socket = undefined
      current?.terminate()
      handlers.error(error)
    }
    function write(ws: WebSocket, frame: string, bytes: number): void {
      // The callback runs once the connection has taken the frame (or failed to).
      ws.send(frame, () => {
        pendingBytes -= bytes
        if (bytes > 0 && !done)
          handlers.written()
      })
    }
    function send(frame: string, bytes: number): void {
      if (done)
        return
      pendingBytes += bytes
      if (open && socket?.readyState === WebSocket.OPEN)
        write(socket, frame, bytes)
      else
        outbox.push({ frame, bytes })
    }
    function markStarted(): void {
      if (!started) {
        started = true
        handlers.started()
      }
    }
    function finishIfDone(ws: WebSocket): void {
      if (!items.done)
        return
      end()
      socket = undefined
      // Read again so the closing handshake can complete.
      ws.resume()
      ws.close(1000)
      handlers.finished()
    }

    const session = { handlers, items, markStarted, fail, finishIfDone }
    function dial(lastReason: string): void {
      if (done)
        return
      let key: StreamingSttKey | undefined
      try {
        key = target.nextKey()
      }
      catch (error) {
        return fail({ code: 'upstream_unavailable', message: (error as Error).message })
      }
      if (!key)
        return fail({ code: 'upstream_unavailable', message: `Could not reach the transcription upstream (${lastReason})` })
      const keyId = key.id
      const ws = new WebSocket(target.url, {
        headers: { authorization: `Bearer ${key.apiKey}` },
        handshakeTimeout: target.connectTimeoutMs ?? 10_000,
        maxPayload: MAX_UPSTREAM_FRAME_BYTES,
        perMessageDeflate: false,
      })
      socket = ws
      // Events of a socket we gave up on (a refused dial, a close) are ignored.
      const current = () => socket === ws && !done

      ws.on('unexpected-response', (request, response) => {
        response.resume()
        request.destroy()
        if (!current())
          return
        const status = response.statusCode ?? 0
        const retryAfter = response.headers['retry-after']
        target.onKeyRefused?.(keyId, status, Array.isArray(retryAfter) ? retryAfter[0] : retryAfter)
        socket = undefined
        if (isRetryableStatus(status))
          return dial(`key ${keyId} answered ${status}`)
        fail({ code: 'upstream_rejected', message: `The transcription upstream refused the session (${status})` })
      })
      ws.on('open', () => {
        if (!current())
          return void ws.terminate()
        open = true
        // ws ignores pause() while connecting.
        if (paused)
          ws.pause()
        for (const { frame, bytes } of outbox.splice(0))
          write(ws, frame, bytes)
      })
      ws.on('message', (data, isBinary) => {
        if (current())
          handleEvent(session, ws, isBinary ? undefined : rawText(data))
      })
      ws.on('error', () => {
        // 'close' follows and decides.
      })
      ws.on('close', (code) => {
        if (!current())
          return
        socket = undefined
        if (!open)
          return dial(`could not connect with key ${keyId}`)
        fail({ code: 'upstream_closed', message: `The transcription upstream closed the session before finishing (${code})` })
      })
    }

    dial('no key')
    return {
      appendAudio: pcm => send(JSON.stringify({ type: 'input_audio_buffer.append', audio: pcm.toString('base64') }), pcm.length),
      get pendingBytes() {
        return pendingBytes
      },
      commit() {
        if (done)
          return
        items.commitSent()
        send(JSON.stringify({ type: 'input_audio_buffer.commit' }), 0)
      },
      pause() {
        if (done)
          return
        paused = true
        socket?.pause()
      },
      resume() {
        if (done)
          return
        paused = false
        socket?.resume()
      },
      close() {
        if (done)
          return
        const current = socket
        const wasOpen = open && current?.readyState === WebSocket.OPEN
        end()
        socket = undefined
        if (wasOpen) {
          // A paused socket would never read the upstream's close; what it still reads is dropped.
          current!.resume()
          current!.close(1000)
        }
        else {
          current?.terminate()
        }
      },
    }
  },
}

interface EventContext {
  handlers: StreamingSttHandlers
  items: ItemLedger
  markStarted: () => void
  fail: (error: StreamingSttError) => void
  finishIfDone: (ws: WebSocket) => void
}

/** One upstream event (undefined: a binary frame, which the protocol never sends). */
function handleEvent({ handlers, items, markStarted, fail, finishIfDone }: EventContext, ws: WebSocket, text: string | undefined): void {
  let event: z.output<typeof upstreamEvent>
  try {
    event = upstreamEvent.parse(JSON.parse(text ?? ''))
  }
  catch {
    return fail({ code: 'upstream_protocol_error', message: 'The transcription upstream sent an event we cannot read' })
  }
  switch (event.type) {
    case 'session.updated':
      return markStarted()
    case 'input_audio_buffer.speech_stopped':
      items.speechStopped(event.item_id)
      return
    case 'input_audio_buffer.committed':
      markStarted()
      items.committed(event.item_id)
      return finishIfDone(ws)
    case 'conversation.item.input_audio_transcription.delta':
      markStarted()
      if (event.item_id && event.delta)
        handlers.delta(event.item_id, event.delta)
      return
    case 'conversation.item.input_audio_transcription.completed':
      markStarted()
      if (event.item_id)
        handlers.final(event.item_id, event.transcript ?? '')
      items.completed(event.item_id)
      return finishIfDone(ws)
    case 'conversation.item.input_audio_transcription.failed':
      // One utterance the upstream could not transcribe: it has nothing more to say about it.
      items.completed(event.item_id)
      return finishIfDone(ws)
    case 'error': {
      const code = event.error?.code ?? event.error?.type
      if (items.commitWasEmpty(code))
        return finishIfDone(ws)
      return fail({ code: safeCode(code), message: event.error?.message?.slice(0, 500) || 'The transcription upstream failed' })
    }
    default:
      // session.created, speech_started and events we do not know carry nothing the client needs.
  }
}
