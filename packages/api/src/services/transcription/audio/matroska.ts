import { MAX_PRE_SKIP_SECONDS, opusPacketSeconds } from './opus.ts'

const matroskaIds = {
  segment: 0x18538067,
  tracks: 0x1654AE6B,
  trackEntry: 0xAE,
  trackNumber: 0xD7,
  trackType: 0x83,
  codecId: 0x86,
  codecDelay: 0x56AA,
  cluster: 0x1F43B675,
  simpleBlock: 0xA3,
  blockGroup: 0xA0,
  block: 0xA1,
  discardPadding: 0x75A2,
} as const

const AUDIO_TRACK_TYPE = 2

const utf8 = new TextDecoder()

interface EbmlElement { id: number, start: number, end: number, unknownSize: boolean }

/** An EBML variable-length integer at `at`: its value (marker bit removed) and length, or undefined past the data. */
function readVint(data: Uint8Array, at: number, keepMarker: boolean): { value: number, length: number, allOnes: boolean } | undefined {
  const first = data[at]
  if (first === undefined || first === 0)
    return undefined
  const length = Math.clz32(first) - 23
  if (at + length > data.byteLength)
    return undefined
  let value = keepMarker ? first : first & (0xFF >> length)
  let allOnes = value === (0xFF >> length)
  for (let index = 1; index < length; index++) {
    const byte = data[at + index]!
    value = value * 256 + byte
    allOnes &&= byte === 0xFF
  }
  return { value, length, allOnes }
}

function readElement(data: Uint8Array, at: number): EbmlElement | undefined {
  const id = readVint(data, at, true)
  const size = id && readVint(data, at + id.length, false)
  if (!id || !size)
    return undefined
  const start = at + id.length + size.length
  return { id: id.value, start, end: size.allOnes ? data.byteLength : start + size.value, unknownSize: size.allOnes }
}

function readUint(data: Uint8Array, element: EbmlElement): number {
  let value = 0
  for (let at = element.start; at < element.end; at++) value = value * 256 + data[at]!
  return value
}

function readInt(data: Uint8Array, element: EbmlElement): number {
  const unsigned = readUint(data, element)
  const bits = (element.end - element.start) * 8
  return bits > 0 && unsigned >= 2 ** (bits - 1) ? unsigned - 2 ** bits : unsigned
}

/** The children of a sized master element; a child running past the data ends the list. */
function* children(data: Uint8Array, parent: EbmlElement): Generator<EbmlElement> {
  for (let at = parent.start; at < parent.end;) {
    const child = readElement(data, at)
    if (!child || child.unknownSize || child.end > Math.min(parent.end, data.byteLength))
      return
    yield child
    at = child.end
  }
}

interface AudioTrack { number: number, opus: boolean, codecDelaySeconds: number }

function readAudioTracks(data: Uint8Array, tracks: EbmlElement): AudioTrack[] {
  const found: AudioTrack[] = []
  for (const entry of children(data, tracks)) {
    if (entry.id !== matroskaIds.trackEntry)
      continue
    const track: AudioTrack & { type?: number } = { number: 0, opus: false, codecDelaySeconds: 0 }
    for (const field of children(data, entry)) {
      if (field.id === matroskaIds.trackNumber)
        track.number = readUint(data, field)
      else if (field.id === matroskaIds.trackType)
        track.type = readUint(data, field)
      else if (field.id === matroskaIds.codecId)
        track.opus = utf8.decode(data.subarray(field.start, field.end)).startsWith('A_OPUS')
      else if (field.id === matroskaIds.codecDelay)
        track.codecDelaySeconds = readUint(data, field) / 1e9
    }
    if (track.type === AUDIO_TRACK_TYPE)
      found.push(track)
  }
  return found
}

/** A (Simple)Block: its track, where its frames lie, and its group's DiscardPadding if any. */
interface Block { track: number, lacing: number, payload: number, end: number, discardSeconds: number }

