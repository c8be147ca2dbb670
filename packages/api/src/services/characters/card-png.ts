import { deflateSync } from 'node:zlib'

import { decode as decodeText, encode as encodeText } from 'png-chunk-text'
import encodeChunks from 'png-chunks-encode'
import extractChunks from 'png-chunks-extract'

// PNG files that carry a Character Card: the card is base64 JSON in a tEXt chunk
// (`ccv3` for V3, `chara` for V2). Chunks are read and written by png-chunks-*.

type Chunk = { name: string, data: Uint8Array }

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])

/** The largest picture kept as a character's cover: covers are URLs, so it is stored as a data: URL, and lists carry it. */
export const MAX_COVER_BYTES = 512 * 1024

const DATA_URL_PREFIX = 'data:image/png;base64,'

/** The tEXt keywords a card travels in; the rest of a PNG is its picture. */
const CARD_KEYWORDS = ['ccv3', 'chara'] as const
type CardKeyword = typeof CARD_KEYWORDS[number]

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= SIGNATURE.length && SIGNATURE.equals(bytes.subarray(0, SIGNATURE.length))
}

/**
 * Why `bytes` is not a sound PNG, checked before the chunks are extracted: the
 * extractor allocates each chunk at its declared length, so a length past the end
 * of the file must be refused first.
 */
function structureProblem(bytes: Uint8Array): string | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let at = SIGNATURE.length
  while (at + 8 <= bytes.length) {
    const length = view.getUint32(at)
    const name = Buffer.from(bytes.subarray(at + 4, at + 8)).toString('latin1')
    if (name === 'IEND')
      return undefined
    at += 12 + length
    if (at > bytes.length)
      return `the ${name} chunk runs past the end of the file`
  }
  return 'the file ends before its IEND chunk'
}

/** The chunks of a PNG (the caller checked the signature), or a plain reason it cannot be read. */
export function readChunks(bytes: Uint8Array): Chunk[] | string {
  const problem = structureProblem(bytes)
  if (problem)
    return `PNG is damaged: ${problem}`
  try {
    return extractChunks(bytes)
  }
  catch (error) {
    return `PNG is damaged: ${(error as Error).message}`
  }
}

/** The texts of the card chunks a PNG holds, by keyword (a tEXt chunk that cannot be read is no card). */
export function cardTexts(chunks: Chunk[]): Partial<Record<CardKeyword, string>> {
  const texts: Partial<Record<CardKeyword, string>> = {}
  for (const chunk of chunks.filter(each => each.name === 'tEXt')) {
    let decoded: { keyword: string, text: string }
    try {
      decoded = decodeText(chunk.data)
    }
    catch {
      // A NUL inside the text: not a chunk any card tool writes.
      continue
    }
    if ((CARD_KEYWORDS as readonly string[]).includes(decoded.keyword))
      texts[decoded.keyword as CardKeyword] ??= decoded.text
  }
  return texts
}

function isCardChunk(chunk: Chunk): boolean {
  if (chunk.name !== 'tEXt')
    return false
  const keywordEnd = chunk.data.indexOf(0)
  const keyword = Buffer.from(chunk.data.subarray(0, keywordEnd < 0 ? chunk.data.length : keywordEnd)).toString('latin1')
  return (CARD_KEYWORDS as readonly string[]).includes(keyword)
}

/**
 * The picture alone (the PNG without its card chunks) when it is no larger than
 * `MAX_COVER_BYTES`; measured before it is written, as png-chunks-encode takes
 * about half a second per MiB.
 */
export function coverPicture(chunks: Chunk[]): Uint8Array | undefined {
  const picture = chunks.filter(chunk => !isCardChunk(chunk))
  const size = SIGNATURE.length + picture.reduce((sum, chunk) => sum + 12 + chunk.data.length, 0)
  return size <= MAX_COVER_BYTES ? encodeChunks(picture) : undefined
}

/** `png` (a sound PNG) with `cards` as tEXt chunks before IEND, in place of any it carried. */
export function withCards(png: Uint8Array, cards: Partial<Record<CardKeyword, string>>): Uint8Array {
  const chunks = extractChunks(png).filter(chunk => !isCardChunk(chunk))
  const texts = Object.entries(cards).map(([keyword, text]) => encodeText(keyword, text))
  return encodeChunks([...chunks.slice(0, -1), ...texts, ...chunks.slice(-1)])
}

/** The cover (and avatar) URL of an imported character: its card's picture, else the placeholder. */
export function coverUrlFor(picture: Uint8Array | undefined): string {
  return `${DATA_URL_PREFIX}${Buffer.from(picture ?? placeholderPng()).toString('base64')}`
}

/** The PNG a cover URL holds, when it is a data: URL of a sound PNG (a cover elsewhere is not ours to fetch). */
export function pngOfCover(coverUrl: string): Uint8Array | undefined {
  if (!coverUrl.startsWith(DATA_URL_PREFIX))
    return undefined
  const bytes = Buffer.from(coverUrl.slice(DATA_URL_PREFIX.length), 'base64')
  return isPng(bytes) && typeof readChunks(bytes) !== 'string' ? bytes : undefined
}

/** The colour of the placeholder picture: the web app's accent. */
const PLACEHOLDER_RGB = [0xE0, 0x7A, 0x5F] as const
const PLACEHOLDER_SIZE = 64

/** A small plain PNG (a square of one colour), for characters that have no PNG of their own. */
export function placeholderPng(): Uint8Array {
  const header = Buffer.alloc(13)
  header.writeUInt32BE(PLACEHOLDER_SIZE, 0)
  header.writeUInt32BE(PLACEHOLDER_SIZE, 4)
  // 8 bits per sample, RGB, deflate, no filter method, not interlaced.
  header.set([8, 2, 0, 0, 0], 8)
  const row = Buffer.alloc(1 + PLACEHOLDER_SIZE * 3)
  for (let x = 0; x < PLACEHOLDER_SIZE; x++)
    row.set(PLACEHOLDER_RGB, 1 + x * 3)
  const pixels = deflateSync(Buffer.concat(Array.from({ length: PLACEHOLDER_SIZE }, () => row)))
  return encodeChunks([
    { name: 'IHDR', data: header },
    { name: 'IDAT', data: pixels },
    { name: 'IEND', data: new Uint8Array(0) },
  ])
}
