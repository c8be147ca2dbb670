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
 * A character's chats in stage-web (docs/stage-web.md): new chat, rename, delete, what
 * another device sees, live in its list and its open chat, Back and reload; and messages
 * rendered as Markdown, highlighted and sanitized, with a copy button on code.
 */

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let tts: FakeStreamingTtsUpstream
const clients: AiriClient[] = []

beforeAll(async () => {
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[llm, tts, chromium] = await Promise.all([startFakeOpenAIUpstream({ name: 'chats' }), startFakeStreamingTtsUpstream(), launchChromium()])
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

/** A character whose avatar loads (a missing picture would be a console error), with a greeting if given (a new chat then starts with a message). */
async function characterOf(user: TestUser, name: string, greeting?: string): Promise<string> {
  const created = await sdkOf(user).characters.create.mutate({
    characterId: `${name.toLowerCase()}-${randomUUID().slice(0, 8)}`,
    version: '1',
    coverUrl: `${server.baseUrl}/app/favicon.svg`,
    avatarUrl: `${server.baseUrl}/app/favicon.svg`,
    covers: [],
    capabilities: [],
    avatarModels: [],
    i18n: [{ language: 'en', name, description: `${name} plans trips and remembers every detail of them.` }],
    prompts: [{ language: 'en', type: 'system', content: `You are ${name}.` }, ...(greeting ? [{ language: 'en', type: 'greetings' as const, content: greeting }] : [])],
  })
  return created.id
}

const path = (page: Page) => new URL(page.url()).pathname
const rows = (page: Page) => page.getByTestId('chat-list').locator('li')
const titles = (page: Page) => page.getByTestId('chat-list').locator('li .title').allTextContents()
const ids = (page: Page) => page.getByTestId('chat-list').locator('li').evaluateAll(items => items.map(item => item.getAttribute('data-chat-id')))
const previewOf = (page: Page, chatId: string) => page.locator(`li[data-chat-id="${chatId}"] .preview`).textContent()
const rowOf = (page: Page, chatId: string) => page.locator(`li[data-chat-id="${chatId}"]`)

async function openChats(page: Page, characterId: string, name: string): Promise<void> {
  await page.goto(`${server.baseUrl}/app/characters/${characterId}`)
  await page.getByRole('heading', { level: 1, name }).waitFor()
}

/** New chat, which opens the chat; Back comes to the list again. */
async function newChat(page: Page, characterId: string): Promise<void> {
  await page.getByRole('button', { name: 'New chat' }).click()
  await page.waitForURL(url => url.pathname.startsWith('/app/chats/'))
  await page.goBack()
  await page.waitForURL(url => url.pathname === `/app/characters/${characterId}`)
}

describe('a character\'s chats', () => {
  it('creates, renames and deletes chats; another device sees it live; Back and reload keep the screen', async () => {
    const user = await createVerifiedUser(server)
    const characterId = await characterOf(user, 'Mika')
    const first = await deviceOf(server, chromium, user)
    await openChats(first.page, characterId, 'Mika')
    await first.page.getByText('No chats with Mika yet').waitFor()
    // Owner's character: Edit is offered, and so is the way back to the gallery.
    expect(await first.page.getByRole('link', { name: 'Edit character' }).getAttribute('href')).toBe(`/app/characters/${characterId}/edit`)
    expect(await first.page.getByRole('link', { name: 'All characters' }).getAttribute('href')).toBe('/app/characters')
    await checkA11y(first.page, 'chats-empty')

    await newChat(first.page, characterId)
    await expect.poll(() => rows(first.page).count()).toBe(1)
    await newChat(first.page, characterId)
    await expect.poll(() => rows(first.page).count()).toBe(2)
    const untitled = await titles(first.page)
    expect(untitled.every(title => title.startsWith('Chat of '))).toBe(true)
    expect(await rows(first.page).first().locator('.preview').textContent()).toBe('No messages yet')

    const second = await deviceOf(server, chromium, user)
    await openChats(second.page, characterId, 'Mika')
    await expect.poll(() => rows(second.page).count()).toBe(2)
    await checkA11y(first.page, 'chats-list')
    await chromium.shots(first.page, 'chats-list')

    // Escape leaves the name as it was.
    const [newest, older] = [rows(first.page).nth(0), rows(first.page).nth(1)]
    const olderId = await older.getAttribute('data-chat-id')
    await newest.getByRole('button', { name: 'Rename' }).click()
    await newest.getByRole('textbox').fill('Never mind')
    await newest.getByRole('textbox').press('Escape')
    expect(await newest.locator('.title').textContent()).toBe(untitled[0])
    await expect.poll(() => first.page.evaluate('document.activeElement?.textContent')).toBe('Rename')
    // Enter saves.
    await older.getByRole('button', { name: 'Rename' }).click()
    await older.getByRole('textbox').fill('Trip to Kyoto')
    await older.getByRole('textbox').press('Enter')
    await expect.poll(() => first.page.locator(`li[data-chat-id="${olderId}"] .title`).textContent()).toBe('Trip to Kyoto')

    // Delete asks first; "Keep it" keeps it.
    const doomed = first.page.locator(`li[data-chat-id]:not([data-chat-id="${olderId}"])`)
    await doomed.getByRole('button', { name: 'Delete' }).click()
    await doomed.getByRole('button', { name: 'Keep it' }).click()
    await doomed.getByRole('button', { name: 'Delete' }).click()
    await doomed.getByText(/^Delete “Chat of .+”\? Its messages will be gone on all your devices\.$/).waitFor()
    await chromium.shots(first.page, 'chats-list-confirm')
    await doomed.getByRole('button', { name: 'Delete chat' }).click()
    await expect.poll(() => titles(first.page)).toEqual(['Trip to Kyoto'])
    const stored = (await sdkOf(user).chats.list.query()).filter(chat => chat.type === 'bot')
    expect(stored.map(chat => [chat.id, chat.title])).toEqual([[olderId, 'Trip to Kyoto']])

    // The rename and the deletion reach the other device on the feed, without a reload.
    await expect.poll(() => titles(second.page)).toEqual(['Trip to Kyoto'])

    // A new message arrives on the feed: the row shows its first line at once.
    await sdkOf(user).chats.sendMessages.mutate({ chatId: olderId!, messages: [{ id: randomUUID(), role: 'user', content: '**Which** temples first?\nAnd where to eat.' }] })
    await expect.poll(() => second.page.locator(`li[data-chat-id="${olderId}"] .preview`).textContent()).toBe('You: Which temples first?')
    await expect.poll(() => first.page.locator(`li[data-chat-id="${olderId}"] .preview`).textContent()).toBe('You: Which temples first?')

    // Reload keeps the screen.
    await first.page.reload()
    await first.page.getByRole('heading', { level: 1, name: 'Mika' }).waitFor()
    expect(path(first.page)).toBe(`/app/characters/${characterId}`)
    await expect.poll(() => titles(first.page)).toEqual(['Trip to Kyoto'])

    expect(first.consoleErrors).toEqual([])
    expect(second.consoleErrors).toEqual([])
  })

  it('says when a character does not exist, with a way back', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    await page.goto(`${server.baseUrl}/app/characters/${randomUUID()}`)
    await page.getByRole('heading', { name: 'Character not found' }).waitFor()
    await checkA11y(page, 'chats-character-not-found')
    await page.getByRole('link', { name: 'Back to characters' }).click()
    await page.waitForURL(url => url.pathname === '/app/characters')
    // The server answers 404 on purpose; the app shows it instead of logging it.
    expect(consoleErrors.filter(error => !/status of 404/.test(error))).toEqual([])
  })
})

const HOSTILE_REPLY = [
  '## Your trip',
  '',
  '- Day 1: temples',
  '- Day 2: **markets**',
  '',
  '| Day | Place | Budget (JPY) | Notes on getting there and what to bring along |',
  '|-----|-------|-------------:|-------------------------------------------------|',
  '| 1 | Fushimi Inari Taisha, the thousand gates | 3000 | Early train on the JR Nara line, water, good shoes |',
  '',
  '```ts',
  'const budget: number = 3000 // yen per day',
  'export function total(days: number): number { return budget * days }',
  '```',
  '',
  'See [the guide](https://example.com/kyoto).',
  '',
  '<img src=x onerror="window.__pwned = 1"> <script>window.__pwned = 2</script> [click me](javascript:window.__pwned=3)',
].join('\n')

describe('Markdown in a chat', () => {
  it('renders headings, lists, tables and highlighted code; copies code; hostile bits stay text', async () => {
    const user = await createVerifiedUser(server)
    const characterId = await characterOf(user, 'Rin')
    const sdk = sdkOf(user)
    const chat = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: characterId }] })
    // A client may store its own assistant messages (a reply a local model made).
    await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: randomUUID(), role: 'assistant', content: HOSTILE_REPLY }] })

    const { context, page, consoleErrors } = await deviceOf(server, chromium, user)
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.baseUrl })
    await page.goto(`${server.baseUrl}/app/chats/${chat.id}`)
    const markdown = page.locator('.markdown').filter({ hasText: 'Your trip' })
    await markdown.getByRole('heading', { name: 'Your trip' }).waitFor()

    expect(await markdown.locator('li').allTextContents()).toEqual(['Day 1: temples', 'Day 2: markets'])
    expect(await markdown.locator('table td').first().textContent()).toBe('1')
    expect(await markdown.locator('pre code .hljs-keyword').count()).toBeGreaterThan(0)
    const link = markdown.getByRole('link', { name: 'the guide' })
    expect(await link.getAttribute('href')).toBe('https://example.com/kyoto')
    expect(await link.getAttribute('rel')).toBe('noopener noreferrer')
    expect(await link.getAttribute('target')).toBe('_blank')
    // What an attacker wrote is shown as text and does nothing.
    await markdown.getByText('<img src=x onerror="window.__pwned = 1">', { exact: false }).waitFor()
    expect(await page.locator('img[onerror]').count()).toBe(0)
    expect(await markdown.locator('script').count()).toBe(0)
    expect(await page.locator('a[href^="javascript:"]').count()).toBe(0)
    expect(await page.evaluate('window.__pwned')).toBeUndefined()

    await markdown.getByRole('button', { name: 'Copy code' }).click()
    await page.getByRole('status').filter({ hasText: 'Copied' }).waitFor()
    expect(await page.evaluate('navigator.clipboard.readText()')).toBe([
      'const budget: number = 3000 // yen per day',
      'export function total(days: number): number { return budget * days }',
    ].join('\n'))

    // The wide table scrolls in its own box; the page does not scroll sideways on a phone.
    await page.setViewportSize({ width: 390, height: 844 })
    expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')).toBe(true)
    await page.setViewportSize({ width: 1280, height: 800 })
    await checkA11y(page, 'chat-markdown')
    await chromium.shots(page, 'chats-markdown')
    expect(consoleErrors).toEqual([])
  })
})

describe('a character\'s chats across devices', () => {
  it('shows chats created, messaged, renamed and deleted on another device, in the list and in the open chat', async () => {
    const user = await createVerifiedUser(server)
    const characterId = await characterOf(user, 'Mika', GREETING)
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
