import { ascii, u16le, u32le } from './bytes.ts'

interface RiffChunk { id: string, start: number, end: number }

/** The chunk header at `at` if its id is four printable characters, else undefined; its end may lie past the file. */
function readRiffChunk(data: Uint8Array, at: number): RiffChunk | undefined {
  const id = ascii(data, at, 4)
  if (at + 8 > data.byteLength || !/^[\x20-\x7E]{4}$/.test(id))
    return undefined
  return { id, start: at + 8, end: at + 8 + u32le(data, at + 4) }
}

/** Where the chunk after `chunk` starts: RIFF pads an odd-sized body to an even length. */
const nextChunkAt = (chunk: RiffChunk) => chunk.end + ((chunk.end - chunk.start) & 1)

/** PCM, IEEE float, A-law and µ-law: codecs where one frame is one sample of each channel. */
const WAV_CODECS = new Set([1, 3, 6, 7])

/** Bytes per frame and rate of a `fmt ` chunk, or undefined for a codec we cannot count or a layout no recorder writes. */
function readWavFormat(data: Uint8Array, chunk: RiffChunk): { frameBytes: number, sampleRate: number } | undefined {
  if (chunk.end - chunk.start < 16 || chunk.end > data.byteLength)
    return undefined
  const at = chunk.start
  const extensible = u16le(data, at) === 0xFFFE && chunk.end - chunk.start >= 40
  const codec = extensible ? u16le(data, at + 24) : u16le(data, at)
  const channels = u16le(data, at + 2)
  const sampleRate = u32le(data, at + 4)
  const blockAlign = u16le(data, at + 12)
  const bits = u16le(data, at + 14)
  const plausible = WAV_CODECS.has(codec) && channels >= 1 && channels <= 32 && sampleRate >= 1000 && sampleRate <= 384_000
    && bits % 8 === 0 && bits >= 8 && bits <= 64 && blockAlign === channels * bits / 8
  return plausible ? { frameBytes: blockAlign, sampleRate } : undefined
}

/**
 * The sample bytes from the first `data` chunk on: declared sizes hold for chunks a
 * RIFF reader would skip, but bytes that are no chunk at all (samples behind a short
 * size) or a size of 0 or 0xFFFFFFFF (a stream never finalized) count to the end.
 */
function wavSampleBytes(data: Uint8Array, first: RiffChunk): number {
  let bytes = 0
  for (let chunk: RiffChunk | undefined = first; chunk;) {
    const declared = chunk.end - chunk.start
    const end = declared === 0 || declared === 0xFFFF_FFFF ? data.byteLength : Math.min(chunk.end, data.byteLength)
    bytes += end - chunk.start
    let at = end + (declared & 1)
    chunk = undefined
    while (at < data.byteLength) {
      const next = readRiffChunk(data, at)
      if (!next || next.end > data.byteLength)
        return bytes + data.byteLength - at
      if (next.id === 'data') {
        chunk = next
        break
      }
      at = nextChunkAt(next)
    }
  }
  return bytes
}

/** The seconds of a WAV's PCM samples, or undefined when it has no countable format before its data. */
export function wavSeconds(data: Uint8Array): number | undefined {
  if (ascii(data, 0, 4) !== 'RIFF' || ascii(data, 8, 4) !== 'WAVE')
    return undefined
  let format: ReturnType<typeof readWavFormat>
  for (let chunk = readRiffChunk(data, 12); chunk; chunk = readRiffChunk(data, nextChunkAt(chunk))) {
    if (chunk.id === 'fmt ')
      format = readWavFormat(data, chunk)
    else if (chunk.id === 'data')
      return format && Math.floor(wavSampleBytes(data, chunk) / format.frameBytes) / format.sampleRate
  }
  return undefined
}
