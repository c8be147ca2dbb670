// Pictures a person uploads are scaled down in the browser and sent inline as data:
// URLs (the server keeps them in the character's row: docs/stage-web.md, "Characters").

export const AVATAR_SIDE = 256
export const COVER_SIDE = 768

/**
 * The most one picture may be once encoded. The server takes 512 KiB, but a
 * character is saved in one request of at most 1 MiB, and the avatar and the cover
 * travel together (base64 adds a third).
 */
const MAX_ENCODED_BYTES = 256 * 1024
/** Larger files are not worth decoding: no camera picture is this big. */
const MAX_FILE_BYTES = 40 * 1024 * 1024

export class PictureError extends Error {
  constructor(readonly reason: 'too-large' | 'unreadable') {
    super(reason)
  }
}

const decodedSize = (dataUrl: string) => Math.floor((dataUrl.length - dataUrl.indexOf(',') - 1) * 3 / 4)

/** `canvas` as WebP (JPEG where the browser cannot write WebP), at the best quality that fits. */
function encode(canvas: HTMLCanvasElement): string {
  for (const quality of [0.86, 0.72, 0.55]) {
    let url = canvas.toDataURL('image/webp', quality)
    // A browser that cannot write WebP answers PNG.
    if (!url.startsWith('data:image/webp'))
      url = canvas.toDataURL('image/jpeg', quality)
    if (decodedSize(url) <= MAX_ENCODED_BYTES)
      return url
  }
  throw new PictureError('too-large')
}

function canvasOf(width: number, height: number): { canvas: HTMLCanvasElement, context: CanvasRenderingContext2D } {
  const canvas = document.createElement('canvas')
  canvas.width = width
  canvas.height = height
  return { canvas, context: canvas.getContext('2d')! }
}

/** The picture in `file`, its longer side at most `maxSide` pixels, as a data: URL. */
export async function scaledPicture(file: Blob, maxSide: number): Promise<string> {
  if (file.size > MAX_FILE_BYTES)
    throw new PictureError('too-large')
  let bitmap: ImageBitmap
  try {
    bitmap = await createImageBitmap(file)
  }
  catch {
    throw new PictureError('unreadable')
  }
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height))
  const { canvas, context } = canvasOf(Math.max(1, Math.round(bitmap.width * scale)), Math.max(1, Math.round(bitmap.height * scale)))
  context.imageSmoothingQuality = 'high'
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height)
  bitmap.close()
  return encode(canvas)
}

/** A plain avatar for a character that has none: its initial on the app's accent colour. */
export function initialAvatar(name: string): string {
  const { canvas, context } = canvasOf(AVATAR_SIDE, AVATAR_SIDE)
  const style = getComputedStyle(document.documentElement)
  context.fillStyle = style.getPropertyValue('--accent').trim() || 'gray'
  context.fillRect(0, 0, AVATAR_SIDE, AVATAR_SIDE)
  context.fillStyle = style.getPropertyValue('--accent-text').trim() || 'white'
  context.font = `600 ${AVATAR_SIDE / 2}px system-ui, sans-serif`
  context.textAlign = 'center'
  context.textBaseline = 'middle'
  context.fillText([...name.trim()][0]?.toUpperCase() ?? '?', AVATAR_SIDE / 2, AVATAR_SIDE / 2 + AVATAR_SIDE / 20)
  return encode(canvas)
}
