import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from '../harness.ts'
import { deviceOf } from './app.ts'
import { checkA11y, launchChromium, watchedTab, type TestBrowser } from './chromium.ts'

/**
 * A character's chats stay live across devices (docs/stage-web.md, "A character's
 * chats"): chats created, renamed and deleted on one device, and messages sent in
 * them, show on another device's list and open chat without a reload, from the feed's
 * `chat` and `messages` events; the list's previews come with `chats.list` itself.
 */

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let tts: FakeStreamingTtsUpstream
const clients: AiriClient[] = []

beforeAll(async () => {
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[llm, tts, chromium] = await Promise.all([startFakeOpenAIUpstream({ name: 'chats-live' }), startFakeStreamingTtsUpstream(), launchChromium()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  // Configured as in a deployment (the chat screen lists models and voices; nothing here asks them for anything).
  const { config, llmGateway } = server.api.services
  const key = llmGateway.encryptKey('chat', 'k0', 'sk-llm')
  await config.set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'fake', baseUrl: llm.url, model: 'fake-model', keys: [{ id: key.keyId, ciphertext: key.ciphertext }] }] } } })
  const ttsKey = llmGateway.encryptKey('streaming-tts', 'k0', 'sk-tts')
  await config.set('STREAMING_TTS_UPSTREAM', { url: tts.url, keys: [{ id: ttsKey.keyId, ciphertext: ttsKey.ciphertext }], models: [{ id: 'seed-tts-2.0' }] })
}, 180_000)

afterAll(async () => {
  await Promise.all(clients.map(sdk => sdk.close()))
  await chromium?.close()
  await server?.close()
  await Promise.all([llm?.close(), tts?.close()])
})

function sdkOf(user: TestUser): AiriClient {
  const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
  clients.push(sdk)
  return sdk
}

const GREETING = 'Hello again! Where are we going next?'

/** A character with a greeting, so a new chat starts with a message (its avatar loads: a missing picture would be a console error). */
async function characterOf(user: TestUser, name: string): Promise<string> {
  const created = await sdkOf(user).characters.create.mutate({
    characterId: `${name.toLowerCase()}-${randomUUID().slice(0, 8)}`,
    version: '1',
    coverUrl: `${server.baseUrl}/app/favicon.svg`,
    avatarUrl: `${server.baseUrl}/app/favicon.svg`,
    covers: [],
    capabilities: [],
    avatarModels: [],
    i18n: [{ language: 'en', name, description: `${name} plans trips.` }],
    prompts: [{ language: 'en', type: 'system', content: `You are ${name}.` }, { language: 'en', type: 'greetings', content: GREETING }],
  })
  return created.id
}

const titles = (page: Page) => page.getByTestId('chat-list').locator('li .title').allTextContents()
const ids = (page: Page) => page.getByTestId('chat-list').locator('li').evaluateAll(items => items.map(item => item.getAttribute('data-chat-id')))
const previewOf = (page: Page, chatId: string) => page.locator(`li[data-chat-id="${chatId}"] .preview`).textContent()
const rowOf = (page: Page, chatId: string) => page.locator(`li[data-chat-id="${chatId}"]`)

async function openChats(page: Page, characterId: string, name: string): Promise<void> {
  await page.goto(`${server.baseUrl}/app/characters/${characterId}`)
  await page.getByRole('heading', { level: 1, name }).waitFor()
}