function readBlock(data: Uint8Array, block: EbmlElement): Block | undefined {
  const track = readVint(data, block.start, false)
  if (!track || block.start + track.length + 3 > block.end)
    return undefined
  const flags = data[block.start + track.length + 2]!
  return { track: track.value, lacing: (flags >> 1) & 3, payload: block.start + track.length + 3, end: block.end, discardSeconds: 0 }
}

function readBlockGroup(data: Uint8Array, group: EbmlElement): Block | undefined {
  let block: Block | undefined
  let discardSeconds = 0
  for (const field of children(data, group)) {
    if (field.id === matroskaIds.block)
      block = readBlock(data, field)
    else if (field.id === matroskaIds.discardPadding)
      discardSeconds = readInt(data, field) / 1e9
  }
  return block && { ...block, discardSeconds }
}

/** The byte ranges of a block's frames: lacing (Xiph, fixed-size or EBML) packs several in one block. */
function blockFrames(data: Uint8Array, block: Block): Array<[number, number]> {
  if (block.lacing === 0)
    return [[block.payload, block.end]]
  const count = data[block.payload]! + 1
  let at = block.payload + 1
  const sizes: number[] = []
  for (let frame = 0; frame < count - 1 && at < block.end; frame++) {
    if (block.lacing === 1) {
      let size = 0
      for (let byte = 255; byte === 255 && at < block.end; size += byte) byte = data[at++]!
      sizes.push(size)
    }
    else if (block.lacing === 3) {
      const vint = readVint(data, at, false)
      if (!vint)
        break
      at += vint.length
      sizes.push(frame === 0 ? vint.value : sizes[frame - 1]! + vint.value - (2 ** (7 * vint.length - 1) - 1))
    }
    else {
      sizes.push(Math.floor((block.end - at) / count))
    }
  }
  const frames: Array<[number, number]> = []
  for (const size of [...sizes, Number.POSITIVE_INFINITY]) {
    frames.push([at, Math.min(at + Math.max(0, size), block.end)])
    at += Math.max(0, size)
    if (at >= block.end)
      break
  }
  return frames
}

/** Every complete block and the audio tracks, in one flat walk that enters Segment and Cluster in place, because a live WebM writes both with an unknown size. */
function scanMatroska(data: Uint8Array): { tracks: AudioTrack[], blocks: Block[] } {
  const scan: { tracks: AudioTrack[], blocks: Block[] } = { tracks: [], blocks: [] }
  for (let at = 0; at < data.byteLength;) {
    const element = readElement(data, at)
    if (!element)
      break
    if (element.id === matroskaIds.segment || element.id === matroskaIds.cluster) {
      at = element.start
      continue
    }
    if (element.unknownSize || element.end > data.byteLength)
      break
    if (element.id === matroskaIds.tracks)
      scan.tracks = readAudioTracks(data, element)
    const block = element.id === matroskaIds.simpleBlock
      ? readBlock(data, element)
      : element.id === matroskaIds.blockGroup ? readBlockGroup(data, element) : undefined
    if (block)
      scan.blocks.push(block)
    at = element.end
  }
  return scan
}

/**
 * The Opus packets of a Matroska/WebM file's audio tracks (the longest track), less the
 * codec's priming (CodecDelay) and the last block's DiscardPadding, as a decoder trims
 * them; block timestamps are the client's word and are ignored. Undefined when there is
 * no audio track or one is not Opus.
 */
export function matroskaOpusSeconds(data: Uint8Array): number | undefined {
  const { tracks, blocks } = scanMatroska(data)
  if (tracks.length === 0 || tracks.some(track => !track.opus))
    return undefined
  return Math.max(...tracks.map((track) => {
    let seconds = 0
    let lastSeconds = 0
    let lastDiscard = 0
    for (const block of blocks.filter(block => block.track === track.number)) {
      lastSeconds = blockFrames(data, block).reduce((sum, [start, end]) => sum + opusPacketSeconds(data, start, end), 0)
      lastDiscard = block.discardSeconds
      seconds += lastSeconds
    }
    return seconds - Math.min(track.codecDelaySeconds, MAX_PRE_SKIP_SECONDS) - Math.min(Math.max(0, lastDiscard), lastSeconds)
  }))
}
