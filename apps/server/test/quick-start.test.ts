import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { DEFAULT_CONTENT, startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { buildLauncher, startServerProcess, type ServerProcess } from './server-process.ts'

/** Signs up through the real flow: the verification link comes from the log (no RESEND_API_KEY), then sign-in. */
async function signUp(server: ServerProcess, email: string): Promise<string> {
  const password = 'correct horse battery staple'
  // better-auth refuses a sign-up or sign-in from no trusted origin; the server trusts its own.
  const post = (path: string, body: object) => fetch(`${server.baseUrl}/api/auth${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'origin': server.baseUrl }, body: JSON.stringify(body) })
  const created = await post('/sign-up/email', { email, password, name: 'quick' })
  expect(created.ok, await created.clone().text()).toBe(true)
  const mailLine = () => server.output().split('\n').find(line => line.includes('e-mail (dev transport: not sent)') && line.includes(email))
  await until(() => mailLine() !== undefined, 'the verification e-mail in the log')
  const link = /https?:\/\/\S+/.exec((JSON.parse(mailLine()!) as { text: string }).text)![0]
  expect((await fetch(link, { redirect: 'manual' })).status).toBeLessThan(400)
  const signIn = await post('/sign-in/email', { email, password })
  expect(signIn.ok, await signIn.clone().text()).toBe(true)
  return signIn.headers.get('set-auth-token')!
}

const storedEntry = (database: TestDatabase, key: string) => database.db.selectFrom('config_entries').select(['value', 'updated_at']).where('key', '=', key).executeTakeFirst()

beforeAll(() => buildLauncher(['main']), 300_000)

describe('OPENAI_API_KEY=… pnpm start', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'airi-quick-start-'))
  let database: TestDatabase
  let llm: FakeUpstream
  let tts: FakeTtsUpstream
  const running: ServerProcess[] = []

  beforeAll(async () => {
    database = await createTestDatabase()
    llm = await startFakeOpenAIUpstream()
    tts = await startFakeTtsUpstream()
  })
  afterAll(async () => {
    await Promise.all(running.map(server => server.stop()))
    await database.drop()
    await llm.close()
    await tts.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  // Like the embedded default: no LLM_ROUTER_MASTER_KEY, so the one generated under DATA_DIR seals the key.
  const baseEnv = () => ({ DATABASE_URL: database.url, DATA_DIR: dataDir })

  let token: string
  let stored: Awaited<ReturnType<typeof storedEntry>>

  it('configures the alias chat from OPENAI_API_KEY, and the official client chats through it; the key is never logged', async () => {
    const first = await startServerProcess({ ...baseEnv(), OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: llm.url, OPENAI_MODEL: 'upstream-model' })
    running.push(first)
    expect(first.output()).toContain(`configured the model alias chat from OPENAI_API_KEY (upstream-model at ${llm.url})`)

    token = await signUp(first, 'quick-start@example.com')
    const client = new OpenAI({ apiKey: token, baseURL: `${first.baseUrl}/api/v1/openai`, maxRetries: 0 })
    const completion = await client.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Hello?' }] })
    expect(completion.choices[0]!.message.content).toBe(DEFAULT_CONTENT)
    expect(llm.requests.map(request => ({ key: request.key, model: request.body?.model }))).toEqual([{ key: 'sk-test', model: 'upstream-model' }])

    stored = await storedEntry(database, 'LLM_ROUTER_CONFIG')
    expect(stored?.value).toMatchObject({ defaultModel: 'chat', models: { chat: { upstreams: [{ baseUrl: llm.url, model: 'upstream-model' }] } } })
    expect(JSON.stringify(stored?.value)).not.toContain('sk-test')
    expect(await first.stop(), first.output()).toBe(0)
    expect(first.output()).not.toContain('sk-test')
  }, 120_000)

  it('leaves a stored LLM_ROUTER_CONFIG untouched on the next start, and configures speech from OPENAI_TTS_MODEL', async () => {
    expect(stored, 'the first start stored LLM_ROUTER_CONFIG').toBeDefined()
    const second = await startServerProcess({ ...baseEnv(), OPENAI_API_KEY: 'sk-second', OPENAI_BASE_URL: tts.url, OPENAI_TTS_MODEL: 'upstream-tts' })
    running.push(second)
    expect(second.output()).toContain('OPENAI_API_KEY is ignored: LLM_ROUTER_CONFIG is already stored')
    expect(second.output()).toContain(`configured the speech alias voice from OPENAI_API_KEY (upstream-tts at ${tts.url})`)
    expect(await storedEntry(database, 'LLM_ROUTER_CONFIG')).toEqual(stored)

    const chat = new OpenAI({ apiKey: token, baseURL: `${second.baseUrl}/api/v1/openai`, maxRetries: 0 })
    await chat.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Still there?' }] })
    expect(llm.requests.at(-1)).toMatchObject({ key: 'sk-test', body: { model: 'upstream-model' } })

    const speech = new OpenAI({ apiKey: token, baseURL: `${second.baseUrl}/api/v1`, maxRetries: 0 })
    const audio = await speech.audio.speech.create({ model: 'voice', voice: 'alloy', input: 'Hello there.', response_format: 'wav' })
    expect(Buffer.from(await audio.arrayBuffer()).subarray(0, 4).toString('ascii')).toBe('RIFF')
    expect(tts.requests.filter(request => request.method === 'POST').map(request => ({ key: request.key, model: request.body?.model }))).toEqual([{ key: 'sk-second', model: 'upstream-tts' }])

    expect(await second.stop(), second.output()).toBe(0)
    expect(second.output()).not.toContain('sk-second')
  }, 120_000)
})
