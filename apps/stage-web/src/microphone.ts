import workletUrl from './microphone-worklet.ts?worker&url'
import { createDownsampler, levelOf, toPcm16 } from './pcm.ts'

// The microphone as PCM16 for the transcription socket: getUserMedia into an
// AudioContext at the device's own rate, read by an AudioWorklet (a
// ScriptProcessor where worklets are missing), converted on the page.

/** The transcription socket takes 8–48 kHz; faster contexts are brought down to this. */
const MAX_SAMPLE_RATE = 48_000
/** The ScriptProcessor fallback's buffer: ~43 ms at 48 kHz, like the worklet's batches. */
const FALLBACK_BUFFER_SAMPLES = 2048

/** Why the microphone did not open, as the person can act on it. */
export type MicrophoneProblem = 'denied' | 'no-device' | 'busy' | 'unsupported'

export class MicrophoneError extends Error {
  override readonly name = 'MicrophoneError'
  constructor(readonly problem: MicrophoneProblem, message: string) {
    super(message)
  }
}

export interface MicrophoneOptions {
  /** PCM16 mono at `sampleRate`, every ~40 ms while open. */
  onAudio: (pcm16: Int16Array) => void
  /** The loudness of the latest audio, 0 (silence) to 1 (full scale), for a level meter. */
  onLevel?: (level: number) => void
  /** The device went away (unplugged, or the permission was taken back). */
  onEnded?: () => void
}

export interface Microphone {
  /** The rate of the audio given to `onAudio`. */
  sampleRate: number
  close: () => void
}

/** getUserMedia's DOMException names, as what the person can do about them. */
function problemOf(error: unknown): MicrophoneError {
  const name = (error as { name?: string } | undefined)?.name
  if (name === 'NotAllowedError' || name === 'SecurityError')
    return new MicrophoneError('denied', 'The browser did not allow the microphone')
  if (name === 'NotFoundError' || name === 'OverconstrainedError')
    return new MicrophoneError('no-device', 'No microphone was found')
  if (name === 'NotReadableError' || name === 'AbortError')
    return new MicrophoneError('busy', 'The microphone is in use by another application')
  return new MicrophoneError('unsupported', (error as Error | undefined)?.message ?? 'The microphone could not be opened')
}

/** The node that hands the page the microphone's samples: the worklet, or a ScriptProcessor where there is none. */
async function captureNode(context: AudioContext, consume: (samples: Float32Array) => void): Promise<AudioNode> {
  try {
    await context.audioWorklet.addModule(workletUrl)
    const node = new AudioWorkletNode(context, 'airi-microphone', { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: 'explicit' })
    node.port.onmessage = (event: MessageEvent<Float32Array>) => consume(event.data)
    return node
  }
  catch {
    // Insecure contexts and old browsers have no audioWorklet.
    const node = context.createScriptProcessor(FALLBACK_BUFFER_SAMPLES, 1, 1)
    node.onaudioprocess = event => consume(new Float32Array(event.inputBuffer.getChannelData(0)))
    return node
  }
}

/**
 * Opens the microphone (asking for permission when the browser has not been told
 * yet). Call from a click or key press: the AudioContext is made before the first
 * await, so the browser lets it run. Rejects with a MicrophoneError.
 */
export async function openMicrophone(options: MicrophoneOptions): Promise<Microphone> {
  if (!navigator.mediaDevices?.getUserMedia)
    throw new MicrophoneError('unsupported', 'This browser cannot record from a microphone here (it needs https)')
  const context = new AudioContext()
  let media: MediaStream
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true } })
  }
  catch (error) {
    void context.close()
    throw problemOf(error)
  }
  const downsample = context.sampleRate > MAX_SAMPLE_RATE ? createDownsampler(context.sampleRate, MAX_SAMPLE_RATE) : null
  let open = true
  const consume = (samples: Float32Array) => {
    if (!open)
      return
    options.onLevel?.(levelOf(samples))
    options.onAudio(toPcm16(downsample ? downsample(samples) : samples))
  }
  const source = context.createMediaStreamSource(media)
  const node = await captureNode(context, consume)
  // A silent path to the speakers: Chromium only runs nodes that lead to the destination.
  const mute = context.createGain()
  mute.gain.value = 0
  source.connect(node).connect(mute).connect(context.destination)
  for (const track of media.getAudioTracks())
    track.onended = () => open && options.onEnded?.()
  if (context.state === 'suspended')
    void context.resume()

  return {
    sampleRate: Math.min(context.sampleRate, MAX_SAMPLE_RATE),
    close() {
      if (!open)
        return
      open = false
      for (const track of media.getTracks())
        track.stop()
      source.disconnect()
      node.disconnect()
      void context.close()
    },
  }
}
