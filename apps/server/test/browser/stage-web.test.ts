import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'
import { until } from '@airi/tooling/test/until'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from '../harness.ts'
import { createCharacter as createCharacterOf, deviceOf as deviceOfUser, recordStreamingTexts } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

const INITIAL = 100

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let tts: FakeStreamingTtsUpstream

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[llm, tts, chromium] = await Promise.all([startFakeOpenAIUpstream({ name: 'stage-web' }), startFakeStreamingTtsUpstream(), launchChromium()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  // Operator config, as an admin would set it: the LLM alias and the streaming voice (top-ups: flux.test.ts).
  const { config, llmGateway } = server.api.services
  const sealed = (alias: string, apiKey: string) => llmGateway.encryptKey(alias, 'k0', apiKey)
  const llmKey = sealed('chat', 'sk-llm')
  await config.set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'fake', baseUrl: llm.url, model: 'fake-model', keys: [{ id: llmKey.keyId, ciphertext: llmKey.ciphertext }] }] } } })
  const ttsKey = sealed('streaming-tts', 'sk-tts')
  await config.set('STREAMING_TTS_UPSTREAM', { url: tts.url, keys: [{ id: ttsKey.keyId, ciphertext: ttsKey.ciphertext }], models: [{ id: 'seed-tts-2.0' }] })
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await Promise.all([llm?.close(), tts?.close()])
})

const deviceOf = (user: TestUser) => deviceOfUser(server, chromium, user)
const createCharacter = (user: TestUser, name: string) => createCharacterOf(server, user, name)

/** A new bot chat with `characterId`, opened on `page` (a chat is a URL), live and loaded. */
async function openChat(page: Page, user: TestUser, characterId: string, chatId?: string): Promise<string> {
  const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
  chatId ??= (await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: characterId }] })).id
  await page.goto(`${server.baseUrl}/app/chats/${chatId}`)
  await page.locator('[data-live="on"]').waitFor()
  await page.locator('[role="feed"][aria-busy="false"]').waitFor({ state: 'attached' })
  return chatId
}

/** "Speak replies" in the header's voice panel. */
async function speakReplies(page: Page, on: boolean): Promise<void> {
  await page.getByTestId('voice-settings').click()
  await page.getByTestId('speak-replies').setChecked(on)
  await page.getByTestId('voice-settings').click()
}

const composer = (page: Page) => page.getByRole('textbox', { name: 'Message', exact: true })
const contentOf = (page: Page, selector: string) => page.locator(selector).getByTestId('message-content').textContent().then(text => text?.trim())
const headerFlux = async (page: Page) => Number(await page.getByTestId('header-balance').getAttribute('data-flux'))
const audioBytes = async (page: Page) => Number(await page.getByTestId('voice-status').getAttribute('data-audio-bytes') ?? 0)
const fakeAudioBytes = (session: { audio: Buffer[] }) => session.audio.reduce((sum, chunk) => sum + chunk.length, 0)
const signedAmount = (row: { type: string, amount: number }) => row.type === 'debit' ? -row.amount : row.amount

