import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'

import { generateWav, startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'
import { parseXml, textOf, XmlError } from '@airi/tooling/fakes/xml'

import { buildSsml } from './tts/azure.ts'

// The speech tests and benchmarks lean on this fake: its XML parser must refuse
// what a real SSML endpoint refuses, and its audio must be real audio.

describe('the fake\'s XML parser', () => {
  it('parses elements, attributes, references, CDATA and comments', () => {
    const root = parseXml('<?xml version="1.0" encoding="UTF-8"?>\n<!-- c --><speak xml:lang=\'en-US\' a="x &amp; y"><voice name="v">Tom &amp; Jerry &lt;3 &#x1F3A4;&#65;<![CDATA[<raw>]]><!-- note --></voice><br/></speak>')
    expect(root.name).toBe('speak')
    expect(root.attributes).toEqual({ 'xml:lang': 'en-US', 'a': 'x & y' })
    expect(textOf(root)).toBe('Tom & Jerry <3 🎤A<raw>')
  })

  it.each([
    ['an unescaped ampersand', '<speak>Tom & Jerry</speak>'],
    ['an unescaped <', '<speak>1 < 2</speak>'],
    ['a mismatched end tag', '<speak><voice></speak></voice>'],
    ['an unclosed element', '<speak><voice name="a">'],
    ['an unquoted attribute', '<speak a=b></speak>'],
    ['< in an attribute value', '<speak a="<"></speak>'],
    ['a duplicate attribute', '<speak a="1" a="2"></speak>'],
    ['an unknown entity', '<speak>&nbsp;</speak>'],
    ['a reference to an illegal character', '<speak>&#0;</speak>'],
    ['a control character', '<speak>\u0001</speak>'],
    ['two roots', '<speak></speak><speak></speak>'],
    ['text after the root', '<speak></speak>text'],
    ['a doctype (entity expansion)', '<!DOCTYPE speak [<!ENTITY a "b">]><speak>&a;</speak>'],
    ['"--" in a comment', '<speak><!-- a -- b --></speak>'],
    ['"]]>" in text', '<speak>a ]]> b</speak>'],
    ['an empty document', ''],
  ])('refuses %s', (_, xml) => {
    expect(() => parseXml(xml)).toThrow(XmlError)
  })
})

describe('SSML built for Azure', () => {
  it('survives a real XML parser with the text intact, whatever the text holds', () => {
    const input = 'Tom & Jerry say "hi" <b>loud</b> \'quoted\' ]]> &amp; 🎤 \u0007bell'
    const root = parseXml(buildSsml({ input, voice: 'en-US-JennyNeural', speed: 1.25 }))
    expect(root.attributes['xml:lang']).toBe('en-US')
    // The one character XML cannot carry is spoken as a space.
    expect(textOf(root)).toBe(input.replace('\u0007', ' '))
  })
})

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

  it('refuses malformed SSML with 400 and answers well-formed SSML with audio', async () => {
    const post = (ssml: string) => fetch(`${fake.azureUrl}/cognitiveservices/v1`, {
      method: 'POST',
      headers: { 'ocp-apim-subscription-key': 'az-1', 'content-type': 'application/ssml+xml', 'x-microsoft-outputformat': 'riff-8khz-16bit-mono-pcm' },
      body: ssml,
    })
    expect((await post('<speak><voice name="en-US-JennyNeural">Tom & Jerry</voice></speak>')).status).toBe(400)
    const ok = await post(buildSsml({ input: 'Tom & Jerry', voice: 'en-US-JennyNeural' }))
    expect(ok.status).toBe(200)
    expect(fake.requests[1]!.ssml).toEqual({ voice: 'en-US-JennyNeural', lang: 'en-US', text: 'Tom & Jerry' })
    expect(Buffer.from(await ok.arrayBuffer()).equals(fake.requests[1]!.audio!)).toBe(true)
  })
})
