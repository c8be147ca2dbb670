// The microphone's float samples as the transcription socket takes them (PCM16 at
// most 48 kHz), and their loudness for the level meter. Pure, so tested in Node.

/** The level meter's floor: quieter than -60 dBFS shows as nothing. */
const LEVEL_FLOOR_DB = -60

/**
 * A streaming decimator from `from` Hz down to `to` Hz: each output sample is the
 * mean of the input samples in its window, a box filter that keeps the aliasing of
 * speech well below what the transcriber hears.
 */
export function createDownsampler(from: number, to: number): (input: Float32Array) => Float32Array {
  const step = from / to
  let index = 0
  let boundary = step
  let sum = 0
  let count = 0
  return (input) => {
    const output = new Float32Array(Math.ceil(input.length / step) + 1)
    let written = 0
    for (const sample of input) {
      if (index >= boundary) {
        output[written++] = sum / count
        sum = 0
        count = 0
        boundary += step
      }
      sum += sample
      count++
      index++
    }
    return output.subarray(0, written)
  }
}

/** Float samples (-1…1) as 16-bit signed integers. */
export function toPcm16(samples: Float32Array): Int16Array {
  const pcm = new Int16Array(samples.length)
  for (let i = 0; i < samples.length; i++) {
    const sample = Math.max(-1, Math.min(1, samples[i]!))
    pcm[i] = sample < 0 ? sample * 0x8000 : sample * 0x7FFF
  }
  return pcm
}

/** The chunk's RMS on a -60…0 dBFS scale, as 0…1. */
export function levelOf(samples: Float32Array): number {
  let energy = 0
  for (const sample of samples)
    energy += sample * sample
  const rms = Math.sqrt(energy / Math.max(1, samples.length))
  const db = 20 * Math.log10(rms || 1e-9)
  return Math.max(0, Math.min(1, (db - LEVEL_FLOOR_DB) / -LEVEL_FLOOR_DB))
}
