import { readFileSync } from 'node:fs'

import { parseBuffer } from 'music-metadata'
import { describe, expect, it } from 'vitest'

import { ApiError } from '../../../errors.ts'
import { audioDurationMs } from './index.ts'

const fixture = (name: string) => readFileSync(new URL(`../../../../../../tooling/fixtures/audio/${name}`, import.meta.url))

/** Codecs pad the start and end of a stream (MP3 and AAC by a frame), so a file may read a little longer than what was encoded. */
const TOLERANCE_MS = 60

/** The README says every tone file holds the same 2.5 s sine. */
const TONE_MS = 2500

/** Each fixture's duration from the README's table (ffprobe's), or the tone's length where ffprobe finds none in the header (the WebM). */
function statedDurationsMs(): Map<string, number> {
  const readme = fixture('README.md').toString('utf8')
  const durations = new Map<string, number>()
  for (const [, name, cell] of readme.matchAll(/^\| `(tone\.\w+)` \|[^|]*\| ([^|]*) \|/gm))
    durations.set(name!, /^\d/.test(cell!) ? Number.parseFloat(cell!) : TONE_MS)
  return durations
}

async function unsupported(run: Promise<unknown>): Promise<ApiError> {
  const error = await run.then(() => undefined, (error: unknown) => error)
  expect(error).toBeInstanceOf(ApiError)
  expect(error).toMatchObject({ status: 400, code: 'UNSUPPORTED_AUDIO' })
  return error as ApiError
}

/** The duration music-metadata reads from the header, to show a forgery really misstates it. */
async function headerSeconds(file: Uint8Array): Promise<number | undefined> {
  return (await parseBuffer(file, { size: file.byteLength }, { duration: true })).format.duration
}

/** A copy of `file` with `edit` applied to it. */
function edited(file: Buffer, edit: (copy: Buffer) => void): Buffer {
  const copy = Buffer.from(file)
  edit(copy)
  return copy
}

/** A WAV of the tone with `chunks` (id and body, padded to an even length) after its data chunk, the RIFF size updated. */
function wavWithTrailingChunks(chunks: Array<[string, Buffer]>): Buffer {
  const wav = Buffer.concat([fixture('tone.wav'), ...chunks.flatMap(([id, body]) => {
    const header = Buffer.alloc(8)
    header.write(id, 0, 'latin1')
    header.writeUInt32LE(body.length, 4)
    return [header, body, Buffer.alloc(body.length % 2)]
  })])
  wav.writeUInt32LE(wav.length - 8, 4)
  return wav
}

const ebmlLength = (first: number) => Math.clz32(first) - 23

/** The same WebM with every Cluster's size written as unknown, the way Chrome's MediaRecorder writes them. */
function withUnknownClusterSizes(webm: Uint8Array): Buffer {
  const clusterId = Buffer.from([0x1F, 0x43, 0xB6, 0x75])
  const parts: Uint8Array[] = []
  let copied = 0
  for (let at = webm.indexOf(clusterId[0]!); at !== -1; at = webm.indexOf(clusterId[0]!, at + 1)) {
    if (!Buffer.from(webm.subarray(at, at + 4)).equals(clusterId))
      continue
    const sizeLength = Math.clz32(webm[at + 4]!) - 23
    parts.push(webm.subarray(copied, at + 4), Uint8Array.of(0xFF))
    copied = at + 4 + sizeLength
  }
  expect(parts.length, 'clusters found').toBeGreaterThan(0)
  return Buffer.concat([...parts, webm.subarray(copied)])
}

/** The same WebM with every Cluster's Timecode set to 0, so its blocks' timestamps overlap. */
function withZeroClusterTimecodes(webm: Uint8Array): Buffer {
  const copy = Buffer.from(webm)
  let zeroed = 0
  for (let at = copy.indexOf(0x1F); at !== -1; at = copy.indexOf(0x1F, at + 1)) {
    const timecode = at + 4 + ebmlLength(copy[at + 4]!)
    if (copy.readUInt32BE(at) !== 0x1F43B675 || copy[timecode] !== 0xE7)
      continue
    copy.fill(0, timecode + 2, timecode + 2 + (copy[timecode + 1]! & 0x7F))
    zeroed++
  }
  expect(zeroed, 'cluster timecodes zeroed').toBeGreaterThan(1)
  return copy
}

