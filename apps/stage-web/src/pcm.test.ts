import { describe, expect, it } from 'vitest'

import { createDownsampler, levelOf, toPcm16 } from './pcm.ts'

/** `seconds` of a `frequency` Hz sine at `rate`, amplitude `amplitude`. */
function sine(frequency: number, rate: number, seconds: number, amplitude = 0.8): Float32Array {
  return Float32Array.from({ length: Math.round(rate * seconds) }, (_, i) => amplitude * Math.sin((2 * Math.PI * frequency * i) / rate))
}

/** Feeds `input` in chunks of `size` samples, as the worklet's batches come. */
function inChunks(downsample: (input: Float32Array) => Float32Array, input: Float32Array, size: number): Float32Array {
  const parts: number[] = []
  for (let start = 0; start < input.length; start += size)
    parts.push(...downsample(input.subarray(start, start + size)))
  return Float32Array.from(parts)
}

const rms = (samples: Float32Array) => Math.sqrt(samples.reduce((sum, sample) => sum + sample * sample, 0) / samples.length)
const zeroCrossings = (samples: Float32Array) => samples.reduce((count, sample, i) => count + (i > 0 && Math.sign(sample) !== Math.sign(samples[i - 1]!) ? 1 : 0), 0)

describe('createDownsampler', () => {
  it('halves 96 kHz: each output sample is the mean of two input samples', () => {
    const input = sine(1000, 96_000, 0.1)
    const output = inChunks(createDownsampler(96_000, 48_000), input, 128)
    // The last window waits for the next chunk.
    expect(output.length).toBe(4799)
    for (let k = 0; k < output.length; k++)
      expect(output[k]).toBeCloseTo((input[2 * k]! + input[2 * k + 1]!) / 2, 6)
  })

  it('brings 88.2 kHz to 48 kHz keeping the pitch and the loudness of speech-band sound', () => {
    const input = sine(1000, 88_200, 0.5)
    const output = inChunks(createDownsampler(88_200, 48_000), input, 2048)
    expect(Math.abs(output.length - 24_000)).toBeLessThanOrEqual(1)
    // 1 kHz is still 1 kHz at the new rate: 2 000 zero crossings a second.
    expect(Math.abs(zeroCrossings(output) - 1000)).toBeLessThanOrEqual(2)
    expect(rms(output)).toBeCloseTo(rms(input), 2)
  })

  it('gives the same samples whatever the chunk sizes', () => {
    const input = sine(440, 192_000, 0.05)
    const whole = createDownsampler(192_000, 48_000)(input)
    expect(inChunks(createDownsampler(192_000, 48_000), input, 127)).toEqual(whole)
    expect(inChunks(createDownsampler(192_000, 48_000), input, 1)).toEqual(whole)
  })
})

describe('toPcm16', () => {
  it('scales to 16-bit and clamps what is out of range', () => {
    expect([...toPcm16(Float32Array.of(0, 1, -1, 0.5, -0.5, 1.7, -3))]).toEqual([0, 32767, -32768, 16383, -16384, 32767, -32768])
  })
})

describe('levelOf', () => {
  it('maps -60…0 dBFS of RMS onto 0…1', () => {
    expect(levelOf(new Float32Array(128))).toBe(0)
    expect(levelOf(new Float32Array(128).fill(1))).toBe(1)
    expect(levelOf(new Float32Array(128).fill(10 ** (-30 / 20)))).toBeCloseTo(0.5, 6)
    expect(levelOf(new Float32Array(0))).toBe(0)
  })
})
