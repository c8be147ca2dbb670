import { CouldNotDetermineFileTypeError, parseBuffer, type IAudioMetadata, type IFormat } from 'music-metadata'

import { ApiError } from '../../../errors.ts'
import { ascii } from './bytes.ts'
import { flacSeconds } from './flac.ts'
import { matroskaOpusSeconds } from './matroska.ts'
import { mp4AacSeconds } from './mp4.ts'
import { mpegSeconds } from './mpeg.ts'
import { oggOpusSeconds } from './ogg.ts'
import { wavSeconds } from './riff.ts'

const unsupportedAudio = () => new ApiError(400, 'UNSUPPORTED_AUDIO', 'Could not read the length of this audio file; send a complete WAV, MP3, OGG/Opus, WebM (Opus), FLAC or M4A file')

type AudioHint = { mimeType?: string, filename?: string }

/**
 * The duration in whole milliseconds (rounded up) of an audio file, read from the
 * file itself; throws `UNSUPPORTED_AUDIO` when it is not audio whose length we can know.
 * `hint` (the client's MIME type or file name) is only used when the content alone
 * does not say the format, since a wrong one would pick the wrong parser.
 */
export async function audioDurationMs(data: Uint8Array, hint?: AudioHint): Promise<number> {
  if (data.byteLength === 0)
    throw unsupportedAudio()
  const metadata = await readMetadata(data, hint)
  if (metadata.format.hasAudio === false)
    throw unsupportedAudio()
  const counted = countedSeconds(data, metadata.format)
  if (counted === undefined || !Number.isFinite(counted) || counted <= 0)
    throw unsupportedAudio()
  // A header's length (Xing frames, STREAMINFO samples, mdhd, data size, last granule) is the client's word, which decoders play past: it may raise the bill, never lower it below the audio counted.
  const stated = metadata.format.duration
  const seconds = stated !== undefined && Number.isFinite(stated) ? Math.max(counted, stated) : counted
  // The epsilon keeps float noise (2.5000000000000004 s) from adding a millisecond; any audio at all is at least one.
  return Math.max(1, Math.ceil(seconds * 1000 - 1e-6))
}

async function readMetadata(data: Uint8Array, hint: AudioHint | undefined): Promise<IAudioMetadata> {
  // `size` tells the parser where the file ends, so `duration: true` scans exactly the bytes we hold.
  const options = { duration: true, skipCovers: true }
  try {
    return await parseBuffer(data, { size: data.byteLength }, options)
  }
  catch (error) {
    if (!(error instanceof CouldNotDetermineFileTypeError) || (!hint?.mimeType && !hint?.filename))
      throw unsupportedAudio()
  }
  try {
    return await parseBuffer(data, { size: data.byteLength, mimeType: hint?.mimeType, path: hint?.filename }, options)
  }
  catch {
    throw unsupportedAudio()
  }
}

/**
 * The seconds a decoder would play, counted from the units it decodes (MPEG and FLAC
 * frames, PCM bytes, Opus packets, AAC access units) and only from fields it obeys;
 * undefined for a format or codec we cannot count, which is then refused.
 */
function countedSeconds(data: Uint8Array, format: IFormat): number | undefined {
  const container = format.container ?? ''
  if (container === 'WAVE')
    return wavSeconds(data)
  if (container === 'MPEG' && format.codec?.includes('Layer'))
    return mpegSeconds(data)
  if (container === 'FLAC')
    return flacSeconds(data)
  if (container === 'Ogg')
    return oggOpusSeconds(data)
  if (container.startsWith('EBML'))
    return matroskaOpusSeconds(data)
  // music-metadata names MP4 containers by their brand (M4A, isom, …), so the `ftyp` box is the surer sign.
  if (ascii(data, 4, 4) === 'ftyp')
    return mp4AacSeconds(data)
  return undefined
}
