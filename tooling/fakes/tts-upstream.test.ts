import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { buildSsml } from '../../packages/api/src/adapters/tts/azure.ts'

import { generateWav, startFakeTtsUpstream, type FakeTtsUpstream } from './tts-upstream.ts'

// The speech tests and benchmarks lean on this fake: it must refuse the SSML a
// real endpoint refuses, read back the text we escaped, and answer with real audio.

describe('the fake TTS upstream', () => {
  let fake: FakeTtsUpstream
  beforeAll(async () => {
    fake = await startFakeTtsUpstream()
  })
  afterAll(async () => {
    await fake.close()
  })
  beforeEach(() => {
    fake.reset()
  })

  it('answers OpenAI\'s speech request with a real WAV file', async () => {
    const response = await fetch(`${fake.url}/audio/speech`, {
      method: 'POST',
      headers: { 'authorization': 'Bearer sk-1', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tts-1', input: 'Hello', voice: 'alloy', response_format: 'wav' }),
    })
    expect(response.headers.get('content-type')).toBe('audio/wav')
    const audio = Buffer.from(await response.arrayBuffer())
    expect(audio.subarray(0, 4).toString('ascii')).toBe('RIFF')
    expect(audio.subarray(8, 12).toString('ascii')).toBe('WAVE')
    expect(audio.readUInt32LE(40)).toBe(audio.length - 44)
    expect(audio.equals(generateWav('tts-1/alloy', 'Hello'))).toBe(true)
    expect(fake.requests[0]).toMatchObject({ key: 'sk-1', body: { input: 'Hello' } })
  })

  const postSsml = (ssml: string) => fetch(`${fake.azureUrl}/cognitiveservices/v1`, {
    method: 'POST',
    headers: { 'ocp-apim-subscription-key': 'az-1', 'content-type': 'application/ssml+xml', 'x-microsoft-outputformat': 'riff-8khz-16bit-mono-pcm' },
    body: ssml,
  })

  it.each([
    ['an unescaped ampersand', '<speak><voice name="en-US-JennyNeural">Tom & Jerry</voice></speak>'],
    ['an unescaped <', '<speak><voice name="en-US-JennyNeural">1 < 2</voice></speak>'],
    ['a mismatched end tag', '<speak><voice name="en-US-JennyNeural"></speak></voice>'],
    ['an unclosed element', '<speak><voice name="en-US-JennyNeural">hi'],
    ['a duplicate attribute', '<speak><voice name="a" name="en-US-JennyNeural">hi</voice></speak>'],
    ['two roots', '<speak><voice name="en-US-JennyNeural">hi</voice></speak><speak></speak>'],
  ])('refuses SSML with %s with 400 and no audio', async (_, ssml) => {
    const response = await postSsml(ssml)
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ error: { message: expect.stringMatching(/^Malformed SSML/) } })
    expect(fake.requests[0]!.audio).toBeUndefined()
  })

  it('answers well-formed SSML with audio for the text it carries', async () => {
    const response = await postSsml(buildSsml({ input: 'Tom & Jerry', voice: 'en-US-JennyNeural' }))
    expect(response.status).toBe(200)
    expect(fake.requests[0]!.ssml).toEqual({ voice: 'en-US-JennyNeural', lang: 'en-US', text: 'Tom & Jerry' })
    expect(Buffer.from(await response.arrayBuffer()).equals(fake.requests[0]!.audio!)).toBe(true)
  })

  it('reads back the text of SSML built for Azure intact, whatever the text holds', async () => {
    const input = '  Tom & Jerry say "hi" <b>loud</b> \'quoted\' ]]> &amp; &lt; 🎤 \u0007bell 42 '
    const response = await postSsml(buildSsml({ input, voice: 'en-US-JennyNeural', speed: 1.25 }))
    expect(response.status).toBe(200)
    // The one character XML cannot carry is spoken as a space.
    expect(fake.requests[0]!.ssml).toEqual({ voice: 'en-US-JennyNeural', lang: 'en-US', text: input.replace('\u0007', ' '), rate: '1.25' })
  })
})
