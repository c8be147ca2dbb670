import { ascii, u16be, u32be } from './bytes.ts'

interface Box { type: string, start: number, end: number }

/** The ISO BMFF boxes between `from` and `to`; a box running past `to` is cut there. */
function* boxes(data: Uint8Array, from: number, to: number): Generator<Box> {
  for (let at = from; at + 8 <= to;) {
    let size = u32be(data, at)
    let header = 8
    if (size === 1 && at + 16 <= to) {
      size = u32be(data, at + 8) * 2 ** 32 + u32be(data, at + 12)
      header = 16
    }
    else if (size === 0) {
      size = to - at
    }
    if (size < header)
      return
    yield { type: ascii(data, at + 4, 4), start: at + header, end: Math.min(at + size, to) }
    at += size
  }
}

/** The first box down a path of types, or undefined. */
function findBox(data: Uint8Array, parent: Box, ...path: string[]): Box | undefined {
  let box: Box | undefined = parent
  for (const type of path) {
    let found: Box | undefined
    for (const child of boxes(data, box.start, box.end)) {
      if (child.type === type) {
        found = child
        break
      }
    }
    if (!found)
      return undefined
    box = found
  }
  return box
}

const AAC_RATES = [96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8000, 7350] as const

/** The core sample rate and samples per access unit of an AudioSpecificConfig, or undefined for an object type other than AAC (Main, LC, SSR, LTP, ER LC). */
function readAudioSpecificConfig(data: Uint8Array, from: number, to: number): { sampleRate: number, frameSamples: number } | undefined {
  let bit = from * 8
  const read = (count: number) => {
    let value = 0
    for (let index = 0; index < count; index++, bit++) value = value * 2 + (bit >> 3 < to ? (data[bit >> 3]! >> (7 - (bit & 7))) & 1 : 0)
    return value
  }
  const objectType = () => {
    const type = read(5)
    return type === 31 ? 32 + read(6) : type
  }
  const rate = () => {
    const index = read(4)
    return index === 15 ? read(24) : AAC_RATES[index] ?? 0
  }
  if (to - from < 2)
    return undefined
  let type = objectType()
  const sampleRate = rate()
  read(4)
  // SBR and PS wrap the AAC core (its rate came first); the output doubles the samples at double the rate, so the time is the core's.
  if (type === 5 || type === 29) {
    rate()
    type = objectType()
  }
  if (![1, 2, 3, 4, 17].includes(type) || sampleRate === 0)
    return undefined
  return { sampleRate, frameSamples: read(1) === 1 ? 960 : 1024 }
}

/** An MPEG-4 descriptor's tag and body (ISO 14496-1 §8.3.3: the size is up to four 7-bit groups). */
function readDescriptor(data: Uint8Array, at: number, to: number): { tag: number, start: number, end: number } | undefined {
  if (at >= to)
    return undefined
  let size = 0
  let start = at + 1
  for (let index = 0; index < 4 && start < to; index++) {
    const byte = data[start++]!
    size = size * 128 + (byte & 0x7F)
    if ((byte & 0x80) === 0)
      break
  }
  return { tag: data[at]!, start, end: Math.min(start + size, to) }
}

/** The AAC configuration of an `mp4a` sample entry's `esds` (QuickTime puts it under `wave`), or undefined for any other codec. */
function readMp4Aac(data: Uint8Array, stsd: Box): { sampleRate: number, frameSamples: number } | undefined {
  const entry = [...boxes(data, stsd.start + 8, stsd.end)][0]
  if (entry?.type !== 'mp4a' || entry.start + 28 > entry.end)
    return undefined
  const version = u16be(data, entry.start + 8)
  const sampleEntry = { ...entry, start: entry.start + 28 + (version === 1 ? 16 : version === 2 ? 36 : 0) }
  const esds = findBox(data, sampleEntry, 'esds') ?? findBox(data, sampleEntry, 'wave', 'esds')
  const es = esds && readDescriptor(data, esds.start + 4, esds.end)
  if (es?.tag !== 3 || es.start + 3 > es.end)
    return undefined
  const flags = data[es.start + 2]!
  let at = es.start + 3 + ((flags & 0x80) !== 0 ? 2 : 0)
  if ((flags & 0x40) !== 0)
    at += 1 + (data[at] ?? 0)
  if ((flags & 0x20) !== 0)
    at += 2
  const config = readDescriptor(data, at, es.end)
  // Object types 0x40 (MPEG-4 audio) and 0x66–0x68 (MPEG-2 AAC); MP3 in MP4 and the rest are not counted.
  if (config?.tag !== 4 || ![0x40, 0x66, 0x67, 0x68].includes(data[config.start]!))
    return undefined
  const specific = readDescriptor(data, config.start + 13, config.end)
  return specific?.tag === 5 ? readAudioSpecificConfig(data, specific.start, specific.end) : undefined
}

/**
 * The AAC access units of an MP4/M4A's audio tracks (the longest track): the demuxer
 * finds them only through `stsz` and each fragment's `trun`, and each decodes to 1024
 * (or 960) samples at the AudioSpecificConfig's rate, whatever `mvhd`, `mdhd` or `stts`
 * say. Undefined when there is no audio track or one is not AAC.
 */
export function mp4AacSeconds(data: Uint8Array): number | undefined {
  const file: Box = { type: '', start: 0, end: data.byteLength }
  const moov = findBox(data, file, 'moov')
  if (!moov)
    return undefined
  const tracks = new Map<number, { sampleRate: number, frameSamples: number, frames: number }>()
  for (const trak of boxes(data, moov.start, moov.end)) {
    const handler = trak.type === 'trak' ? findBox(data, trak, 'mdia', 'hdlr') : undefined
    if (!handler || ascii(data, handler.start + 8, 4) !== 'soun')
      continue
    const stbl = findBox(data, trak, 'mdia', 'minf', 'stbl')
    const stsd = stbl && findBox(data, stbl, 'stsd')
    const aac = stsd && readMp4Aac(data, stsd)
    const tkhd = findBox(data, trak, 'tkhd')
    if (!aac || !tkhd)
      return undefined
    const sizes = findBox(data, stbl, 'stsz') ?? findBox(data, stbl, 'stz2')
    const frames = sizes && sizes.start + 12 <= sizes.end ? u32be(data, sizes.start + 8) : 0
    tracks.set(u32be(data, tkhd.start + (data[tkhd.start] === 1 ? 20 : 12)), { ...aac, frames })
  }
  for (const moof of boxes(data, 0, data.byteLength)) {
    for (const traf of moof.type === 'moof' ? boxes(data, moof.start, moof.end) : []) {
      const tfhd = traf.type === 'traf' ? findBox(data, traf, 'tfhd') : undefined
      const track = tfhd && tfhd.start + 8 <= tfhd.end ? tracks.get(u32be(data, tfhd.start + 4)) : undefined
      for (const trun of track ? boxes(data, traf.start, traf.end) : []) {
        if (trun.type === 'trun' && trun.start + 8 <= trun.end)
          track!.frames += u32be(data, trun.start + 4)
      }
    }
  }
  if (tracks.size === 0)
    return undefined
  return Math.max(...[...tracks.values()].map(track => track.frames * track.frameSamples / track.sampleRate))
}
