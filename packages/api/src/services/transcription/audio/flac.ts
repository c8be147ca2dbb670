import { afterId3v2, ascii, u16be, u24be } from './bytes.ts'

/** The CRC-8 (polynomial 0x07) of a FLAC frame header or the CRC-16 (0x8005) of a whole frame, MSB first from zero. */
function crc(data: Uint8Array, from: number, to: number, bits: 8 | 16): number {
  const polynomial = bits === 8 ? 0x07 : 0x8005
  const top = 1 << (bits - 1)
  const mask = (1 << bits) - 1
  let value = 0
  for (let at = from; at < to; at++) {
    value ^= data[at]! << (bits - 8)
    for (let bit = 0; bit < 8; bit++) value = ((value & top) !== 0 ? (value << 1) ^ polynomial : value << 1) & mask
  }
  return value
}

interface FlacStreamInfo { maxBlockSize: number, sampleRate: number, bitsPerSample: number }

const FLAC_RATES = [0, 88_200, 176_400, 192_000, 8000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 96_000] as const
const FLAC_BITS = [0, 8, 12, 0, 16, 20, 24, 32] as const

/** The STREAMINFO fields a decoder checks frames against, and where the frames start. */
function readFlacStreamInfo(data: Uint8Array): { info: FlacStreamInfo, audioStart: number } | undefined {
  let at = afterId3v2(data)
  if (ascii(data, at, 4) !== 'fLaC')
    return undefined
  let info: FlacStreamInfo | undefined
  for (at += 4; ; at += 4 + u24be(data, at + 1)) {
    if (at + 4 > data.byteLength)
      return undefined
    if ((data[at]! & 0x7F) === 0 && at + 4 + 18 <= data.byteLength) {
      const packed = data[at + 16]!
      info = { maxBlockSize: u16be(data, at + 6), sampleRate: u24be(data, at + 14) >> 4, bitsPerSample: (((packed & 1) << 4) | (data[at + 17]! >> 4)) + 1 }
    }
    if ((data[at]! & 0x80) !== 0)
      return info && { info, audioStart: at + 4 + u24be(data, at + 1) }
  }
}

/** The seconds of the FLAC frame whose header is at `at`, if the header is valid, its CRC-8 matches and a decoder would accept it under STREAMINFO. */
function readFlacFrame(data: Uint8Array, at: number, info: FlacStreamInfo): number | undefined {
  if ((data[at + 1] !== 0xF8 && data[at + 1] !== 0xF9) || at + 6 > data.byteLength)
    return undefined
  const blockCode = data[at + 2]! >> 4
  const rateCode = data[at + 2]! & 0x0F
  const bitsCode = (data[at + 3]! >> 1) & 7
  if (blockCode === 0 || rateCode === 15 || data[at + 3]! >> 4 > 10 || bitsCode === 3 || (data[at + 3]! & 1) !== 0)
    return undefined
  // The frame or sample number, UTF-8 coded: its first byte's leading ones give the length.
  const numberLength = data[at + 4]! < 0x80 ? 1 : Math.clz32(~(data[at + 4]! << 24))
  let end = at + 4 + numberLength
  if ((numberLength < 2 && data[at + 4]! >= 0x80) || numberLength > 7 || end > data.byteLength)
    return undefined
  for (let index = at + 5; index < end; index++) {
    if ((data[index]! & 0xC0) !== 0x80)
      return undefined
  }
  let blockSize = blockCode === 1 ? 192 : blockCode <= 5 ? 576 << (blockCode - 2) : blockCode >= 8 ? 256 << (blockCode - 8) : 0
  if (blockCode === 6)
    blockSize = data[end++]! + 1
  else if (blockCode === 7)
    blockSize = u16be(data, (end += 2) - 2) + 1
  let sampleRate: number = FLAC_RATES[rateCode] ?? 0
  if (rateCode === 0)
    sampleRate = info.sampleRate
  else if (rateCode === 12)
    sampleRate = data[end++]! * 1000
  else if (rateCode === 13 || rateCode === 14)
    sampleRate = u16be(data, (end += 2) - 2) * (rateCode === 14 ? 10 : 1)
  if (end >= data.byteLength || crc(data, at, end, 8) !== data[end])
    return undefined
  // ffmpeg refuses a frame longer than STREAMINFO's largest block or with other sample bits, so those fields bind a forger too.
  const bitsOk = bitsCode === 0 || FLAC_BITS[bitsCode] === info.bitsPerSample
  if (!bitsOk || blockSize > (info.maxBlockSize || 65_535) || sampleRate === 0)
    return undefined
  return blockSize / sampleRate
}

/**
 * FLAC frames found by their headers (a frame's length is not written anywhere), each
 * counted for the block size its header gives; the last counts only when its CRC-16
 * shows it whole, as a cut-off upload's is not.
 */
export function flacSeconds(data: Uint8Array): number | undefined {
  const stream = readFlacStreamInfo(data)
  if (!stream)
    return undefined
  let seconds = 0
  let last: { at: number, seconds: number } | undefined
  for (let at = data.indexOf(0xFF, stream.audioStart); at !== -1; at = data.indexOf(0xFF, at + 1)) {
    const frameSeconds = readFlacFrame(data, at, stream.info)
    if (frameSeconds === undefined)
      continue
    seconds += last?.seconds ?? 0
    last = { at, seconds: frameSeconds }
  }
  const end = data.byteLength
  if (last && end - last.at > 2 && crc(data, last.at, end - 2, 16) === u16be(data, end - 2))
    seconds += last.seconds
  return seconds
}
