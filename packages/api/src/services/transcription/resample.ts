/** A streaming PCM16LE mono resampler: feed it chunks of any size, then flush once at the end. */
export interface Pcm16Resampler {
  /** The resampled audio that `chunk` completes; it may hold back a few samples the filter still needs. */
  push: (chunk: Uint8Array) => Buffer
  /** The rest of the stream, as if it were followed by silence; an odd byte left over is dropped. */
  flush: () => Buffer
}

/** Zero crossings of the sinc on each side of the centre: more is a sharper cutoff at more work per sample. */
const ZERO_CROSSINGS = 16
/** The cutoff as a share of the lower rate's Nyquist frequency, leaving the window room to roll off before it. */
const CUTOFF = 0.9
/** At most this many precomputed filter phases; a ratio that needs more uses the nearest one. */
const MAX_PHASES = 256

const INT16_MIN = -32768
const INT16_MAX = 32767

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b)
}

/**
 * Band-limited resampling with a Blackman-windowed sinc, chosen over linear
 * interpolation because 48 kHz input folds everything above 12 kHz back into the band
 * at 24 kHz, and a sinc both removes that and avoids the images linear upsampling leaves.
 */
export function createPcm16Resampler(fromRate: number, toRate: number): Pcm16Resampler {
  for (const rate of [fromRate, toRate]) {
    if (!Number.isSafeInteger(rate) || rate <= 0)
      throw new RangeError(`Sample rates must be positive integers, got ${rate}`)
  }
  if (fromRate === toRate)
    return { push: chunk => Buffer.from(chunk), flush: () => Buffer.alloc(0) }

  const filter = createFilter(fromRate, toRate)
  let leftover: number | undefined
  // The input kept for the filter: `history[0]` is input sample number `base`.
  let history = new Int16Array(0)
  let base = 0
  let received = 0
  let emitted = 0

  function render(count: number): Buffer {
    const out = Buffer.alloc(count * 2)
    for (let n = 0; n < count; n++, emitted++) {
      // Output sample k sits at input position k·from/to, kept exact in integers across chunks.
      const position = emitted * fromRate
      const whole = Math.floor(position / toRate)
      const taps = filter.phase(position - whole * toRate)
      const first = whole - filter.halfWidth + 1 - base
      let sum = 0
      if (first >= 0 && first + taps.length <= history.length) {
        for (let tap = 0; tap < taps.length; tap++) sum += taps[tap]! * history[first + tap]!
      }
      else {
        // Only the stream's first and last outputs reach past the input, into silence.
        for (let tap = 0; tap < taps.length; tap++) sum += taps[tap]! * (history[first + tap] ?? 0)
      }
      out.writeInt16LE(Math.min(INT16_MAX, Math.max(INT16_MIN, Math.round(sum))), n * 2)
    }
    const firstNeeded = Math.floor((emitted * fromRate) / toRate) - filter.halfWidth + 1
    if (firstNeeded > base) {
      history = history.slice(Math.min(firstNeeded - base, history.length))
      base = Math.min(firstNeeded, received)
    }
    return out
  }

  return {
    push(chunk) {
      const bytes = leftover === undefined ? chunk : Buffer.concat([Uint8Array.of(leftover), chunk])
      const count = bytes.length >> 1
      leftover = bytes.length % 2 === 1 ? bytes[bytes.length - 1] : undefined
      const grown = new Int16Array(history.length + count)
      grown.set(history)
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      for (let n = 0; n < count; n++) grown[history.length + n] = view.getInt16(n * 2, true)
      history = grown
      received += count
      // Output k needs input up to floor(k·from/to) + halfWidth, so it waits until that sample has arrived.
      const ready = Math.max(0, Math.ceil(((received - filter.halfWidth) * toRate) / fromRate))
      return render(Math.max(0, ready - emitted))
    },
    flush() {
      leftover = undefined
      return render(Math.max(0, Math.round((received * toRate) / fromRate) - emitted))
    },
  }
}

interface Filter {
  /** Taps on each side of the centre, in input samples. */
  halfWidth: number
  /** The taps for an output whose position is `remainder / toRate` past an input sample. */
  phase: (remainder: number) => Float64Array
}

function createFilter(fromRate: number, toRate: number): Filter {
  // Cutoff in cycles per input sample, times two: 1 would be the input's Nyquist frequency.
  const band = (CUTOFF * Math.min(fromRate, toRate)) / fromRate
  const halfWidth = Math.ceil(ZERO_CROSSINGS / band)
  // Positions within an input sample repeat every toRate/gcd outputs, so that many phases are exact.
  const exactPhases = toRate / gcd(fromRate, toRate)
  const phases = Math.min(exactPhases, MAX_PHASES)
  const tables = Array.from({ length: phases + 1 }, (_, index) => taps(index / phases, halfWidth, band))
  return {
    halfWidth,
    phase: remainder => tables[Math.round((remainder / toRate) * phases)]!,
  }
}

/** Windowed-sinc taps for an output `fraction` of an input sample past the centre tap, summing to 1 so DC passes unchanged. */
function taps(fraction: number, halfWidth: number, band: number): Float64Array {
  const weights = new Float64Array(2 * halfWidth)
  let total = 0
  for (let tap = 0; tap < weights.length; tap++) {
    const x = tap - halfWidth + 1 - fraction
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * band * x) / (Math.PI * band * x)
    const window = 0.42 + 0.5 * Math.cos((Math.PI * x) / halfWidth) + 0.08 * Math.cos((2 * Math.PI * x) / halfWidth)
    weights[tap] = sinc * Math.max(0, window)
    total += weights[tap]!
  }
  return weights.map(weight => weight / total)
}

/** Whole milliseconds (rounded up) of PCM16 mono audio; give it a session's total bytes so rounding happens once. */
export function pcm16DurationMs(bytes: number, rate: number): number {
  const samples = Math.floor(bytes / 2)
  return Math.ceil((samples * 1000) / rate)
}
