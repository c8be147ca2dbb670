import { expectOk, MAX_AUDIO_BYTES, readBounded, readJson, voicesFrom, type AudioFormat, type TtsAdapter } from './types.ts'

/** What OpenAI answers for each format, for an upstream that names no content type. */
const contentTypes: Record<AudioFormat, string> = {
  mp3: 'audio/mpeg',
  opus: 'audio/ogg',
  aac: 'audio/aac',
  flac: 'audio/flac',
  wav: 'audio/wav',
  pcm: 'audio/pcm',
}

const base = (baseUrl: string) => baseUrl.replace(/\/+$/, '')

/**
 * OpenAI's speech API and the proxies that speak it (unspeech and the like):
 * `POST {baseUrl}/audio/speech` with a bearer key, `GET {baseUrl}/voices`.
 */
export const openAiCompatibleTts: TtsAdapter = {
  validate() {},

  async synthesize({ baseUrl, model, apiKey, signal }, request) {
    const response = await fetch(`${base(baseUrl)}/audio/speech`, {
      method: 'POST',
      headers: { 'authorization': `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model,
        input: request.input,
        voice: request.voice,
        ...(request.responseFormat ? { response_format: request.responseFormat } : {}),
        ...(request.speed !== undefined ? { speed: request.speed } : {}),
        ...(request.instructions !== undefined ? { instructions: request.instructions } : {}),
        ...(request.extraBody ? { extra_body: request.extraBody } : {}),
      }),
      signal,
    })
    await expectOk(response)
    const audio = await readBounded(response, MAX_AUDIO_BYTES)
    return { audio, contentType: response.headers.get('content-type') || contentTypes[request.responseFormat ?? 'mp3'] }
  },

  async listVoices({ baseUrl, apiKey, signal }) {
    const response = await fetch(`${base(baseUrl)}/voices`, { headers: { authorization: `Bearer ${apiKey}`, accept: 'application/json' }, signal })
    await expectOk(response)
    return voicesFrom(await readJson(response))
  },
}