describe('stage-web in Chromium', () => {
  it('streams a reply token by token, stores it, bills exactly the ledger\'s amount, and shows both messages live on a second device', async () => {
    const user = await createVerifiedUser(server)
    await createCharacter(user, 'Airi')
    const kiki = await createCharacter(user, 'Kiki')
    const first = await deviceOf(user)
    const second = await deviceOf(user)
    const { page } = first

    // Kiki's chat open on both devices.
    const chatId = await openChat(page, user, kiki)
    await page.getByText('No messages yet. Say hello to Kiki.').waitFor()
    await openChat(second.page, user, kiki, chatId)
    await second.page.getByText('No messages yet. Say hello to Kiki.').waitFor()
    await speakReplies(page, false)
    expect(await headerFlux(page)).toBe(INITIAL)
    const seqBefore = (await server.database.db.selectFrom('flux_transaction').select(eb => eb.fn.max('seq').as('seq')).where('user_id', '=', user.id).executeTakeFirst())?.seq ?? 0

    const reply = 'Hi! I am Kiki, and I answer one word at a time.'
    llm.behave(() => ({ kind: 'complete', content: reply, usage: { prompt_tokens: 400, completion_tokens: 700 }, chunkDelayMs: 80 }))
    await recordStreamingTexts(page)
    // Shift+Enter breaks the line; Enter sends.
    await composer(page).fill('Hello')
    await composer(page).press('Shift+Enter')
    await composer(page).pressSequentially('Kiki')
    expect(await composer(page).inputValue()).toBe('Hello\nKiki')
    await composer(page).press('Enter')

    const stored = page.locator('[data-testid="messages"] [data-role="assistant"]')
    await stored.getByText(reply, { exact: true }).waitFor()
    await expect.poll(() => page.getByTestId('streaming-reply').count()).toBe(0)
    expect(await composer(page).inputValue()).toBe('')
    const texts = await page.evaluate('window.__replyTexts') as string[]
    const partial = [...new Set(texts.map(text => text.trim()))].filter(text => text !== '' && text !== reply)
    // Several growing prefixes of the reply were on screen before the whole of it.
    expect(partial.length).toBeGreaterThan(1)
    for (const text of partial)
      expect(reply.startsWith(text)).toBe(true)
    // Each message carries its time (today: the time of day; the full date in its tooltip).
    const times = await page.locator('[data-testid="messages"] time').evaluateAll(items => items.map(item => [item.getAttribute('datetime'), item.getAttribute('title'), item.textContent]))
    expect(times).toHaveLength(2)
    for (const [datetime, title, text] of times) {
      expect(Number.isNaN(Date.parse(datetime!))).toBe(false)
      expect(title).toMatch(/\d{4}/)
      expect(text).toMatch(/^\d{1,2}:\d{2}/)
    }
    await checkA11y(page, 'the chat screen with a reply')
    await page.emulateMedia({ colorScheme: 'dark' })
    await checkA11y(page, 'the chat screen with a reply, dark')
    await page.emulateMedia({ colorScheme: 'light' })

    // The ledger: the gateway's reservation and settlement for this one call, 400 + 700 tokens → 2 Flux.
    const rows = await server.database.db.selectFrom('flux_transaction').selectAll().where('user_id', '=', user.id).where('seq', '>', seqBefore).orderBy('seq').execute()
    const spent = -rows.reduce((sum, row) => sum + signedAmount(row), 0)
    expect(spent).toBe(2)
    expect(rows.every(row => row.request_id?.startsWith('llm:'))).toBe(true)
    await expect.poll(() => headerFlux(page)).toBe(INITIAL - spent)
    expect(await server.api.services.billing.getBalance(user.id)).toBe(INITIAL - spent)

    // The chat holds both messages, and the second device shows them without a reload.
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    const history = await sdk.flux.history.query({ limit: 10 })
    expect(history.items.filter(item => item.requestId?.startsWith('llm:')).reduce((sum, item) => sum + signedAmount(item), 0)).toBe(-spent)
    const chat = (await sdk.chats.list.query()).find(item => item.members.some(member => member.id === kiki))
    const { messages } = await sdk.chats.pullMessages.query({ chatId: chat!.id })
    expect(messages.map(message => [message.role, message.content])).toEqual([['user', 'Hello\nKiki'], ['assistant', reply]])
    const other = second.page.locator('[data-testid="messages"] [data-role]')
    await other.filter({ hasText: reply }).waitFor()
    expect(await other.evaluateAll(items => items.map(item => [item.getAttribute('data-role'), item.querySelector('[data-testid="message-content"]')?.textContent?.trim()]))).toEqual([['user', 'Hello\nKiki'], ['assistant', reply]])
    await expect.poll(() => headerFlux(second.page)).toBe(INITIAL - spent)

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Flux' }).click()
    await page.getByTestId('flux-history').getByText(/^−\d+$/).first().waitFor()
    expect([...first.consoleErrors, ...second.consoleErrors]).toEqual([])
  })

  it('speaks the reply through Web Audio as it streams; Stop voice ends the speech session, and Stop ends the reply and keeps its partial text', async () => {
    const user = await createVerifiedUser(server)
    const airi = await createCharacter(user, 'Airi')
    const { page, consoleErrors } = await deviceOf(user)
    await openChat(page, user, airi)
    await page.getByText('No messages yet. Say hello to Airi.').waitFor()
    // Replies are spoken unless the person says otherwise (once the voice catalogue is in).
    await page.getByTestId('voice-status').waitFor({ state: 'attached' })
    expect(await page.getByTestId('speak-replies').isChecked()).toBe(true)
    tts.reset()

    // A whole reply: every byte the fake spoke reached the page's audio pipeline.
    llm.behave(() => ({ kind: 'complete', content: 'Hello there. How are you today?', chunkDelayMs: 20 }))
    await composer(page).fill('Say hello')
    await page.getByRole('button', { name: 'Send' }).click()
    await page.locator('[data-role="assistant"]').getByText('Hello there. How are you today?').waitFor()
    await until(() => tts.sessions[0]?.closed === true, 'the first speech session to end')
    const spoken = tts.sessions[0]!
    expect(spoken).toMatchObject({ finished: true, cancelled: false, start: { model: 'seed-tts-2.0', response_format: 'pcm' } })
    expect(spoken.texts.join('')).toBe('Hello there. How are you today?')
    await expect.poll(() => audioBytes(page)).toBe(fakeAudioBytes(spoken))
    expect(fakeAudioBytes(spoken)).toBeGreaterThan(0)

    // A reply that stops coming after its first sentence: that sentence is on screen and heard, then Stop.
    llm.behave(() => ({ kind: 'complete', content: 'Sure thing. I will keep talking until you stop me.', stallAfter: 2 }))
    await composer(page).fill('Talk to me')
    await page.getByRole('button', { name: 'Send' }).click()
    await page.getByTestId('streaming-reply').getByText('Sure thing.', { exact: true }).waitFor()
    await until(() => tts.sessions.length === 2 && tts.sessions[1]!.audio.length > 0, 'the second session\'s first audio')
    const talking = tts.sessions[1]!
    await expect.poll(() => audioBytes(page)).toBe(fakeAudioBytes(talking))
    expect(await page.getByTestId('voice-status').getAttribute('data-speaking')).toBe('true')
    // A person sees that it speaks, not how many bytes it got.
    await page.getByTestId('voice-status').getByText('Speaking…').waitFor()
    expect(await page.getByTestId('voice-status').textContent()).not.toMatch(/bytes|KiB/)
    await chromium.shots(page, 'chat-voice')

    // Stop voice silences this device; the reply goes on being written.
    await page.getByTestId('voice-stop').click()
    await until(() => talking.closed, 'the speech session to close')
    expect(talking).toMatchObject({ cancelled: true, finished: false })
    await expect.poll(() => page.getByTestId('voice-stop').count()).toBe(0)
    expect(llm.requests.at(-1)!.aborted).toBe(false)
    await page.getByTestId('streaming-reply').waitFor()

    // Stop ends the reply on the server: the upstream call is abandoned, the partial reply stays, marked.
    await page.getByTestId('stop-reply').click()
    await until(() => llm.requests.at(-1)!.aborted, 'the LLM stream to be abandoned')
    await page.getByTestId('streaming-reply').waitFor({ state: 'detached' })
    await expect.poll(() => contentOf(page, '[data-role="assistant"][data-status="stopped"]')).toBe('Sure thing.')
    expect(tts.sessions).toHaveLength(2)
    expect(await page.getByRole('alert').count()).toBe(0)
    expect(consoleErrors).toEqual([])
  })
})
