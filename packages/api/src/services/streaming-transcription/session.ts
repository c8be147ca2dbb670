import { randomUUID } from 'node:crypto'

import { SpanStatusCode } from '@opentelemetry/api'

import type { StreamingSttAdapter, StreamingSttSession, StreamingSttTarget } from '../../adapters/streaming-stt/types.ts'
import type { SessionGuard } from '../../auth/session-guard.ts'
import type { ConfigValue } from '../../config/entries.ts'
import type { AuthSession } from '../../context.ts'
import { ApiError, outageError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { tracer } from '../../tracing.ts'
import { sessionUsageStatus, type FluxMeter, type MeterHolds } from '../billing/index.ts'
import { createPcm16Resampler, pcm16DurationMs, type Pcm16Resampler } from '../transcription/index.ts'
import {
  MAX_SESSION_AUDIO_MS,
  PREFLIGHT_AUDIO_MS,
  transcriptionControlFrameSchema,
  transcriptionStartFrameSchema,
  type TranscriptionServerFrame,
} from './protocol.ts'
import { createSessionBilling } from './billing.ts'

/** Where a session writes: the client's socket, as the transport wraps it. */
export interface TranscriptionSink {
  /**
   * Sends a frame; false when the client's outbound buffer is over its bound:
   * the session stops reading the upstream until the handle's `drained`.
   */
  sendJson: (frame: TranscriptionServerFrame) => boolean
  /** Stops reading the client's frames: the upstream is not taking audio as fast as it comes. */
  pauseInput: () => void
  /** Reads the client's frames again after `pauseInput`. */
  resumeInput: () => void
  close: (code: number, reason: string) => void
}

/** What the transport hands a live session. */
export interface TranscriptionSessionHandle {
  id: string
  /** One client frame, in arrival order. */
  receive: (data: Buffer, isBinary: boolean) => void
  /** Ends the session at once with an error the transport detected (a slow client, shutdown). */
  abort: (code: string, message: string) => Promise<void>
  /** Ends the session with an error about a frame the transport refused (oversized), after the frames before it. */
  refuse: (code: string, message: string) => void
  /** No client frame for `ms`: `idle_timeout`, or `upstream_timeout` when it is the upstream we were waiting for. */
  timedOut: (ms: number) => Promise<void>
  /** The client's socket closed. */
  disconnected: () => Promise<void>
  /** The client's outbound buffer drained after `sendJson` answered false: the upstream is read again. */
  drained: () => void
  /** Settles once the session has ended and is billed. */
  ended: Promise<void>
}

export interface TranscriptionSessionDeps {
  userId: string
  session: AuthSession
  sink: TranscriptionSink
  adapter: StreamingSttAdapter
  meter: FluxMeter
  holds: MeterHolds
  sessionGuard: SessionGuard
  logger: Logger
  /** The upstream entry and the key rotation for it, or the client-facing reason there is none. */
  resolveUpstream: () => Promise<{ upstream: ConfigValue<'STREAMING_STT_UPSTREAM'>, target: Omit<StreamingSttTarget, 'url'> }>
  closeCodeFor: (code: string) => number
  /** A session billed `ms` milliseconds of audio (more than 0). */
  onBilled: (ms: number) => void
  onPreflightRejected: () => void
}

type Outcome =
  | { kind: 'finished' }
  | { kind: 'cancelled' }
  | { kind: 'disconnected' }
  | { kind: 'error', code: string, message: string }

/** How much more to hold each time the audio received outgrows the hold. */
const HOLD_STEP_MS = 60_000
/**
 * Audio bytes received and not yet taken by the upstream's connection (queued
 * frames, the dial's outbox, the socket's buffer) past which the client's
 * socket is no longer read, until half of it has gone.
 */
const MAX_PENDING_AUDIO_BYTES = 1024 * 1024

class SessionEnd extends Error {
  constructor(readonly code: string, message: string) {
    super(message)
  }
}

/** The client-facing code of a failure before or while streaming. */
function protocolError(error: unknown): SessionEnd {
  if (error instanceof SessionEnd)
    return error
  if (error instanceof ApiError) {
    if (error.code === 'INSUFFICIENT_FLUX')
      return new SessionEnd('insufficient_flux', 'Not enough Flux for this transcription session')
    if (error.code === 'CONFIG_NOT_SET')
      return new SessionEnd('streaming_stt_not_configured', `Streaming transcription is not configured (${String(error.details?.key ?? 'STREAMING_STT_UPSTREAM')} is not set)`)
  }
  if (outageError(error))
    return new SessionEnd('service_unavailable', 'The service is temporarily unavailable; try again shortly')
  return new SessionEnd('internal_error', 'Internal server error')
}

/** Ends that are our fault or the upstream's: the session's span is marked as an error. */
const SERVER_SIDE_ENDS = new Set(['internal_error', 'service_unavailable', 'upstream_error', 'upstream_closed', 'upstream_timeout', 'upstream_unavailable'])

/**
 * One transcription session (SPEC §4.13): the start frame is checked and paid
 * for before anything is dialled; audio is resampled to the upstream's rate and
 * forwarded in order while the user can afford it; transcripts are relayed as
 * they come. Billed exactly once when it ends: the audio received, however it
 * ended, once the upstream accepted the session (before that nothing was
 * transcribed, and nothing is billed). Neither a slow upstream nor a slow client
 * makes it hold more than a bounded amount: each side stops being read instead.
 */
export function startTranscriptionSession(deps: TranscriptionSessionDeps): TranscriptionSessionHandle {
  const { userId, sink, meter, holds, logger, adapter } = deps
  const id = randomUUID()
  const tag = { transcriptionSession: id, userId }
  // The socket's whole life, from the start frame to the bill.
  const span = tracer.startSpan('stt.session', { attributes: { 'airi.transcription_session.id': id } })
  const log: Logger = {
    debug: (obj, msg) => logger.debug({ ...tag, ...obj }, msg),
    info: (obj, msg) => logger.info({ ...tag, ...obj }, msg),
    warn: (obj, msg) => logger.warn({ ...tag, ...obj }, msg),
    error: (obj, msg) => logger.error({ ...tag, ...obj }, msg),
  }
  let phase: 'awaiting-start' | 'opening' | 'streaming' | 'stopping' | 'ended' = 'awaiting-start'
  let upstream: StreamingSttSession | undefined
  let upstreamStarted = false
  let resampler: Pcm16Resampler | undefined
  let sampleRate = 0
  let receivedBytes = 0
  // Client bytes received and not yet handled; with the upstream's pending bytes, what we hold.
  let queuedBytes = 0
  let inputPaused = false
  let resolveEnded!: () => void
  const ended = new Promise<void>(resolve => (resolveEnded = resolve))
  // Client frames are handled one after another, so audio reaches the upstream in order.
  let queue = Promise.resolve()

  const opened = performance.now()
  // The upstream model, known once the start frame is accepted; only then can anything be billed.
  let model = ''
  const billing = createSessionBilling({ userId, callId: `transcription-session:${id}`, meter, holds, log, onBilled: deps.onBilled })
  const stopWatching = deps.sessionGuard.watch(deps.session, () => {
    void finish({ kind: 'error', code: 'unauthorized', message: 'Your session has ended; sign in again' })
  })

  const receivedMs = () => (sampleRate > 0 ? pcm16DurationMs(receivedBytes, sampleRate) : 0)

  /** Pauses reading the client while too much of its audio waits for the upstream. */
  function regulateInput(): void {
    if (phase === 'ended')
      return
    const pending = queuedBytes + (upstream?.pendingBytes ?? 0)
    if (!inputPaused && pending > MAX_PENDING_AUDIO_BYTES) {
      inputPaused = true
      sink.pauseInput()
    }
    else if (inputPaused && pending <= MAX_PENDING_AUDIO_BYTES / 2) {
      inputPaused = false
      sink.resumeInput()
    }
  }

  function send(frame: TranscriptionServerFrame): void {
    if (phase !== 'ended' && !sink.sendJson(frame))
      upstream?.pause()
  }

  /** Ends the session once: stops the upstream, bills, tells the client, closes. */
  async function finish(outcome: Outcome): Promise<void> {
    if (phase === 'ended')
      return ended
    phase = 'ended'
    stopWatching()
    if (outcome.kind !== 'finished')
      upstream?.close()
    const audioMs = receivedMs()
    const units = upstreamStarted ? audioMs : 0
    const flux = await billing.settle(units, { kind: 'stt-stream', model, status: sessionUsageStatus(outcome.kind), audioMs: units, durationMs: performance.now() - opened })
    try {
      if (outcome.kind === 'finished' || outcome.kind === 'cancelled') {
        sink.sendJson({ event: 'session.finished', usage: { seconds: units / 1000, flux }, ...(outcome.kind === 'cancelled' ? { cancelled: true as const } : {}) })
        sink.close(1000, outcome.kind)
      }
      else if (outcome.kind === 'error') {
        sink.sendJson({ event: 'error', code: outcome.code, message: outcome.message })
        sink.close(deps.closeCodeFor(outcome.code), outcome.code)
      }
    }
    finally {
      log.info({ outcome: outcome.kind, code: outcome.kind === 'error' ? outcome.code : undefined, receivedMs: audioMs, billed: units, flux }, 'transcription session ended')
      span.setAttributes({ 'airi.transcription_session.outcome': outcome.kind, 'airi.stt.duration_ms': units, 'airi.billing.flux': flux, ...(outcome.kind === 'error' ? { 'error.type': outcome.code } : {}) })
      if (outcome.kind === 'error' && SERVER_SIDE_ENDS.has(outcome.code))
        span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.message })
      span.end()
      resolveEnded()
    }
  }

  const fail = (error: unknown) => {
    const end = protocolError(error)
    if (end.code === 'internal_error')
      log.error({ err: error }, 'transcription session failed')
    return finish({ kind: 'error', code: end.code, message: end.message })
  }

  async function start(frame: unknown): Promise<void> {
    const parsed = transcriptionStartFrameSchema.safeParse(frame)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!
      throw new SessionEnd('invalid_start_frame', `The first frame must be a valid start frame (${issue.path.join('.') || 'frame'}: ${issue.message})`)
    }
    const start = parsed.data
    const { upstream: entry, target } = await deps.resolveUpstream()
    if (start.model !== undefined && start.model !== entry.model)
      throw new SessionEnd('streaming_stt_model_not_enabled', `The model ${JSON.stringify(start.model)} is not enabled for streaming transcription`)
    try {
      await billing.holdMore(PREFLIGHT_AUDIO_MS)
    }
    catch (error) {
      if (error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX')
        deps.onPreflightRejected()
      throw error
    }
    if (phase !== 'opening')
      return
    phase = 'streaming'
    sampleRate = start.sample_rate
    resampler = createPcm16Resampler(sampleRate, adapter.sampleRate)
    model = entry.model
    upstream = adapter.open({ ...target, url: entry.url }, { model: entry.model, language: start.language }, {
      started() {
        upstreamStarted = true
        send({ event: 'session.started' })
      },
      delta: (itemId, text) => send({ event: 'transcript.delta', itemId, text }),
      final: (itemId, text) => send({ event: 'transcript.final', itemId, text }),
      finished: () => void finish({ kind: 'finished' }),
      error: error => void finish({ kind: 'error', code: error.code, message: error.message }),
      written: regulateInput,
    })
  }

  async function audio(data: Buffer): Promise<void> {
    if (phase === 'stopping')
      throw new SessionEnd('invalid_frame', 'No audio may follow stop')
    const total = receivedBytes + data.length
    const ms = pcm16DurationMs(total, sampleRate)
    if (ms > MAX_SESSION_AUDIO_MS)
      throw new SessionEnd('session_limit_exceeded', `A session carries at most ${MAX_SESSION_AUDIO_MS / 60_000} minutes of audio`)
    if (ms > billing.heldMs)
      await billing.holdMore(ms - billing.heldMs, HOLD_STEP_MS)
    if (phase !== 'streaming')
      return
    receivedBytes = total
    const resampled = resampler!.push(data)
    if (resampled.length > 0)
      upstream!.appendAudio(resampled)
  }

  function stop(): void {
    if (phase !== 'streaming')
      return
    phase = 'stopping'
    const rest = resampler!.flush()
    if (rest.length > 0)
      upstream!.appendAudio(rest)
    upstream!.commit()
  }

  async function handle(data: Buffer, isBinary: boolean): Promise<void> {
    if (phase === 'ended')
      return
    if (phase === 'awaiting-start') {
      phase = 'opening'
      return start(isBinary ? undefined : parseJson(data, 'invalid_start_frame'))
    }
    if (isBinary)
      return data.length > 0 ? audio(data) : undefined
    const parsed = transcriptionControlFrameSchema.safeParse(parseJson(data, 'invalid_frame'))
    if (!parsed.success)
      throw new SessionEnd('invalid_frame', 'Audio goes in binary frames; a text frame carries only stop or cancel')
    return parsed.data.event === 'stop' ? stop() : finish({ kind: 'cancelled' })
  }

  return {
    id,
    ended,
    receive(data, isBinary) {
      queuedBytes += data.length
      regulateInput()
      queue = queue.then(async () => {
        try {
          await handle(data, isBinary)
        }
        finally {
          queuedBytes -= data.length
          regulateInput()
        }
      }).catch(fail)
    },
    abort: (code, message) => finish({ kind: 'error', code, message }),
    refuse(code, message) {
      // Behind the frames already received, so the audio they carry is forwarded and billed.
      queue = queue.then(() => finish({ kind: 'error', code, message }))
    },
    timedOut(ms) {
      // Waiting for the upstream to accept the session, to take the audio or to finish is not the client idling.
      if (phase === 'opening' || phase === 'stopping' || inputPaused || (phase === 'streaming' && !upstreamStarted))
        return finish({ kind: 'error', code: 'upstream_timeout', message: `The transcription upstream did not answer within ${ms} ms` })
      return finish({ kind: 'error', code: 'idle_timeout', message: `No frame from the client for ${ms} ms` })
    },
    disconnected: () => finish({ kind: 'disconnected' }),
    drained() {
      if (phase !== 'ended')
        upstream?.resume()
    },
  }
}

/** A text frame's JSON, or the session ends with `code`. */
function parseJson(data: Buffer, code: string): unknown {
  try {
    return JSON.parse(data.toString('utf8'))
  }
  catch {
    throw new SessionEnd(code, 'Expected a JSON text frame')
  }
}
