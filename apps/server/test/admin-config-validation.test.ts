import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import type { ConfigKey } from '@airi/api'
import { createAiriClient, type AiriClient } from '@airi/sdk'

import { ADMIN_EMAIL, createVerifiedUser, failure, startTestServer, type TestServer } from './harness.ts'

/**
 * admin.config.set checks what only fails at call time otherwise (SPEC §4.15):
 * every sealed upstream key must decrypt under the master key for its alias and
 * key id, and upstream URLs must use the entry's schemes. Nothing is stored on a
 * refusal.
 */

let server: TestServer
let admin: AiriClient

beforeAll(async () => {
  server = await startTestServer()
  const operator = await createVerifiedUser(server, ADMIN_EMAIL)
  admin = createAiriClient({ baseUrl: server.baseUrl, getToken: () => operator.token })
})
afterAll(async () => {
  await admin?.close()
  await server?.close()
})

const RAW_KEY = 'sk-raw-pasted-key-0123456789'

type Key = { id: string, ciphertext: string }
/** A config value as admin.config.set takes it (any JSON). */
type ConfigInput = Parameters<AiriClient['admin']['config']['set']['mutate']>[0]['value']
const sealed = (alias: string, keyId: string, sealedAs: { alias?: string, keyId?: string } = {}): Key =>
  ({ id: keyId, ciphertext: server.api.services.llmGateway.encryptKey(sealedAs.alias ?? alias, sealedAs.keyId ?? keyId, 'sk-upstream').ciphertext })

/** Each entry that holds keys: a value around one key, the alias that key must be sealed under, and where its ciphertext sits. */
const entries: Array<{ key: ConfigKey, alias: string, path: string, value: (key: Key, url?: string) => ConfigInput, urlPath: string }> = [
  {
    key: 'LLM_ROUTER_CONFIG',
    alias: 'chat',
    path: 'models.chat.upstreams.0.keys.0.ciphertext',
    urlPath: 'models.chat.upstreams.0.baseUrl',
    value: (key, url = 'http://127.0.0.1:9/v1') => ({ models: { chat: { upstreams: [{ id: 'main', baseUrl: url, model: 'gpt-test', keys: [key] }] } } }),
  },
  {
    key: 'TTS_UPSTREAMS',
    alias: 'voice',
    path: 'models.voice.keys.0.ciphertext',
    urlPath: 'models.voice.baseUrl',
    value: (key, url = 'http://127.0.0.1:9/v1') => ({ models: { voice: { adapter: 'openai-compatible', baseUrl: url, model: 'tts-test', keys: [key] } } }),
  },
  {
    key: 'STT_UPSTREAMS',
    alias: 'whisper',
    path: 'models.whisper.keys.0.ciphertext',
    urlPath: 'models.whisper.baseUrl',
    value: (key, url = 'http://127.0.0.1:9/v1') => ({ models: { whisper: { adapter: 'openai-compatible', baseUrl: url, model: 'whisper-test', keys: [key] } } }),
  },
  {
    key: 'STREAMING_TTS_UPSTREAM',
    alias: 'streaming-tts',
    path: 'keys.0.ciphertext',
    urlPath: 'url',
    value: (key, url = 'ws://127.0.0.1:9/ws') => ({ url, keys: [key], models: [{ id: 'tts-stream' }] }),
  },
  {
    key: 'STREAMING_STT_UPSTREAM',
    alias: 'streaming-stt',
    path: 'keys.0.ciphertext',
    urlPath: 'url',
    value: (key, url = 'ws://127.0.0.1:9/realtime') => ({ url, model: 'gpt-4o-transcribe', keys: [key] }),
  },
]

/** The paths a refused set named (and its messages), after checking it is a 400 INVALID_CONFIG_VALUE for `key`. */
async function refused(key: ConfigKey, value: ConfigInput): Promise<{ paths: string[], messages: string[], body: string }> {
  const error = await failure(admin.admin.config.set.mutate({ key, value }))
  expect(error.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CONFIG_VALUE', details: { key } })
  const issues = (error.data?.details as { issues: Array<{ path: Array<string | number>, message: string }> }).issues
  return { paths: issues.map(issue => issue.path.join('.')), messages: issues.map(issue => issue.message), body: JSON.stringify({ message: error.message, data: error.data }) }
}

async function stored(key: ConfigKey): Promise<boolean> {
  return (await admin.admin.config.get.query({ key })).isSet
}

describe.each(entries)('admin.config.set of $key', ({ key, alias, path, urlPath, value }) => {
  it('refuses a raw API key pasted as the ciphertext, naming its path, without echoing it', async () => {
    const { paths, messages, body } = await refused(key, value({ id: 'k0', ciphertext: RAW_KEY }))
    expect(paths).toEqual([path])
    expect(messages[0]).toContain('seal the key for this alias and key id (pnpm airi key seal')
    expect(body).not.toContain(RAW_KEY)
    expect(await stored(key)).toBe(false)
  })

  it('refuses a key sealed for another alias', async () => {
    expect((await refused(key, value(sealed(alias, 'k0', { alias: `${alias}-other` })))).paths).toEqual([path])
    expect(await stored(key)).toBe(false)
  })

  it('refuses a key sealed for another key id', async () => {
    expect((await refused(key, value(sealed(alias, 'k0', { keyId: 'k1' })))).paths).toEqual([path])
    expect(await stored(key)).toBe(false)
  })

  it('refuses an ftp:// upstream URL, naming its path', async () => {
    expect((await refused(key, value(sealed(alias, 'k0'), 'ftp://127.0.0.1/v1'))).paths).toEqual([urlPath])
    expect(await stored(key)).toBe(false)
  })

  it('accepts a key sealed for its alias and key id, and stores it', async () => {
    const key0 = sealed(alias, 'k0')
    const answer = await admin.admin.config.set.mutate({ key, value: value(key0) })
    expect(answer.key).toBe(key)
    expect(await stored(key)).toBe(true)
  })
})

it('names every key that does not decrypt, and only those', async () => {
  const value = { models: { chat: { upstreams: [{ id: 'main', baseUrl: 'https://api.example.com/v1', model: 'gpt-test', keys: [sealed('chat', 'good'), { id: 'raw', ciphertext: RAW_KEY }] }] }, other: { upstreams: [{ id: 'b', baseUrl: 'https://api.example.com/v1', model: 'gpt-test', keys: [sealed('other', 'k0', { alias: 'chat' })] }] } } }
  expect((await refused('LLM_ROUTER_CONFIG', value)).paths).toEqual(['models.chat.upstreams.0.keys.1.ciphertext', 'models.other.upstreams.0.keys.0.ciphertext'])
})

it('refuses an http(s) URL where the streaming transcription upstream needs ws(s)', async () => {
  expect((await refused('STREAMING_STT_UPSTREAM', { url: 'https://127.0.0.1:9/realtime', model: 'm', keys: [sealed('streaming-stt', 'k0')] })).paths).toEqual(['url'])
})
