import { randomUUID } from 'node:crypto'

import { SpanStatusCode } from '@opentelemetry/api'

import type { StreamingTtsAdapter, StreamingTtsStream, StreamingTtsTarget, StreamingTtsUsage } from '../../adapters/streaming-tts/types.ts'
import type { ConfigValue } from '../../config/entries.ts'
import type { AuthSession } from '../../context.ts'
import { ApiError, outageError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { tracer } from '../../tracing.ts'
import type { SessionGuard } from '../../auth/session-guard.ts'
import { sessionUsageStatus, type FluxMeter, type MeterHold, type MeterHolds } from '../billing/index.ts'
import { countCharacters } from '../speech/index.ts'
import {
  MAX_SESSION_CHARACTERS,
  MAX_SESSION_TEXT_FRAMES,
  PREFLIGHT_CHARACTERS,
  startFrameSchema,
  streamFrameSchema,
  type ServerFrame,
} from './protocol.ts'

/** Where a session writes: the client's socket, as the transport wraps it. */
export interface SpeechSink {
  sendJson: (frame: ServerFrame) => void
  /**
   * Sends an audio chunk; false when the client's outbound buffer is over its
   * bound: the session stops reading the upstream until the handle's `drained`.
   */
  sendAudio: (chunk: Buffer) => boolean
  close: (code: number, reason: string) => void
}

/** What the transport hands a live session. */
export interface SpeechSessionHandle {
  id: string
  /** One client frame, in arrival order. */
  receive: (data: Buffer, isBinary: boolean) => void
  /** Ends the session with an error the transport detected (idle, oversized frame, shutdown). */
  abort: (code: string, message: string) => Promise<void>
  /** The client's socket closed. */
  disconnected: () => Promise<void>
  /** The client's outbound buffer drained after `sendAudio` answered false: audio may flow again. */
  drained: () => void
  /** Settles once the session has ended and is billed. */
  ended: Promise<void>
}

export interface SessionDeps {
  userId: string
  session: AuthSession
  sink: SpeechSink
  adapter: StreamingTtsAdapter
  meter: FluxMeter
  holds: MeterHolds
  sessionGuard: SessionGuard
  logger: Logger
  /** The upstream entry and the key rotation for it, or the client-facing reason there is none. */
  resolveUpstream: () => Promise<{ upstream: ConfigValue<'STREAMING_TTS_UPSTREAM'>, target: Omit<StreamingTtsTarget, 'url'> }>
  closeCodeFor: (code: string) => number
  onBilled: (characters: number) => void
  onPreflightRejected: () => void
}

type Outcome =
  | { kind: 'finished', usage?: StreamingTtsUsage }
  | { kind: 'cancelled' }
  | { kind: 'disconnected' }
  | { kind: 'error', code: string, message: string }

/** How much more to hold each time forwarded text outgrows the hold. */
const HOLD_STEP_CHARACTERS = 1_000

class SessionEnd extends Error {
  constructor(readonly code: string, message: string) {
    super(message)
  }
}

/** The client-facing code of a failure before or while dialling. */
function protocolError(error: unknown): SessionEnd {
  if (error instanceof SessionEnd)
    return error
  if (error instanceof ApiError) {
    if (error.code === 'INSUFFICIENT_FLUX')
      return new SessionEnd('insufficient_flux', 'Not enough Flux for this speech session')
    if (error.code === 'CONFIG_NOT_SET')
      return new SessionEnd('streaming_tts_not_configured', `Streaming speech is not configured (${String(error.details?.key ?? 'STREAMING_TTS_UPSTREAM')} is not set)`)
  }
  if (outageError(error))
    return new SessionEnd('service_unavailable', 'The service is temporarily unavailable; try again shortly')
  return new SessionEnd('internal_error', 'Internal server error')
}

/** Ends that are our fault or the upstream's: the session's span is marked as an error. */
const SERVER_SIDE_ENDS = new Set(['internal_error', 'service_unavailable', 'upstream_error'])

/**
 * One speech session (SPEC §4.7): the start frame is checked and paid for before
 * anything is dialled, text is forwarded in order while the user can afford it,
 * and the session is billed exactly once when it ends, by these rules:
 * finished → the upstream's `text_words` capped at the characters forwarded (and the
 * characters forwarded when it says 0 after audio), else the characters forwarded;
 * ended any other way → the characters forwarded if any audio reached the client,
 * else nothing. Audio flows only as fast as the client takes it: while its buffer
 * is over the bound the upstream is not read.
 */
export function startSpeechSession(deps: SessionDeps): SpeechSessionHandle {
  const { userId, sink, meter, holds, logger } = deps
  const id = randomUUID()
  const tag = { speechSession: id, userId }
  // The socket's whole life, from the start frame to the bill; its outcome is set when it ends.
  const span = tracer.startSpan('tts.session', { attributes: { 'airi.speech_session.id': id } })
  const log: Logger = {
    debug: (obj, msg) => logger.debug({ ...tag, ...obj }, msg),
    info: (obj, msg) => logger.info({ ...tag, ...obj }, msg),
    warn: (obj, msg) => logger.warn({ ...tag, ...obj }, msg),
    error: (obj, msg) => logger.error({ ...tag, ...obj }, msg),
  }
  let phase: 'awaiting-start' | 'opening' | 'streaming' | 'finishing' | 'ended' = 'awaiting-start'
  let upstream: StreamingTtsStream | undefined
  const held: MeterHold[] = []
  let heldCharacters = 0
  let forwarded = 0
  let textFrames = 0
  let audioDelivered = false
  let resolveEnded!: () => void
  const ended = new Promise<void>(resolve => (resolveEnded = resolve))
  // Client frames are handled one after another, so text reaches the upstream in order.
  let queue = Promise.resolve()

  const stopWatching = deps.sessionGuard.watch(deps.session, () => {
    void finish({ kind: 'error', code: 'unauthorized', message: 'Your session has ended; sign in again' })
  })

  const opened = performance.now()
  // The model the start frame named; nothing is billed before it is accepted.
  let model = ''

  async function bill(units: number, end: Outcome['kind']): Promise<number> {
    try {
      if (units <= 0)
        return 0
      await held.at(-1)?.settling().catch((error: unknown) => log.warn({ err: error }, 'could not hold the settling Flux of a speech session'))
      const usage = { kind: 'tts-stream', model, status: sessionUsageStatus(end), characters: units, durationMs: performance.now() - opened } as const
      const { settledFlux } = await meter.accumulate({ userId, units, callId: `speech-session:${id}`, usage })
      deps.onBilled(units)
      return settledFlux
    }
    catch (error) {
      // The audio was heard; a failed debit keeps its units owed on the meter.
      log.error({ err: error, units }, 'could not bill a streaming speech session')
      return 0
    }
    finally {
      await Promise.all(held.splice(0).map(hold => hold.release()))
    }
  }

  /** Ends the session once: stops the upstream, bills, tells the client, closes. */
  async function finish(outcome: Outcome): Promise<void> {
    if (phase === 'ended')
      return ended
    phase = 'ended'
    stopWatching()
    if (outcome.kind !== 'finished')
      upstream?.cancel()
    const units = outcome.kind === 'finished'
      ? finishedUnits(outcome.usage?.textWords)
      : audioDelivered ? forwarded : 0
    const flux = await bill(units, outcome.kind)
    try {
      if (outcome.kind === 'finished' || outcome.kind === 'cancelled') {
        sink.sendJson({ event: 'session.finished', usage: { characters: units, flux }, ...(outcome.kind === 'cancelled' ? { cancelled: true as const } : {}) })
        sink.close(1000, outcome.kind)
      }
      else if (outcome.kind === 'error') {
        sink.sendJson({ event: 'error', code: outcome.code, message: outcome.message })
        sink.close(deps.closeCodeFor(outcome.code), outcome.code)
      }
    }
    finally {
      log.info({ outcome: outcome.kind, code: outcome.kind === 'error' ? outcome.code : undefined, forwarded, billed: units, flux, audioDelivered }, 'speech session ended')
      span.setAttributes({ 'airi.speech_session.outcome': outcome.kind, 'airi.tts.characters': units, 'airi.billing.flux': flux, ...(outcome.kind === 'error' ? { 'error.type': outcome.code } : {}) })
      if (outcome.kind === 'error' && SERVER_SIDE_ENDS.has(outcome.code))
        span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.message })
      span.end()
      resolveEnded()
    }
  }

  /**
   * The upstream's count is believed only downwards (it may skip what it did not
   * speak): never past the characters it was sent, and never 0 once audio came.
   */
  function finishedUnits(reported: number | undefined): number {
    if (reported === undefined)
      return forwarded
    const units = reported === 0 && audioDelivered ? forwarded : Math.min(reported, forwarded)
    if (units !== reported)
      log.warn({ reported, forwarded, billed: units }, 'the speech upstream reported text_words that do not match what it was sent; billing the characters forwarded')
    return units
  }

  const fail = (error: unknown) => {
    const end = protocolError(error)
    if (end.code === 'internal_error')
      log.error({ err: error }, 'speech session failed')
    return finish({ kind: 'error', code: end.code, message: end.message })
  }

  async function holdMore(characters: number): Promise<void> {
    const hold = await holds.acquire(userId, characters)
    // The session may have ended (and released its holds) while this one was taken.
    if (phase === 'ended')
      return hold.release()
    held.push(hold)
    heldCharacters += characters
  }

  async function start(frame: unknown): Promise<void> {
    const parsed = startFrameSchema.safeParse(frame)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!
      throw new SessionEnd('invalid_start_frame', `The first frame must be a valid start frame (${issue.path.join('.') || 'frame'}: ${issue.message})`)
    }
    const start = parsed.data
    const { upstream: entry, target } = await deps.resolveUpstream()
    if (!entry.models.some(model => model.id === start.model))
      throw new SessionEnd('streaming_tts_model_not_enabled', `The model ${JSON.stringify(start.model)} is not enabled for streaming speech`)
    try {
      await holdMore(PREFLIGHT_CHARACTERS)
    }
    catch (error) {
      if (error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX')
        deps.onPreflightRejected()
      throw error
    }
    if (phase !== 'opening')
      return
    phase = 'streaming'
    model = start.model
    upstream = deps.adapter.open({ ...target, url: entry.url }, {
      model: start.model,
      voice: start.voice,
      responseFormat: start.response_format,
      extraBody: start.extra_body,
    }, {
      started: () => phase !== 'ended' && sink.sendJson({ event: 'session.started' }),
      audio: (chunk) => {
        if (phase === 'ended')
          return
        audioDelivered = true
        if (!sink.sendAudio(chunk))
          upstream?.pause()
      },
      sentence: text => phase !== 'ended' && sink.sendJson({ event: 'sentence', text }),
      finished: usage => void finish({ kind: 'finished', usage }),
      error: error => void finish({ kind: 'error', code: error.code, message: error.message }),
    })
  }

  async function text(value: string): Promise<void> {
    if (phase === 'finishing')
      throw new SessionEnd('invalid_frame', 'No text may follow finish')
    textFrames++
    const characters = countCharacters(value)
    if (textFrames > MAX_SESSION_TEXT_FRAMES || forwarded + characters > MAX_SESSION_CHARACTERS)
      throw new SessionEnd('session_limit_exceeded', `A session carries at most ${MAX_SESSION_CHARACTERS} characters in ${MAX_SESSION_TEXT_FRAMES} text frames`)
    if (forwarded + characters > heldCharacters)
      await holdMore(Math.max(forwarded + characters - heldCharacters, HOLD_STEP_CHARACTERS))
    if (phase === 'ended')
      return
    forwarded += characters
    if (characters > 0)
      upstream!.appendText(value)
  }

  async function handle(data: Buffer, isBinary: boolean): Promise<void> {
    if (phase === 'ended')
      return
    let frame: unknown
    try {
      if (isBinary)
        throw new Error('binary')
      frame = JSON.parse(data.toString('utf8'))
    }
    catch {
      throw new SessionEnd(phase === 'awaiting-start' ? 'invalid_start_frame' : 'invalid_frame', 'Frames are JSON text')
    }
    if (phase === 'awaiting-start') {
      phase = 'opening'
      return start(frame)
    }
    const parsed = streamFrameSchema.safeParse(frame)
    if (!parsed.success)
      throw new SessionEnd('invalid_frame', `Expected a text, finish or cancel frame (${parsed.error.issues[0]!.message})`)
    switch (parsed.data.event) {
      case 'text':
        return text(parsed.data.text)
      case 'finish':
        if (phase === 'streaming') {
          phase = 'finishing'
          upstream!.finish()
        }
        return
      case 'cancel':
        return finish({ kind: 'cancelled' })
    }
  }

  return {
    id,
    ended,
    receive(data, isBinary) {
      queue = queue.then(() => handle(data, isBinary)).catch(fail)
    },
    abort: (code, message) => finish({ kind: 'error', code, message }),
    disconnected: () => finish({ kind: 'disconnected' }),
    drained() {
      if (phase !== 'ended')
        upstream?.resume()
    },
  }
}
