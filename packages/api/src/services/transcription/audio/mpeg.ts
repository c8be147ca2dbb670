import { afterId3v2, ascii } from './bytes.ts'

/** Kilobits per second by bitrate index 1–14: MPEG-1 layers I, II, III, then MPEG-2/2.5 layer I, then layers II and III. */
const MPEG_KBPS = [
  [32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
  [32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
  [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
  [32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
  [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
] as const

/** One MPEG audio frame: its length in bytes, seconds, and the version, layer and rate that a decoder holds steady across a stream. */
interface MpegFrame { length: number, seconds: number, stream: number }

/** The frame whose header is at `at`, or undefined when the bytes there are no valid header (free-format frames, which ffmpeg cannot play either, included). */
function readMpegFrame(data: Uint8Array, at: number): MpegFrame | undefined {
  if (at + 4 > data.byteLength || data[at] !== 0xFF || (data[at + 1]! & 0xE0) !== 0xE0)
    return undefined
  const version = (data[at + 1]! >> 3) & 3
  const layer = (data[at + 1]! >> 1) & 3
  const bitrateIndex = data[at + 2]! >> 4
  const rateIndex = (data[at + 2]! >> 2) & 3
  const padding = (data[at + 2]! >> 1) & 1
  if (version === 1 || layer === 0 || bitrateIndex === 0 || bitrateIndex === 15 || rateIndex === 3 || (data[at + 3]! & 3) === 2)
    return undefined
  const mpeg1 = version === 3
  const sampleRate = [44_100, 48_000, 32_000][rateIndex]! / (mpeg1 ? 1 : version === 2 ? 2 : 4)
  const table = mpeg1 ? 3 - layer : layer === 3 ? 3 : 4
  const bitrate = MPEG_KBPS[table]![bitrateIndex - 1]! * 1000
  const samples = layer === 3 ? 384 : layer === 2 || mpeg1 ? 1152 : 576
  const length = layer === 3
    ? (Math.floor(12 * bitrate / sampleRate) + padding) * 4
    : Math.floor(samples / 8 * bitrate / sampleRate) + padding
  return { length, seconds: samples / sampleRate, stream: (data[at + 1]! & 0x1E) << 2 | rateIndex }
}

/** Whether a layer III frame carries a Xing, Info or VBRI tag instead of audio. */
function isVbrTagFrame(data: Uint8Array, at: number): boolean {
  const mpeg1 = (data[at + 1]! & 0x08) !== 0
  const mono = data[at + 3]! >> 6 === 3
  const sideInfo = mpeg1 ? (mono ? 17 : 32) : (mono ? 9 : 17)
  const tag = ascii(data, at + 4 + ((data[at + 1]! & 1) === 0 ? 2 : 0) + sideInfo, 4)
  return tag === 'Xing' || tag === 'Info' || ascii(data, at + 36, 4) === 'VBRI'
}

/**
 * The MPEG audio frames a decoder would play. A header found while searching counts
 * when the next frame follows it directly or it matches the stream already found, so
 * bytes of a tag or of junk between frames rarely pass for audio and junk cannot hide it.
 */
export function mpegSeconds(data: Uint8Array): number {
  let stream: number | undefined
  let seconds = 0
  for (let at = afterId3v2(data); at !== -1 && at < data.byteLength;) {
    const frame = readMpegFrame(data, at)
    const next = frame ? at + frame.length : Number.POSITIVE_INFINITY
    if (frame && next <= data.byteLength && (frame.stream === stream || next === data.byteLength || readMpegFrame(data, next)?.stream === frame.stream)) {
      // Only the first frame of a layer III stream may be a VBR tag rather than audio.
      if (stream !== undefined || (data[at + 1]! & 0x06) !== 0x02 || !isVbrTagFrame(data, at))
        seconds += frame.seconds
      stream ??= frame.stream
      at = next
      continue
    }
    at = data.indexOf(0xFF, at + 1)
  }
  return seconds
}
