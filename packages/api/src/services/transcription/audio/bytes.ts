export const u16be = (data: Uint8Array, at: number) => (data[at]! << 8) | data[at + 1]!
export const u24be = (data: Uint8Array, at: number) => (data[at]! << 16) | u16be(data, at + 1)
export const u32be = (data: Uint8Array, at: number) => data[at]! * 2 ** 24 + u24be(data, at + 1)
export const u16le = (data: Uint8Array, at: number) => data[at]! | (data[at + 1]! << 8)
export const u32le = (data: Uint8Array, at: number) => u16le(data, at) + u16le(data, at + 2) * 2 ** 16

/** `length` bytes at `at` as Latin-1 text, or '' when they run past the data, so a cut-off file compares unequal instead of throwing. */
export const ascii = (data: Uint8Array, at: number, length: number) => at + length <= data.byteLength ? String.fromCharCode(...data.subarray(at, at + length)) : ''

/** The offset of `pattern` at or after `from`, or -1. */
export function indexOfBytes(data: Uint8Array, pattern: string, from: number): number {
  for (let at = data.indexOf(pattern.charCodeAt(0), from); at !== -1; at = data.indexOf(pattern.charCodeAt(0), at + 1)) {
    if (ascii(data, at, pattern.length) === pattern)
      return at
  }
  return -1
}

/** Where the audio starts after any ID3v2 tags, which MP3 and FLAC files may carry in front. */
export function afterId3v2(data: Uint8Array): number {
  let at = 0
  while (ascii(data, at, 3) === 'ID3' && at + 10 <= data.byteLength) {
    const size = ((data[at + 6]! & 0x7F) << 21) | ((data[at + 7]! & 0x7F) << 14) | ((data[at + 8]! & 0x7F) << 7) | (data[at + 9]! & 0x7F)
    at += 10 + size + ((data[at + 5]! & 0x10) !== 0 ? 10 : 0)
  }
  return at
}
