import { describe, expect, it } from 'vitest'

import { createPcm16Resampler, pcm16DurationMs } from './resample.ts'

const UPSTREAM_RATE = 24_000

function pcm(samples: ArrayLike<number>): Buffer {
  const bytes = Buffer.alloc(samples.length * 2)
  for (let index = 0; index < samples.length; index++) bytes.writeInt16LE(samples[index]!, index * 2)
  return bytes
}

function samplesOf(bytes: Buffer): Int16Array {
  return new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
}

function sine(frequency: number, rate: number, seconds: number, amplitude = 10_000): Buffer {
  return pcm(Array.from({ length: Math.round(rate * seconds) }, (_, index) => Math.round(amplitude * Math.sin((2 * Math.PI * frequency * index) / rate))))
}

/** A deterministic pseudo-random generator (mulberry32), so a failing split can be replayed. */
function random(seed: number): () => number {
  let state = seed
  return () => {
    state = (state + 0x6D2B79F5) | 0
    let value = Math.imul(state ^ (state >>> 15), 1 | state)
    value = (value + Math.imul(value ^ (value >>> 7), 61 | value)) ^ value
    return ((value ^ (value >>> 14)) >>> 0) / 2 ** 32
  }
}

function noise(rate: number, seconds: number, seed: number): Buffer {
  const next = random(seed)
  return pcm(Array.from({ length: Math.round(rate * seconds) }, () => Math.round((next() * 2 - 1) * 20_000)))
}

function resampleAtOnce(input: Buffer, fromRate: number, toRate = UPSTREAM_RATE): Buffer {
  const resampler = createPcm16Resampler(fromRate, toRate)
  return Buffer.concat([resampler.push(input), resampler.flush()])
}

/** Pushes `input` in chunks of random sizes (odd ones included, some empty). */
function resampleInChunks(input: Buffer, fromRate: number, seed: number): Buffer {
  const resampler = createPcm16Resampler(fromRate, UPSTREAM_RATE)
  const next = random(seed)
  const parts: Buffer[] = []
  for (let at = 0; at < input.length;) {
    const size = Math.floor(next() * 701)
    parts.push(resampler.push(input.subarray(at, at + size)))
    at += size
  }
  parts.push(resampler.flush())
  return Buffer.concat(parts)
}

/** Zero crossings per second, from sign changes, leaving out the filter's edges. */
function crossingsPerSecond(samples: Int16Array, rate: number): number {
  const edge = Math.round(rate * 0.01)
  let crossings = 0
  for (let index = edge + 1; index < samples.length - edge; index++) {
    if ((samples[index - 1]! < 0) !== (samples[index]! < 0))
      crossings++
  }
  return crossings / ((samples.length - 2 * edge - 1) / rate)
}

/** Root mean square of the samples, leaving out the filter's edges. */
function rms(samples: Int16Array, rate: number): number {
  const edge = Math.round(rate * 0.01)
  let sum = 0
  for (let index = edge; index < samples.length - edge; index++) sum += samples[index]! ** 2
  return Math.sqrt(sum / (samples.length - 2 * edge))
}

