import { createSpeechStream, type SpeechStream } from '@airi/sdk'

import { client } from './client.ts'
import { loadFeatures } from './composables/useCatalogue.ts'
import { baseUrl } from './session.ts'

// Replies are spoken through the server's streaming speech socket (the SDK's
// createSpeechStream): the reply's tokens go in as the LLM streams them and audio
// comes back sentence by sentence, played through Web Audio as it arrives.

/** OpenAI's `pcm`: 24 kHz, 16-bit signed little-endian, mono. Raw samples play without decoding a container. */
const SAMPLE_RATE = 24_000

/** A voice the streaming bridge offers. */
export interface Voice { id: string, name: string }

/** The streaming model and its voices; null when the server has no streaming speech. */
export interface VoiceCatalogue { model: string, voices: Voice[] }

let catalogue: Promise<VoiceCatalogue | null> | undefined

/**
 * The streaming model and its voices, read once per page. No streaming speech set up
 * (`meta.features`): null, and no voice controls. The bridge may list no voices: the
 * upstream's default then.
 */
export function loadVoiceCatalogue(): Promise<VoiceCatalogue | null> {
  catalogue ??= (async () => {
    if (!(await loadFeatures()).streamingSpeech)
      return null
    const models = await client.rest.speechModels({ streaming: true })
    const model = models.default ?? models.models[0]?.id
    if (!model)
      return null
    const voices = await client.rest.voices({ model, streaming: true })
    return { model, voices: voices.map(voice => ({ id: voice.id, name: voice.name || voice.id })) }
  })().catch(() => {
    catalogue = undefined
    return null
  })
  return catalogue
}

/** What the page's audio pipeline has been handed, for the status line (and the browser tests). */
export interface VoiceStats { bytes: number, chunks: number }

export interface ReplyVoice {
  appendText: (text: string) => void
  finish: () => void
  /** Stops the session and the sound at once. */
  cancel: () => void
  /** Settles when the session is over and the last scheduled sound has played (or was stopped). */
  done: Promise<void>
}

let context: AudioContext | undefined

/** The page's one AudioContext; call from a click so the browser lets it play. */
export function unlockAudio(): AudioContext {
  context ??= new AudioContext({ sampleRate: SAMPLE_RATE })
  if (context.state === 'suspended')
    void context.resume()
  return context
}

/** Speaks one reply: text in as it streams, PCM out to the speakers gaplessly. */
export function startReplyVoice(choice: { model: string, voice: string }, callbacks: { onStats: (stats: VoiceStats) => void, onError: (message: string) => void }): ReplyVoice {
  const audio = unlockAudio()
  const stats: VoiceStats = { bytes: 0, chunks: 0 }
  const sources = new Set<AudioBufferSourceNode>()
  let playAt = 0
  // A chunk may end in the middle of a 16-bit sample; its first byte waits for the next chunk.
  let carry: number | null = null
  let stopped = false
  let resolveDone!: () => void
  const done = new Promise<void>(resolve => (resolveDone = resolve))
  let sessionOver = false

  const settleWhenQuiet = () => {
    if (sessionOver && sources.size === 0)
      resolveDone()
  }

  function play(chunk: Uint8Array): void {
    stats.bytes += chunk.byteLength
    stats.chunks++
    callbacks.onStats({ ...stats })
    const bytes = carry === null ? chunk : Uint8Array.of(carry, ...chunk)
    carry = bytes.byteLength % 2 === 1 ? bytes[bytes.byteLength - 1]! : null
    const samples = Math.floor(bytes.byteLength / 2)
    if (samples === 0 || stopped)
      return
    const view = new DataView(bytes.buffer, bytes.byteOffset, samples * 2)
    const buffer = audio.createBuffer(1, samples, SAMPLE_RATE)
    const channel = buffer.getChannelData(0)
    for (let i = 0; i < samples; i++)
      channel[i] = view.getInt16(i * 2, true) / 32768
    const source = audio.createBufferSource()
    source.buffer = buffer
    source.connect(audio.destination)
    playAt = Math.max(playAt, audio.currentTime)
    source.start(playAt)
    playAt += buffer.duration
    sources.add(source)
    source.onended = () => {
      sources.delete(source)
      settleWhenQuiet()
    }
  }

  const stream: SpeechStream = createSpeechStream({
    baseUrl,
    client,
    model: choice.model,
    voice: choice.voice,
    format: 'pcm',
    onAudio: play,
    onError: error => callbacks.onError(error.message),
  })
  void stream.closed.then(() => {
    sessionOver = true
    settleWhenQuiet()
  })

  return {
    appendText: text => stream.appendText(text),
    finish: () => stream.finish(),
    cancel() {
      stopped = true
      stream.cancel()
      for (const source of sources)
        source.stop()
      sources.clear()
      sessionOver = true
      settleWhenQuiet()
    },
    done,
  }
}
