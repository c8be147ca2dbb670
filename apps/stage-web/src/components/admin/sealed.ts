/** What the page shows in place of a sealed key's ciphertext. */
const MASK = '••••'

/**
 * The entries holding sealed upstream keys: LLM, speech and transcription keys are typed
 * on the Models tab; a streaming upstream's keys are sealed under its fixed alias.
 */
const SEALED_ENTRIES: Record<string, { tab: 'models' } | { alias: string }> = {
  LLM_ROUTER_CONFIG: { tab: 'models' },
  TTS_UPSTREAMS: { tab: 'models' },
  STT_UPSTREAMS: { tab: 'models' },
  STREAMING_TTS_UPSTREAM: { alias: 'streaming-tts' },
  STREAMING_STT_UPSTREAM: { alias: 'streaming-stt' },
}

/** Where the keys of an entry are changed, or undefined when it holds none. */
export const sealedKeysOf = (key: string): { tab: 'models' } | { alias: string } | undefined => SEALED_ENTRIES[key]

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null

/** A copy of `value` with every `ciphertext` string masked, so no sealed key is rendered. */
export function maskCiphertexts(value: unknown): unknown {
  if (Array.isArray(value))
    return value.map(maskCiphertexts)
  if (!isRecord(value))
    return value
  return Object.fromEntries(Object.entries(value).map(([name, inner]) => [name, name === 'ciphertext' && typeof inner === 'string' ? MASK : maskCiphertexts(inner)]))
}

/**
 * `edited` with each masked ciphertext put back from `original` at the same place, so an
 * operator can change the rest of an entry without ever seeing its keys. A mask left where
 * the original had none stays, and the server refuses it naming its path.
 */
export function restoreCiphertexts(edited: unknown, original: unknown): unknown {
  if (Array.isArray(edited))
    return edited.map((item, index) => restoreCiphertexts(item, Array.isArray(original) ? original[index] : undefined))
  if (!isRecord(edited))
    return edited
  const source = isRecord(original) ? original : {}
  return Object.fromEntries(Object.entries(edited).map(([name, inner]) => {
    if (name === 'ciphertext' && inner === MASK && typeof source.ciphertext === 'string')
      return [name, source.ciphertext]
    return [name, restoreCiphertexts(inner, source[name])]
  }))
}
