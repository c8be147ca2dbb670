import { inflateSync } from 'node:zlib'

import { encode as encodeText } from 'png-chunk-text'
import extractChunks from 'png-chunks-extract'
import { describe, expect, it } from 'vitest'

import { cardTexts, coverPicture, coverUrlFor, MAX_COVER_BYTES, placeholderPng, pngOfCover, readChunks, withCards } from './card-png.ts'

const names = (png: Uint8Array) => extractChunks(png).map(chunk => chunk.name)

describe('card PNGs', () => {
  it('makes a placeholder that is a sound 64×64 RGB PNG of one colour', () => {
    const png = placeholderPng()
    expect(names(png)).toEqual(['IHDR', 'IDAT', 'IEND'])
    const [header, pixels] = extractChunks(png)
    const view = Buffer.from(header!.data)
    expect([view.readUInt32BE(0), view.readUInt32BE(4), view[8], view[9]]).toEqual([64, 64, 8, 2])
    const rows = inflateSync(pixels!.data)
    expect(rows.length).toBe(64 * (1 + 64 * 3))
    expect([...rows.subarray(1, 4)]).toEqual([...rows.subarray(rows.length - 3)])
  })

  it('puts cards before IEND in place of the ones a PNG carried, and takes them out again', () => {
    const once = withCards(placeholderPng(), { ccv3: 'djM=', chara: 'djI=' })
    const twice = withCards(once, { ccv3: 'bmV3' })
    expect(names(twice)).toEqual(['IHDR', 'IDAT', 'tEXt', 'IEND'])
    expect(cardTexts(extractChunks(twice))).toEqual({ ccv3: 'bmV3' })
    expect(Buffer.from(coverPicture(extractChunks(once))!).equals(Buffer.from(placeholderPng()))).toBe(true)
  })

  it('refuses a chunk whose length runs past the end of the file before extracting it', () => {
    const png = Buffer.from(placeholderPng())
    // IDAT's length, after the signature and IHDR, claims nearly 4 GiB.
    png.writeUInt32BE(0xFFFFFFF0, 33)
    expect(readChunks(png)).toBe('PNG is damaged: the IDAT chunk runs past the end of the file')
    expect(readChunks(png.subarray(0, 33))).toBe('PNG is damaged: the file ends before its IEND chunk')
  })

  it('keeps a picture up to the bound as the cover, without its card, and none past it', () => {
    const [header, pixels, end] = extractChunks(placeholderPng())
    const card = encodeText('ccv3', 'bm90IGNvdW50ZWQ=')
    // A picture of exactly `bytes`, padded by a comment chunk; the card chunk does not count.
    const chunksOf = (bytes: number) => [header!, pixels!, encodeText('Comment', 'a'.repeat(bytes - placeholderPng().length - 12 - 'Comment'.length - 1)), card, end!]
    const atBound = coverPicture(chunksOf(MAX_COVER_BYTES))!
    expect(atBound.length).toBe(MAX_COVER_BYTES)
    expect(cardTexts(extractChunks(atBound))).toEqual({})
    expect(pngOfCover(coverUrlFor(atBound))!.length).toBe(MAX_COVER_BYTES)
    expect(coverPicture(chunksOf(MAX_COVER_BYTES + 1))).toBeUndefined()
    expect(Buffer.from(pngOfCover(coverUrlFor(undefined))!).equals(Buffer.from(placeholderPng()))).toBe(true)
    expect(pngOfCover('https://cdn.example.com/cover.png')).toBeUndefined()
    expect(pngOfCover('data:image/png;base64,bm90IGEgcG5n')).toBeUndefined()
  })
})