describe('a character\'s chats across devices', () => {
  it('shows chats created, messaged, renamed and deleted on another device, in the list and in the open chat', async () => {
    const user = await createVerifiedUser(server)
    const characterId = await characterOf(user, 'Mika')
    const sdk = sdkOf(user)
    const first = await deviceOf(server, chromium, user)
    const second = await deviceOf(server, chromium, user)
    // The second device has the list in one tab and (later) the chat in another.
    const list = second.page
    const pulls: string[] = []
    list.on('request', request => void (request.url().includes('pullMessages') && pulls.push(request.url())))
    await openChats(list, characterId, 'Mika')
    await list.getByText('No chats with Mika yet').waitFor()
    await openChats(first.page, characterId, 'Mika')

    // Device 1 starts a chat: device 2's list shows it, with the greeting as its preview.
    await first.page.getByRole('button', { name: 'New chat' }).click()
    await first.page.waitForURL(url => url.pathname.startsWith('/app/chats/'))
    const trip = first.page.url().split('/').at(-1)!
    await expect.poll(() => ids(list)).toEqual([trip])
    await expect.poll(() => previewOf(list, trip)).toBe(GREETING)

    // Another chat made elsewhere (here, the SDK) goes on top.
    const other = await sdk.chats.create.mutate({ type: 'bot', title: 'Packing list', members: [{ type: 'character', id: characterId }] })
    await expect.poll(() => ids(list)).toEqual([other.id, trip])
    // A chat with another character stays out of this list.
    const stranger = await characterOf(user, 'Noa')
    await sdk.chats.create.mutate({ type: 'bot', title: 'Elsewhere', members: [{ type: 'character', id: stranger }] })

    // A message sent in the older chat moves it to the top with its first line.
    await sdk.chats.sendMessages.mutate({ chatId: trip, messages: [{ id: randomUUID(), role: 'user', content: '**Which** temples first?\nAnd where to eat.' }] })
    await expect.poll(() => ids(list)).toEqual([trip, other.id])
    await expect.poll(() => previewOf(list, trip)).toBe('You: Which temples first?')
    expect(await titles(list)).toEqual([expect.stringMatching(/^Chat of /), 'Packing list'])
    // Previews came with `chats.list`: nothing was pulled chat by chat.
    expect(pulls).toEqual([])

    // Device 2 opens the chat in another tab; device 1 renames it from its list.
    const chat = await watchedTab(second.context)
    await chat.page.goto(`${server.baseUrl}/app/chats/${trip}`)
    await chat.page.getByText('And where to eat.', { exact: false }).waitFor()
    expect(await chat.page.getByTestId('chat-title').textContent()).toMatch(/^Chat of /)
    await first.page.goBack()
    await first.page.waitForURL(url => url.pathname === `/app/characters/${characterId}`)
    await rowOf(first.page, trip).getByRole('button', { name: 'Rename' }).click()
    await rowOf(first.page, trip).getByRole('textbox').fill('Trip to Kyoto')
    await rowOf(first.page, trip).getByRole('textbox').press('Enter')
    await expect.poll(() => titles(list)).toEqual(['Trip to Kyoto', 'Packing list'])
    await expect.poll(() => chat.page.getByTestId('chat-title').textContent()).toBe('Trip to Kyoto')
    await chromium.shots(chat.page, 'chat-renamed')
    // The preview stays what it was.
    expect(await previewOf(list, trip)).toBe('You: Which temples first?')

    // Device 1 deletes it: it leaves device 2's list, and the open chat says so with the way back.
    await rowOf(first.page, trip).getByRole('button', { name: 'Delete' }).click()
    await rowOf(first.page, trip).getByRole('button', { name: 'Delete chat' }).click()
    await expect.poll(() => ids(list)).toEqual([other.id])
    const gone = chat.page.getByTestId('chat-deleted')
    await gone.getByRole('heading', { name: 'This chat was deleted on another device.' }).waitFor()
    expect(await chat.page.getByRole('textbox', { name: 'Message' }).count()).toBe(0)
    await checkA11y(chat.page, 'chat-deleted')
    await chromium.shots(chat.page, 'chat-deleted')
    await gone.getByRole('link', { name: 'Back to your chats with Mika' }).click()
    await chat.page.waitForURL(url => url.pathname === `/app/characters/${characterId}`)
    await expect.poll(() => titles(chat.page)).toEqual(['Packing list'])

    expect(first.consoleErrors).toEqual([])
    expect(second.consoleErrors).toEqual([])
    expect(chat.consoleErrors).toEqual([])
  })
})
