import { expectOk, readJson, voicesFrom, type Voice } from './types.ts'

/** The HTTP origin of the streaming bridge's WebSocket URL (`wss://host/path` → `https://host`). */
export function httpOrigin(url: string): string {
  const parsed = new URL(url)
  const protocol = parsed.protocol === 'wss:' ? 'https:' : parsed.protocol === 'ws:' ? 'http:' : parsed.protocol
  return `${protocol}//${parsed.host}`
}

/**
 * The voice catalogue of an unspeech-style streaming bridge:
 * `GET {origin}/api/voices?provider=…[&model=…]` answering `{ voices: [{ id, name,
 * languages: [{ code }], labels, … }] }`.
 */
export async function fetchStreamingVoices({ url, provider, model, apiKey, signal }: { url: string, provider: string, model?: string, apiKey: string, signal: AbortSignal }): Promise<Voice[]> {
  const query = new URLSearchParams({ provider, ...(model ? { model } : {}) })
  const response = await fetch(`${httpOrigin(url)}/api/voices?${query}`, { headers: { authorization: `Bearer ${apiKey}`, accept: 'application/json' }, signal })
  await expectOk(response)
  return voicesFrom(await readJson(response))
}