/** The same WebM with each run of `group` SimpleBlocks laced into one block (Xiph or EBML lacing), its clusters of unknown size so none needs resizing. */
function withLacedBlocks(webm: Uint8Array, lacing: 'xiph' | 'ebml', group: number): Buffer {
  const data = withUnknownClusterSizes(webm)
  const out: Uint8Array[] = []
  let run: Buffer[] = []
  const flush = () => {
    if (run.length > 0) {
      // A SimpleBlock's body is the track number (one byte here), a 16-bit timecode, flags, then the frame.
      const sizes = run.slice(0, -1).map(block => block.length - 4)
      const table = lacing === 'xiph'
        ? Buffer.from(sizes.flatMap(size => [...Array.from({ length: Math.floor(size / 255) }, () => 255), size % 255]))
        : Buffer.concat(sizes.map((size, index) => {
            const value = index === 0 ? size : size - sizes[index - 1]! + 8191
            return Buffer.from([0x40 | (value >> 8), value & 0xFF])
          }))
      const body = Buffer.concat([run[0]!.subarray(0, 3), Uint8Array.of(run[0]![3]! | (lacing === 'xiph' ? 0x02 : 0x06), run.length - 1), table, ...run.map(block => block.subarray(4))])
      const size = Buffer.alloc(8)
      size.writeUIntBE(body.length, 2, 6)
      size[0] = 0x01
      out.push(Uint8Array.of(0xA3), size, body)
    }
    run = []
  }
  let laced = 0
  for (let at = 0; at < data.length;) {
    const idLength = ebmlLength(data[at]!)
    const id = data.readUIntBE(at, idLength)
    const sizeLength = ebmlLength(data[at + idLength]!)
    const start = at + idLength + sizeLength
    if (id === 0x18538067 || id === 0x1F43B675) {
      flush()
      out.push(data.subarray(at, start))
      at = start
      continue
    }
    let end = start
    for (let index = 0; index < sizeLength; index++) end += (index === 0 ? data[at + idLength]! & (0xFF >> sizeLength) : data[at + idLength + index]!) * 256 ** (sizeLength - 1 - index)
    if (id === 0xA3 && data[start] === 0x81) {
      run.push(data.subarray(start, end))
      if (run.length === group) {
        laced++
        flush()
      }
    }
    else {
      flush()
      out.push(data.subarray(at, end))
    }
    at = end
  }
  flush()
  expect(laced, 'laced blocks written').toBeGreaterThan(10)
  return Buffer.concat(out)
}

