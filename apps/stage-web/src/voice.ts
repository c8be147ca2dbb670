import { createSpeechStream, type SpeechStream } from '@airi/sdk'
import { ref, watch } from 'vue'

import { client } from './client.ts'
import { baseUrl, getAccessToken } from './session.ts'

// Replies are spoken through the server's streaming speech socket (the SDK's
// createSpeechStream): the reply's tokens go in as the LLM streams them and audio
// comes back sentence by sentence, played through Web Audio as it arrives.

/** OpenAI's `pcm`: 24 kHz, 16-bit signed little-endian, mono. Raw samples play without decoding a container. */
const SAMPLE_RATE = 24_000

export interface VoiceChoice { model: string, voice: string }

interface Catalogue { models: Array<{ id: string }>, default?: string, defaultModel?: string }

/**
 * The streaming model and a voice for it, or null when the server has no streaming
 * speech (503) or the bridge lists nothing. The catalogue is REST (docs/speech.md).
 */
async function loadVoiceChoice(preferredVoice?: string | null): Promise<{ choice: VoiceChoice | null, voices: string[] }> {
  const get = async (path: string) => {
    const token = await getAccessToken()
    const response = await fetch(`${baseUrl}/api/v1/audio${path}`, { headers: { authorization: `Bearer ${token}` } })
    return response.ok ? await response.json() as unknown : null
  }
  const catalogue = await get('/models/streaming') as Catalogue | null
  const model = catalogue?.default ?? catalogue?.defaultModel ?? catalogue?.models[0]?.id
  if (!model)
    return { choice: null, voices: [] }
  const listed = await get(`/voices/streaming?model=${encodeURIComponent(model)}`) as { voices?: Array<{ id: string }> } | null
  const voices = (listed?.voices ?? []).map(voice => voice.id)
  // The bridge may list no voices (it is down, or does not publish them): the upstream's default then.
  return { choice: { model, voice: preferredVoice ?? voices[0] ?? 'default' }, voices }
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
function unlockAudio(): AudioContext {
  context ??= new AudioContext({ sampleRate: SAMPLE_RATE })
  if (context.state === 'suspended')
    void context.resume()
  return context
}

/** Speaks one reply: text in as it streams, PCM out to the speakers gaplessly. */
function startReplyVoice(choice: VoiceChoice, callbacks: { onStats: (stats: VoiceStats) => void, onError: (message: string) => void }): ReplyVoice {
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
    onError: error => callbacks.onError(`Voice stopped: ${error.message}`),
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

/**
 * The chat's voice: the choice (null while loading, false when the server has no
 * streaming speech), the "Speak replies" switch (remembered), and the voice of the
 * reply this device is speaking.
 */
export function useReplyVoice(onError: (message: string) => void) {
  const choice = ref<VoiceChoice | false | null>(null)
  const voices = ref<string[]>([])
  const speak = ref(localStorage.getItem('airi.speak') !== 'off')
  const speaking = ref(false)
  const stats = ref<VoiceStats>({ bytes: 0, chunks: 0 })
  let current: ReplyVoice | null = null
  watch(speak, value => localStorage.setItem('airi.speak', value ? 'on' : 'off'))

  return {
    choice,
    voices,
    speak,
    speaking,
    stats,
    async load(preferred?: string | null) {
      try {
        const loaded = await loadVoiceChoice(preferred)
        choice.value = loaded.choice ?? false
        voices.value = loaded.voices
      }
      catch {
        choice.value = false
      }
    },
    /** Call inside the click that asks for a reply: browsers only let audio start from a gesture. */
    unlock() {
      if (speak.value && choice.value)
        unlockAudio()
    },
    /** A voice for a reply this device asked for, or null when replies are not spoken. */
    begin(): ReplyVoice | null {
      if (!speak.value || !choice.value)
        return null
      stats.value = { bytes: 0, chunks: 0 }
      const started = startReplyVoice(choice.value, { onStats: next => (stats.value = next), onError })
      current = started
      speaking.value = true
      void started.done.then(() => {
        if (current === started)
          speaking.value = false
      })
      return started
    },
    /** Stops the sound at once. */
    cancel() {
      current?.cancel()
      current = null
      speaking.value = false
    },
  }
}
