/** Milliseconds of one Opus frame by the TOC byte's configuration number (RFC 6716 §3.1). */
function opusFrameMs(config: number): number {
  if (config < 12)
    return [10, 20, 40, 60][config % 4]!
  if (config < 16)
    return [10, 20][config % 2]!
  return [2.5, 5, 10, 20][config % 4]!
}

/** Seconds of the Opus packet starting at `at` and ending before `end`, from its TOC byte (and frame count byte). */
export function opusPacketSeconds(data: Uint8Array, at: number, end: number): number {
  if (at >= end)
    return 0
  const toc = data[at]!
  const code = toc & 3
  const frames = code === 0 ? 1 : code < 3 ? 2 : at + 1 < end ? data[at + 1]! & 0x3F : 0
  return opusFrameMs(toc >> 3) * frames / 1000
}

/** Pre-skip beyond 80 ms (RFC 7845's recommended seek pre-roll) is no encoder's priming, so no more is taken off. */
export const MAX_PRE_SKIP_SECONDS = 0.08