describe('audioDurationMs', () => {
  const stated = statedDurationsMs()

  it.each(['tone.wav', 'tone.mp3', 'tone.ogg', 'tone.webm', 'tone.flac', 'tone.m4a'])('reads the duration of %s from the file', async (name) => {
    const expected = stated.get(name)
    expect(expected, `README states the duration of ${name}`).toBeGreaterThan(0)
    const duration = await audioDurationMs(fixture(name))
    expect(Number.isInteger(duration)).toBe(true)
    expect(Math.abs(duration - expected!)).toBeLessThanOrEqual(TOLERANCE_MS)
  })

  it('measures a WebM without a Duration in its header from its blocks, also when its clusters have no size', async () => {
    const webm = fixture('tone.webm')
    const expected = stated.get('tone.webm')!
    expect(Math.abs(await audioDurationMs(withUnknownClusterSizes(webm)) - expected)).toBeLessThanOrEqual(TOLERANCE_MS)
  })

  it('measures a cut-off WebM recording by the audio it holds', async () => {
    const webm = fixture('tone.webm')
    const duration = await audioDurationMs(webm.subarray(0, Math.floor(webm.length / 2)))
    const full = stated.get('tone.webm')!
    expect(duration).toBeGreaterThan(full * 0.3)
    expect(duration).toBeLessThan(full * 0.7)
  })

  it('reads only the bytes it is given, not the rest of the buffer they sit in', async () => {
    const wav = fixture('tone.wav')
    const larger = Buffer.concat([Buffer.alloc(17, 1), wav, fixture('tone.wav')])
    expect(await audioDurationMs(larger.subarray(17, 17 + wav.length))).toBe(await audioDurationMs(wav))
  })

  it('trusts the content over a wrong MIME type or file name', async () => {
    const duration = await audioDurationMs(fixture('tone.ogg'), { mimeType: 'audio/mpeg', filename: 'speech.mp3' })
    expect(Math.abs(duration - stated.get('tone.ogg')!)).toBeLessThanOrEqual(TOLERANCE_MS)
  })

  it('refuses a file that is not audio, with a message naming the accepted formats', async () => {
    const error = await unsupported(audioDurationMs(fixture('not-audio.bin')))
    expect(error.message).toMatch(/WAV.*MP3.*OGG.*WebM.*FLAC.*M4A/)
  })

  it('refuses a file that is not audio even when the client calls it audio', async () => {
    await unsupported(audioDurationMs(fixture('not-audio.bin'), { mimeType: 'audio/mpeg', filename: 'speech.mp3' }))
    await unsupported(audioDurationMs(fixture('not-audio.bin'), { mimeType: 'audio/ogg' }))
  })

  it('refuses an empty file', async () => {
    await unsupported(audioDurationMs(new Uint8Array(0)))
  })

  it('refuses a WAV header without samples', async () => {
    const wav = fixture('tone.wav')
    await unsupported(audioDurationMs(wav.subarray(0, wav.indexOf('data') + 8)))
  })

  it.each(['tone.wav', 'tone.mp3', 'tone.ogg', 'tone.webm', 'tone.flac', 'tone.m4a'])('answers a cut-off %s with a duration or UNSUPPORTED_AUDIO', async (name) => {
    const file = fixture(name)
    for (const share of [0.01, 0.1, 0.5, 0.9, 0.999]) {
      const cut = file.subarray(0, Math.floor(file.length * share))
      const outcome = await audioDurationMs(cut).then(duration => duration, (error: unknown) => error)
      if (typeof outcome === 'number') {
        expect(outcome, `${share} of ${name}`).toBeGreaterThan(0)
        expect(outcome, `${share} of ${name}`).toBeLessThanOrEqual(stated.get(name)! + TOLERANCE_MS)
      }
      else {
        expect(outcome, `${share} of ${name}`).toBeInstanceOf(ApiError)
        expect(outcome, `${share} of ${name}`).toMatchObject({ code: 'UNSUPPORTED_AUDIO' })
      }
    }
  })

  describe('bills the audio the file holds, whatever its header says', () => {
    it('an MP3 whose Info header counts 10 frames but that carries all of them', async () => {
      const mp3 = fixture('tone.mp3')
      const forged = edited(mp3, copy => copy.writeUInt32BE(10, copy.indexOf('Info') + 8))
      expect(await headerSeconds(forged), 'the forged header').toBeLessThan(0.3)
      expect(await audioDurationMs(forged)).toBeGreaterThanOrEqual(stated.get('tone.mp3')!)
    })

    it('an MP3 that carries its audio four times behind one Info header', async () => {
      const mp3 = fixture('tone.mp3')
      const forged = Buffer.concat([mp3, mp3, mp3, mp3])
      expect(await headerSeconds(forged), 'the header').toBeLessThan(3)
      expect(await audioDurationMs(forged)).toBeGreaterThanOrEqual(4 * stated.get('tone.mp3')!)
    })

    it('a FLAC whose STREAMINFO counts 0.1 s of samples', async () => {
      // STREAMINFO's 36-bit total sample count is the low 4 bits of byte 21 and bytes 22–25.
      const forged = edited(fixture('tone.flac'), (copy) => {
        copy[21]! &= 0xF0
        copy.writeUInt32BE(1600, 22)
      })
      expect(await headerSeconds(forged), 'the forged header').toBeCloseTo(0.1)
      expect(await audioDurationMs(forged)).toBeGreaterThanOrEqual(TONE_MS)
    })

    it('a WAV whose data chunk says 0.1 s with 2.5 s of samples after it', async () => {
      const forged = edited(fixture('tone.wav'), copy => copy.writeUInt32LE(3200, copy.indexOf('data') + 4))
      expect(await headerSeconds(forged), 'the forged header').toBeCloseTo(0.1)
      expect(await audioDurationMs(forged)).toBeGreaterThanOrEqual(TONE_MS)
    })

    it('an M4A whose mvhd and mdhd say 0.1 s', async () => {
      // Both are version 0: the duration follows the version and flags, two times and the time scale.
      const forged = edited(fixture('tone.m4a'), (copy) => {
        copy.writeUInt32BE(100, copy.indexOf('mvhd') + 20)
        copy.writeUInt32BE(4410, copy.indexOf('mdhd') + 20)
      })
      expect(await headerSeconds(forged), 'the forged header').toBeCloseTo(0.1)
      expect(await audioDurationMs(forged)).toBeGreaterThanOrEqual(TONE_MS)
    })

    it('an Ogg/Opus whose last granule position says 0.1 s', async () => {
      const forged = edited(fixture('tone.ogg'), copy => copy.writeBigUInt64LE(312n + 4800n, copy.lastIndexOf('OggS') + 6))
      expect(await headerSeconds(forged), 'the forged header').toBeCloseTo(0.1)
      expect(await audioDurationMs(forged)).toBeGreaterThanOrEqual(TONE_MS)
    })

    it('a WebM whose block timestamps overlap', async () => {
      expect(await audioDurationMs(withZeroClusterTimecodes(fixture('tone.webm')))).toBeGreaterThanOrEqual(TONE_MS)
    })
  })

  it.each(['xiph', 'ebml'] as const)('counts the Opus packets of a WebM whose blocks hold several (%s lacing)', async (lacing) => {
    const duration = await audioDurationMs(withLacedBlocks(fixture('tone.webm'), lacing, 3))
    expect(Math.abs(duration - stated.get('tone.webm')!)).toBeLessThanOrEqual(TOLERANCE_MS)
  })

  it('does not bill metadata chunks after a WAV\'s samples as audio', async () => {
    const info = Buffer.from('INFOISFT\x0e\x00\x00\x00Lavf59.27.100\x00', 'latin1')
    const wav = wavWithTrailingChunks([['LIST', info], ['junk', Buffer.alloc(9001, 0x42)], ['PAD ', Buffer.alloc(4000)]])
    expect(await audioDurationMs(wav)).toBe(TONE_MS)
  })

  it('refuses a WAV whose frame size does not match its channels and sample size', async () => {
    // The block align field follows the format tag, channels, sample rate and byte rate.
    await unsupported(audioDurationMs(edited(fixture('tone.wav'), copy => copy.writeUInt16LE(1, copy.indexOf('fmt ') + 8 + 12))))
  })

  it('refuses an M4A whose codec it cannot count', async () => {
    // The esds's object type 0x40 (MPEG-4 audio) becomes 0x6B (MP3).
    const m4a = fixture('tone.m4a')
    const objectType = m4a.indexOf(Buffer.from([0x04, 0x80, 0x80, 0x80, 0x17, 0x40])) + 5
    expect(objectType, 'the DecoderConfigDescriptor').toBeGreaterThan(5)
    await unsupported(audioDurationMs(edited(m4a, (copy) => {
      copy[objectType] = 0x6B
    })))
  })
})
