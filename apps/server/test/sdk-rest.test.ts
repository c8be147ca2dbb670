import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { AiriError, createAiriClient } from '@airi/sdk'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

// `client.rest` (docs/sdk.md): the REST routes stage-web reads besides tRPC, against the
// real server — catalogues, one-shot speech, downloads — and how each one fails; and the
// client's language option.

let server: TestServer
let tts: FakeTtsUpstream
let user: TestUser

beforeAll(async () => {
  tts = await startFakeTtsUpstream()
  server = await startTestServer()
  user = await createVerifiedUser(server)
}, 120_000)

afterAll(async () => {
  await server?.close()
  await tts?.close()
})

const clientOf = (token: string | null) => createAiriClient({ baseUrl: server.baseUrl, getToken: () => token })

async function rejection(promise: Promise<unknown>): Promise<AiriError> {
  const error = await promise.then(() => undefined, (cause: unknown) => cause)
  expect(error).toBeInstanceOf(AiriError)
  return error as AiriError
}

describe('the SDK\'s REST helpers', () => {
  it('say "not configured" in one error shape (meta.features says it first), then list priced models and voices, and speak', async () => {
    const client = clientOf(user.token)
    const { rest } = client
    // What a client asks first, so it offers only what is set up (no probing for a 503).
    expect(await client.meta.features.query()).toEqual({ chat: false, speech: false, streamingSpeech: false, transcription: false, streamingTranscription: false, topUps: false })
    const unconfigured = await rejection(rest.models())
    expect([unconfigured.status, unconfigured.code]).toEqual([503, 'CONFIG_NOT_SET'])

    // A key is sealed for its alias.
    const keysOf = (alias: string) => {
      const { keyId, ciphertext } = server.api.services.llmGateway.encryptKey(alias, 'k0', `sk-${alias}`)
      return [{ id: keyId, ciphertext }]
    }
    await server.api.services.config.set('LLM_ROUTER_CONFIG', {
      defaultModel: 'chat',
      models: {
        chat: { upstreams: [{ id: 'a', baseUrl: tts.url, model: 'm', keys: keysOf('chat') }], pricing: { inputPer1M: 2000, outputPer1M: 8000 } },
        plain: { upstreams: [{ id: 'b', baseUrl: tts.url, model: 'm', keys: keysOf('plain') }] },
      },
    })
    const voiceKey = server.api.services.llmGateway.encryptKey('voice', 'k0', 'sk-voice')
    await server.api.services.config.set('TTS_UPSTREAMS', { defaultModel: 'voice', models: { voice: { adapter: 'openai-compatible', baseUrl: tts.url, model: 'upstream-tts', keys: [{ id: voiceKey.keyId, ciphertext: voiceKey.ciphertext }] } } })

    expect(await client.meta.features.query()).toMatchObject({ chat: true, speech: true, streamingSpeech: false })
    const models = await rest.models()
    expect(models.map(model => [model.id, model.pricing?.inputPer1M ?? null])).toEqual([['chat', 2000], ['plain', null]])
    expect((await rest.speechModels()).models.map(model => model.id)).toEqual(['voice'])
    const voices = await rest.voices({ model: 'voice' })
    expect(voices.length).toBeGreaterThan(0)
    const audio = await rest.speech({ model: 'voice', voice: voices[0]!.id, input: 'Hello there.' })
    expect(audio.size).toBeGreaterThan(0)

    const refused = await rejection(rest.speech({ model: 'nope', voice: voices[0]!.id, input: 'Hello.' }))
    expect(refused.status).toBe(404)
    const noStreaming = await rejection(rest.voices({ streaming: true }))
    expect([noStreaming.status, noStreaming.code]).toEqual([503, 'CONFIG_NOT_SET'])
  })

  it('downloads the account export and a character card under the server\'s file names; without a token, 401', async () => {
    const client = clientOf(user.token)
    const character = await client.characters.create.mutate({
      characterId: 'mira', version: '1', coverUrl: 'https://example.com/c.png', avatarUrl: 'https://example.com/a.png', covers: [], capabilities: [], avatarModels: [],
      i18n: [{ language: 'en', name: 'Mira', description: 'A test character.' }],
      prompts: [{ language: 'en', type: 'system', content: 'You are Mira.' }],
    })
    const card = await client.rest.characterCard(character.id, 'json')
    expect(card.fileName).toMatch(/\.card\.json$/)
    expect(JSON.parse(await card.blob.text())).toMatchObject({ spec: 'chara_card_v3', data: { name: 'Mira' } })

    const exported = await client.rest.exportAccount()
    expect(exported.fileName).toMatch(/\.json$/)
    expect(JSON.parse(await exported.blob.text())).toMatchObject({ format: 'airi-account-export' })

    const anonymous = await rejection(clientOf(null).rest.exportAccount())
    expect(anonymous.status).toBe(401)
  })

  it('sends the person\'s language, so a new chat opens on the greeting in it', async () => {
    const client = clientOf(user.token)
    const character = await client.characters.create.mutate({
      characterId: 'lin', version: '1', coverUrl: 'https://example.com/c.png', avatarUrl: 'https://example.com/a.png', covers: [], capabilities: [], avatarModels: [],
      i18n: [{ language: 'en', name: 'Lin', description: '' }, { language: 'zh-CN', name: '琳', description: '' }],
      prompts: [{ language: 'en', type: 'greetings', content: 'Hello!' }, { language: 'zh-CN', type: 'greetings', content: '你好！' }],
    })
    const greetingIn = async (language: string) => {
      const speaking = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, getLanguage: () => language })
      const chat = await speaking.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: character.id }] })
      return (await speaking.chats.pullMessages.query({ chatId: chat.id, afterSeq: 0, limit: 10 })).messages.map(message => message.content)
    }
    expect(await greetingIn('zh-CN')).toEqual(['你好！'])
    expect(await greetingIn('en')).toEqual(['Hello!'])
  })
})
