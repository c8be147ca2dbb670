import { ascii, indexOfBytes, u16le, u32le } from './bytes.ts'
import { MAX_PRE_SKIP_SECONDS, opusPacketSeconds } from './opus.ts'

interface OggStream { packets: number, open: boolean, opus: boolean, preSkip: number, seconds: number }

/**
 * The Opus packets of every logical stream, from the pages' lacing values; granule
 * positions are ignored. Undefined when a stream is not Opus: its length we cannot count.
 */
export function oggOpusSeconds(data: Uint8Array): number | undefined {
  const streams = new Map<number, OggStream>()
  for (let at = indexOfBytes(data, 'OggS', 0); at !== -1 && at + 27 <= data.byteLength;) {
    const segments = data[at + 26]!
    let body = at + 27 + segments
    // A page cut off by the upload's end is dropped by a demuxer too.
    if (body > data.byteLength || body + data.subarray(at + 27, body).reduce((sum, lacing) => sum + lacing, 0) > data.byteLength)
      break
    const serial = u32le(data, at + 14)
    const stream = streams.get(serial) ?? { packets: 0, open: false, opus: false, preSkip: 0, seconds: 0 }
    streams.set(serial, stream)
    for (let segment = 0; segment < segments; segment++) {
      const lacing = data[at + 27 + segment]!
      if (!stream.open) {
        if (stream.packets === 0) {
          stream.opus = ascii(data, body, 8) === 'OpusHead'
          stream.preSkip = stream.opus && body + 12 <= data.byteLength ? u16le(data, body + 10) / 48_000 : 0
        }
        else if (stream.opus && stream.packets >= 2) {
          // The first two packets are OpusHead and OpusTags; audio starts with the third.
          stream.seconds += opusPacketSeconds(data, body, Math.min(body + lacing, data.byteLength))
        }
        stream.packets++
      }
      stream.open = lacing === 255
      body += lacing
    }
    // Junk between pages: read on from the next capture pattern, as a demuxer resyncs.
    at = indexOfBytes(data, 'OggS', body)
  }
  const all = [...streams.values()]
  if (all.length === 0 || all.some(stream => !stream.opus))
    return undefined
  return Math.max(...all.map(stream => stream.seconds - Math.min(stream.preSkip, MAX_PRE_SKIP_SECONDS)))
}
