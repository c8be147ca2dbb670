import WebSocket, { type RawData } from 'ws'
import { z } from 'zod'

import { isRetryableStatus } from '../../services/upstream-keys.ts'
import type { StreamingTtsAdapter, StreamingTtsError, StreamingTtsKey } from './types.ts'

/** Largest frame we accept from the upstream (an audio chunk). */
const MAX_UPSTREAM_FRAME_BYTES = 4 * 1024 * 1024

/**
 * The upstream's JSON events: `{ event, payload?, code?, message? }`. Errors carry
 * `code` and `message` at the top level (not in `payload`).
 */
const upstreamEvent = z.looseObject({
  event: z.string(),
  payload: z.looseObject({
    text: z.string().optional(),
    usage: z.looseObject({ text_words: z.number().int().nonnegative().optional() }).optional(),
  }).optional(),
  code: z.string().optional(),
  message: z.string().optional(),
})

/** Only short, plain codes are passed on to clients; anything else becomes `upstream_error`. */
function safeCode(code: string | undefined): string {
  return code && /^[\w.-]{1,100}$/.test(code) ? code : 'upstream_error'
}

/** `https://host/path` → `wss://host/path`; ws(s) URLs as they are. */
function webSocketUrl(url: string): string {
  const parsed = new URL(url)
  if (parsed.protocol === 'https:')
    parsed.protocol = 'wss:'
  else if (parsed.protocol === 'http:')
    parsed.protocol = 'ws:'
  return parsed.toString()
}

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data))
    return data
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
}

/**
 * The unspeech stream protocol: our client frames (`start`, `text`, `finish`,
 * `cancel`) as JSON text, the key as `Authorization: Bearer`; JSON events and
 * binary audio back. A dial the upstream refuses (401/403/429/5xx) or that fails
 * to connect is retried with the next key; frames wait in order meanwhile.
 */
export const unspeechStreamAdapter: StreamingTtsAdapter = {
  open(target, start, handlers) {
    const outbox: string[] = [JSON.stringify({
      event: 'start',
      model: start.model,
      voice: start.voice,
      ...(start.responseFormat ? { response_format: start.responseFormat } : {}),
      ...(start.extraBody ? { extra_body: start.extraBody } : {}),
    })]
    let socket: WebSocket | undefined
    let open = false
    let done = false
    let paused = false

    function end(): void {
      done = true
      outbox.length = 0
    }
    function fail(error: StreamingTtsError): void {
      if (done)
        return
      end()
      const current = socket
      socket = undefined
      current?.terminate()
      handlers.error(error)
    }
    function send(frame: string): void {
      if (done)
        return
      if (open && socket?.readyState === WebSocket.OPEN)
        socket.send(frame)
      else
        outbox.push(frame)
    }

    function dial(lastReason: string): void {
      if (done)
        return
      let key: StreamingTtsKey | undefined
      try {
        key = target.nextKey()
      }
      catch (error) {
        return fail({ code: 'upstream_unavailable', message: (error as Error).message })
      }
      if (!key)
        return fail({ code: 'upstream_unavailable', message: `Could not reach the speech upstream (${lastReason})` })
      const keyId = key.id
      const ws = new WebSocket(webSocketUrl(target.url), {
        headers: { authorization: `Bearer ${key.apiKey}` },
        handshakeTimeout: target.connectTimeoutMs ?? 10_000,
        maxPayload: MAX_UPSTREAM_FRAME_BYTES,
        perMessageDeflate: false,
      })
      socket = ws
      // Events of a socket we gave up on (a refused dial, a cancel) are ignored.
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
        fail({ code: 'upstream_rejected', message: `The speech upstream refused the session (${status})` })
      })
      ws.on('open', () => {
        if (!current())
          return void ws.terminate()
        open = true
        // ws ignores pause() while connecting.
        if (paused)
          ws.pause()
        for (const frame of outbox.splice(0))
          ws.send(frame)
      })
      ws.on('message', (data, isBinary) => {
        if (!current())
          return
        if (isBinary)
          return handlers.audio(rawToBuffer(data))
        let event: z.output<typeof upstreamEvent>
        try {
          event = upstreamEvent.parse(JSON.parse(rawToBuffer(data).toString('utf8')))
        }
        catch {
          return fail({ code: 'upstream_protocol_error', message: 'The speech upstream sent a frame we cannot read' })
        }
        switch (event.event) {
          case 'session.started':
            return handlers.started()
          case 'sentence.start':
            if (event.payload?.text)
              handlers.sentence(event.payload.text)
            return
          case 'session.finished': {
            end()
            socket = undefined
            // Read again so the closing handshake can complete (what follows is dropped).
            ws.resume()
            ws.close(1000)
            const words = event.payload?.usage?.text_words
            return handlers.finished(words === undefined ? undefined : { textWords: words })
          }
          case 'error':
            return fail({ code: safeCode(event.code), message: event.message?.slice(0, 500) || 'The speech upstream failed' })
          default:
            // sentence.end, subtitle and events we do not know carry nothing the client needs.
        }
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
        fail({ code: 'upstream_closed', message: `The speech upstream closed the session before finishing (${code})` })
      })
    }

    dial('no key')
    return {
      appendText: text => send(JSON.stringify({ event: 'text', text })),
      finish: () => send(JSON.stringify({ event: 'finish' })),
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
      cancel() {
        if (done)
          return
        const current = socket
        const wasOpen = open && current?.readyState === WebSocket.OPEN
        end()
        socket = undefined
        if (wasOpen) {
          current!.send(JSON.stringify({ event: 'cancel' }))
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