describe('pcm16 resampler', () => {
  it('passes the bytes through unchanged when both rates are equal, odd chunks included', () => {
    const input = noise(UPSTREAM_RATE, 0.1, 1)
    const resampler = createPcm16Resampler(UPSTREAM_RATE, UPSTREAM_RATE)
    const output = Buffer.concat([resampler.push(input.subarray(0, 333)), resampler.push(input.subarray(333)), resampler.flush()])
    expect(output.equals(input)).toBe(true)
  })

  it.each([8_000, 16_000, 22_050, 44_100, 48_000])('gives the same output for any chunking at %i Hz', (rate) => {
    const input = noise(rate, 0.5, rate)
    const atOnce = resampleAtOnce(input, rate)
    for (const seed of [1, 2, 3])
      expect(resampleInChunks(input, rate, seed).equals(atOnce), `chunk split of seed ${seed}`).toBe(true)
  })

  it('gives the same output when every chunk is a single byte', () => {
    const input = noise(22_050, 0.05, 7)
    const resampler = createPcm16Resampler(22_050, UPSTREAM_RATE)
    const parts = Array.from(input, byte => resampler.push(Uint8Array.of(byte)))
    expect(Buffer.concat([...parts, resampler.flush()]).equals(resampleAtOnce(input, 22_050))).toBe(true)
  })

  it.each([8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 47_999])('outputs round(input × 24000 / %i) samples over a stream', (rate) => {
    for (const count of [0, 1, 2, 3, 1_000, 12_345]) {
      const output = resampleAtOnce(noise(rate, count / rate, count), rate)
      expect(Math.abs(output.length / 2 - Math.round((count * UPSTREAM_RATE) / rate)), `${count} samples`).toBeLessThanOrEqual(1)
    }
  })

  it('drops a trailing odd byte at the end of the stream', () => {
    const resampler = createPcm16Resampler(16_000, UPSTREAM_RATE)
    const output = Buffer.concat([resampler.push(Buffer.concat([pcm([100, 200]), Uint8Array.of(7)])), resampler.flush()])
    expect(output.length).toBe(2 * 3)
  })

  it.each([16_000, 48_000])('keeps a 440 Hz tone at 440 Hz from %i Hz', (rate) => {
    const output = samplesOf(resampleAtOnce(sine(440, rate, 1), rate))
    expect(crossingsPerSecond(output, UPSTREAM_RATE) / 2).toBeCloseTo(440, -1)
    expect(rms(output, UPSTREAM_RATE)).toBeCloseTo(10_000 / Math.SQRT2, -2)
  })

  it('removes a tone above 12 kHz going from 48 kHz to 24 kHz instead of folding it into the band', () => {
    // Plain decimation would turn 18 kHz into a full-strength 6 kHz tone.
    const output = samplesOf(resampleAtOnce(sine(18_000, 48_000, 0.5), 48_000))
    expect(rms(output, UPSTREAM_RATE)).toBeLessThan(10_000 / Math.SQRT2 / 1_000)
  })

  it('keeps speech frequencies at full strength going from 48 kHz to 24 kHz', () => {
    for (const frequency of [300, 3_000, 8_000]) {
      const output = samplesOf(resampleAtOnce(sine(frequency, 48_000, 0.5), 48_000))
      expect(rms(output, UPSTREAM_RATE) / (10_000 / Math.SQRT2), `${frequency} Hz`).toBeGreaterThan(0.98)
    }
  })

  it.each([8_000, 16_000, 48_000])('clamps a full-scale square wave from %i Hz to int16 instead of wrapping', (rate) => {
    const halfPeriod = 24
    const square = Array.from({ length: rate / 10 }, (_, index) => (Math.floor(index / halfPeriod) % 2 === 0 ? 32_767 : -32_768))
    const output = samplesOf(resampleAtOnce(pcm(square), rate))
    // The sinc's ringing overshoots full scale, so the clamp must pin samples at both limits.
    expect(output).toContain(32_767)
    expect(output).toContain(-32_768)
    // Away from the edges, a wrapped overshoot would show as a sample of the wrong sign.
    for (let index = 0; index < output.length; index++) {
      const position = (index * rate) / UPSTREAM_RATE
      const phase = position % halfPeriod
      if (phase > 4 && phase < halfPeriod - 4 && position < square.length - halfPeriod)
        expect(Math.sign(output[index]!), `sample ${index}`).toBe(Math.sign(square[Math.floor(position)]!))
    }
  })

  it('refuses rates that are not positive integers', () => {
    expect(() => createPcm16Resampler(0, UPSTREAM_RATE)).toThrow(RangeError)
    expect(() => createPcm16Resampler(16_000.5, UPSTREAM_RATE)).toThrow(RangeError)
  })
})

describe('pcm16DurationMs', () => {
  it('measures whole samples and rounds up to a millisecond', () => {
    expect(pcm16DurationMs(32_000, 16_000)).toBe(1_000)
    expect(pcm16DurationMs(48_000, 24_000)).toBe(1_000)
    expect(pcm16DurationMs(3, 8_000)).toBe(1)
    expect(pcm16DurationMs(1, 8_000)).toBe(0)
    expect(pcm16DurationMs(0, 16_000)).toBe(0)
    expect(pcm16DurationMs(2 * 441, 44_100)).toBe(10)
  })
})
