import { describe, expect, it } from 'vitest'

import { placeholderPng } from './card-png.ts'
import { characterUpdateInput, MAX_PICTURE_BYTES } from './schema.ts'

const dataUrl = (type: string, bytes: Uint8Array) => `data:image/${type};base64,${Buffer.from(bytes).toString('base64')}`
/** The signature of a WebP file (RIFF, a size, WEBP, a VP8 chunk) padded to `size` bytes. */
const webp = (size = 64) => Buffer.concat([Buffer.from('RIFF\0\0\0\0WEBPVP8 ', 'latin1'), Buffer.alloc(size - 16)])
const jpeg = Buffer.concat([Buffer.from([0xFF, 0xD8, 0xFF, 0xE0]), Buffer.alloc(60)])

/** The messages an avatar URL is refused with (none: accepted). */
function avatarProblems(avatarUrl: string): string[] {
  const result = characterUpdateInput.safeParse({ id: 'c1', avatarUrl })
  return result.success ? [] : result.error.issues.map(issue => `${issue.path.join('.')}: ${issue.message}`)
}

describe('character picture URLs', () => {
  it('accepts http(s) URLs and PNG, JPEG and WebP pictures inline, and keeps them as sent', () => {
    const png = dataUrl('png', placeholderPng())
    for (const url of ['https://example.com/a.png', 'http://127.0.0.1:3000/app/companions/airi.svg', png, dataUrl('jpeg', jpeg), dataUrl('webp', webp())])
      expect(avatarProblems(url), url.slice(0, 40)).toEqual([])
    expect(characterUpdateInput.parse({ id: 'c1', coverUrl: png }).coverUrl).toBe(png)
  })

  it('accepts a picture of exactly the bound and refuses one byte more, saying so', () => {
    expect(avatarProblems(dataUrl('webp', webp(MAX_PICTURE_BYTES)))).toEqual([])
    expect(avatarProblems(dataUrl('webp', webp(MAX_PICTURE_BYTES + 1)))).toEqual(['avatarUrl: Picture is too large: at most 512 KiB'])
    // Far past the bound, refused before the pattern reads it.
    expect(avatarProblems(`data:image/png;base64,${'A'.repeat(4 * MAX_PICTURE_BYTES)}`)).toEqual(['avatarUrl: Picture is too large: at most 512 KiB'])
  })

  it('refuses what is not a PNG, JPEG or WebP picture', () => {
    const notPicture = 'avatarUrl: Must be a PNG, JPEG or WebP picture as data:image/…;base64,…'
    expect(avatarProblems(`data:image/svg+xml;base64,${Buffer.from('<svg/>').toString('base64')}`)).toEqual([notPicture])
    expect(avatarProblems('data:image/png,rawbytes')).toEqual([notPicture])
    expect(avatarProblems('data:image/png;base64,abc')).toEqual([notPicture])
    expect(avatarProblems('data:text/html;base64,PGI+aGk8L2I+')).toEqual([notPicture])
    expect(avatarProblems(dataUrl('png', jpeg))).toEqual(['avatarUrl: Is not a PNG picture'])
    expect(avatarProblems('javascript:alert(1)')).toEqual(['avatarUrl: Must be an http(s) URL'])
    expect(avatarProblems(`https://example.com/${'a'.repeat(2048)}`)).toHaveLength(1)
  })
})
