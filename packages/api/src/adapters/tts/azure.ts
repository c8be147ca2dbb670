import { ApiError } from '../../errors.ts'
import { expectOk, MAX_AUDIO_BYTES, readBounded, readJson, type TtsAdapter, type Voice } from './types.ts'

/**
 * Azure neural voice names: language, optional script, region, then the name
 * ending in `Neural` (`en-US-JennyNeural`, `sr-Latn-RS-NicholasNeural`,
 * `en-US-Ava:DragonHDLatestNeural`). Only letters, digits, `-` and `:`, so a
 * voice that passes can never change the SSML around it.
 */
const AZURE_VOICE = /^([a-z]{2,3}(?:-[a-z]{4})?-[a-z]{2,4})-[a-z0-9]+(?::[a-z0-9]+)?Neural$/i

/** The locale of a valid voice id (its `xml:lang`), or undefined when the id is not one. */
function azureVoiceLocale(voice: string): string | undefined {
  return voice.length <= 100 ? AZURE_VOICE.exec(voice)?.[1] : undefined
}

/** Characters XML 1.0 cannot carry, not even as references (C0 controls but tab/newlines, U+FFFE/U+FFFF, lone surrogates). */
const NOT_XML = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu

/** Text as XML character data or an attribute value: the five special characters escaped, illegal ones spoken as spaces. */
function escapeXml(text: string): string {
  return text.replace(NOT_XML, ' ').replace(/[&<>"']/g, char => `&${({ '&': 'amp', '<': 'lt', '>': 'gt', '"': 'quot', '\'': 'apos' })[char]!};`)
}

/** The SSML document for one request; `voice` must have passed `azureVoiceLocale`. */
export function buildSsml({ input, voice, speed }: { input: string, voice: string, speed?: number }): string {
  const locale = azureVoiceLocale(voice)
  if (!locale)
    throw invalidVoice(voice)
  const text = escapeXml(input)
  // Azure reads a bare number as a multiplier of the voice's own rate, as OpenAI's `speed` is.
  const body = speed !== undefined && speed !== 1 ? `<prosody rate="${escapeXml(String(speed))}">${text}</prosody>` : text
  return `<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="${escapeXml(locale)}"><voice name="${escapeXml(voice)}">${body}</voice></speak>`
}

const invalidVoice = (voice: string) =>
  new ApiError(400, 'INVALID_VOICE', `${JSON.stringify(voice.slice(0, 100))} is not an Azure neural voice (e.g. en-US-JennyNeural)`, { param: 'voice' })

/** What Azure's output formats are, for an answer that names no content type. */
function contentTypeOf(outputFormat: string): string {
  const format = outputFormat.toLowerCase()
  if (format.includes('mp3'))
    return 'audio/mpeg'
  if (format.startsWith('ogg'))
    return 'audio/ogg'
  if (format.startsWith('webm'))
    return 'audio/webm'
  if (format.startsWith('riff'))
    return 'audio/wav'
  if (format.startsWith('raw'))
    return 'audio/pcm'
  return 'application/octet-stream'
}

const origin = (baseUrl: string) => baseUrl.replace(/\/+$/, '')

/**
 * Azure AI Speech: SSML posted to `{baseUrl}/cognitiveservices/v1` with the key in
 * `Ocp-Apim-Subscription-Key` and the entry's `model` as the output format;
 * voices from `{baseUrl}/cognitiveservices/voices/list`.
 */
export const azureTts: TtsAdapter = {
  validate({ voice }) {
    if (!azureVoiceLocale(voice))
      throw invalidVoice(voice)
  },

  async synthesize({ baseUrl, model, apiKey, signal }, request) {
    const response = await fetch(`${origin(baseUrl)}/cognitiveservices/v1`, {
      method: 'POST',
      headers: {
        'ocp-apim-subscription-key': apiKey,
        'content-type': 'application/ssml+xml',
        'x-microsoft-outputformat': model,
        'user-agent': 'airi-server',
      },
      body: buildSsml(request),
      signal,
    })
    await expectOk(response)
    const audio = await readBounded(response, MAX_AUDIO_BYTES)
    return { audio, contentType: response.headers.get('content-type') || contentTypeOf(model) }
  },

  async listVoices({ baseUrl, apiKey, signal }) {
    const response = await fetch(`${origin(baseUrl)}/cognitiveservices/voices/list`, { headers: { 'ocp-apim-subscription-key': apiKey }, signal })
    await expectOk(response)
    const body = await readJson(response)
    if (!Array.isArray(body))
      throw new ApiError(502, 'UPSTREAM_UNAVAILABLE', 'Azure\'s voice list is not an array')
    return body.flatMap((item: Record<string, unknown> | null): Voice[] => {
      const id = item?.ShortName
      if (typeof id !== 'string' || !azureVoiceLocale(id))
        return []
      const locales = [item!.Locale, ...(Array.isArray(item!.SecondaryLocaleList) ? item!.SecondaryLocaleList : [])].filter((locale): locale is string => typeof locale === 'string')
      return [{
        id,
        name: typeof item!.DisplayName === 'string' ? item!.DisplayName : id,
        ...(locales.length ? { languages: locales } : {}),
        ...(typeof item!.Gender === 'string' ? { gender: item!.Gender.toLowerCase() } : {}),
      }]
    })
  },
}
