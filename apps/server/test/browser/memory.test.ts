import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import type { Locator, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from '../harness.ts'
import { createCharacter as createCharacterOf, deviceOf } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

/**
 * The person's control over what a character remembers, in stage-web
 * (docs/stage-web.md#memory): the Memory screen (add, edit, delete after asking,
 * search, the switch, Load more, the limit said in words), its list kept live on
 * another device, and the "remembered" note under a reply when the server extracted
 * something from that turn.
 */

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
const clients: AiriClient[] = []

beforeAll(async () => {
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[llm, chromium] = await Promise.all([startFakeOpenAIUpstream({ name: 'memory' }), launchChromium()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  const { config, llmGateway } = server.api.services
  const key = llmGateway.encryptKey('chat', 'k0', 'sk-llm')
  await config.set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'fake', baseUrl: llm.url, model: 'fake-model', keys: [{ id: key.keyId, ciphertext: key.ciphertext }] }] } } })
  // Extraction asks the same fake, which answers JSON-mode requests with the person's sentences about themselves.
  await config.set('MEMORY_EXTRACTION_MODEL', 'chat')
}, 180_000)

afterAll(async () => {
  await Promise.all(clients.map(sdk => sdk.close()))
  await chromium?.close()
  await server?.close()
  await llm?.close()
})

function sdkOf(user: TestUser): AiriClient {
  const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
  clients.push(sdk)
  return sdk
}

const createCharacter = (user: TestUser, name: string) => createCharacterOf(server, user, name)
const memoryUrl = (characterId: string) => `${server.baseUrl}/app/characters/${characterId}/memory`
const list = (page: Page) => page.getByTestId('memory-list')
const contents = (page: Page) => page.locator('[data-testid="memory-list"] [data-testid="memory-content"]').allTextContents()
/** The row of the memory that says `text`, by its id (so it is still found while edited). */
async function item(page: Page, text: string): Promise<Locator> {
  const id = await list(page).locator('li').filter({ has: page.getByTestId('memory-content').getByText(text, { exact: true }) }).getAttribute('data-memory-id')
  return list(page).locator(`li[data-memory-id="${id}"]`)
}
const addField = (page: Page, name: string) => page.getByLabel(`Something ${name} should remember about you`)

/** A device of `user` on the Memory screen of `characterId`, its list read. */
async function memoryDevice(user: TestUser, characterId: string, name: string) {
  const device = await deviceOf(server, chromium, user)
  await device.page.goto(memoryUrl(characterId))
  await device.page.getByRole('heading', { level: 1, name: `What ${name} remembers` }).waitFor()
  await device.page.locator('[data-testid="memory-empty"], [data-testid="memory-list"]').first().waitFor()
  await device.page.locator('[data-testid="memory-enabled"]:not([disabled])').waitFor()
  return device
}

describe('memory in stage-web', () => {
  it('adds, edits, searches and deletes memories, switches memory off and on, and another device follows without a reload', async () => {
    const user = await createVerifiedUser(server)
    const characterId = await createCharacter(user, 'Nori')
    const sdk = sdkOf(user)

    // The way in: the character's chats screen.
    const first = await deviceOf(server, chromium, user)
    const { page } = first
    await page.goto(`${server.baseUrl}/app/characters/${characterId}`)
    await page.getByText('No chats with Nori yet').waitFor()
    await page.getByRole('link', { name: /^Memory/ }).click()
    await page.waitForURL(url => url.pathname === `/app/characters/${characterId}/memory`)
    await page.getByRole('heading', { level: 1, name: 'What Nori remembers' }).waitFor()
    await page.getByTestId('memory-empty').getByText('Nori does not remember anything about you yet.').waitFor()
    expect(await page.getByRole('switch', { name: 'Remember things about me' }).isChecked()).toBe(true)
    await checkA11y(page, 'the memory screen, empty')
    await chromium.shots(page, 'memory-empty')

    const second = await memoryDevice(user, characterId, 'Nori')

    // Add, with an importance; Enter adds too.
    await addField(page, 'Nori').fill('I am vegetarian.')
    await page.getByLabel('Importance', { exact: true }).selectOption({ label: '5 — essential' })
    await page.getByRole('button', { name: 'Add', exact: true }).click()
    await expect.poll(() => contents(page)).toEqual(['I am vegetarian.'])
    await expect.poll(() => addField(page, 'Nori').inputValue()).toBe('')
    await addField(page, 'Nori').fill('My sister is called Anna.')
    await addField(page, 'Nori').press('Enter')
    await expect.poll(() => contents(page)).toEqual(['My sister is called Anna.', 'I am vegetarian.'])
    const vegetarian = await item(page, 'I am vegetarian.')
    expect(await vegetarian.getByRole('img').getAttribute('aria-label')).toBe('Importance 5 of 5: essential')
    expect(await vegetarian.getByTestId('memory-source').textContent()).toBe('Written by you')
    expect(await vegetarian.textContent()).toContain('Not used in a reply yet')
    // The other device, which did nothing, shows them newest first.
    await expect.poll(() => contents(second.page)).toEqual(['My sister is called Anna.', 'I am vegetarian.'])

    // Edit in place: Escape keeps it as it was, Save stores the new text and importance.
    await vegetarian.getByRole('button', { name: 'Edit' }).click()
    await vegetarian.getByRole('textbox').fill('Never mind')
    await vegetarian.getByRole('textbox').press('Escape')
    expect(await contents(page)).toEqual(['My sister is called Anna.', 'I am vegetarian.'])
    await vegetarian.getByRole('button', { name: 'Edit' }).click()
    await vegetarian.getByRole('textbox').fill('I am vegan.')
    await vegetarian.getByLabel('Importance', { exact: true }).selectOption('4')
    await vegetarian.getByRole('button', { name: 'Save' }).click()
    await expect.poll(() => contents(page)).toEqual(['My sister is called Anna.', 'I am vegan.'])
    await expect.poll(() => contents(second.page)).toEqual(['My sister is called Anna.', 'I am vegan.'])
    expect(await (await item(second.page, 'I am vegan.')).getByRole('img').getAttribute('aria-label')).toBe('Importance 4 of 5: high')
    const stored = await sdk.memory.list.query({ characterId })
    expect(stored.items.map(memory => [memory.content, memory.importance, memory.source])).toEqual([['My sister is called Anna.', 3, 'user'], ['I am vegan.', 4, 'user']])

    // Search, and back to the list when the box is cleared.
    await page.getByRole('searchbox', { name: 'Search memories' }).fill('vegan')
    await expect.poll(() => page.getByTestId('memory-search-summary').textContent()).toContain('One memory matches “vegan”.')
    expect(await contents(page)).toEqual(['I am vegan.'])
    await page.getByRole('searchbox', { name: 'Search memories' }).fill('tennis')
    await expect.poll(() => page.getByTestId('memory-search-summary').textContent()).toContain('Nothing remembered matches “tennis”.')
    await page.getByRole('button', { name: 'Show all' }).click()
    await expect.poll(() => contents(page)).toEqual(['My sister is called Anna.', 'I am vegan.'])

    await checkA11y(page, 'the memory screen with memories')
    await page.emulateMedia({ colorScheme: 'dark' })
    await checkA11y(page, 'the memory screen with memories, dark')
    await page.emulateMedia({ colorScheme: 'light' })

    // Delete asks first; "Keep it" keeps it.
    const vegan = await item(page, 'I am vegan.')
    await vegan.getByRole('button', { name: 'Delete' }).click()
    await vegan.getByRole('button', { name: 'Keep it' }).click()
    await vegan.getByRole('button', { name: 'Delete' }).click()
    await vegan.getByText('Delete this memory? Nori will no longer know it.').waitFor()
    await chromium.shots(page, 'memory-confirm')
    await vegan.getByRole('button', { name: 'Delete memory' }).click()
    await expect.poll(() => contents(page)).toEqual(['My sister is called Anna.'])
    await expect.poll(() => contents(second.page)).toEqual(['My sister is called Anna.'])
    expect((await sdk.memory.list.query({ characterId })).items.map(memory => memory.content)).toEqual(['My sister is called Anna.'])

    // Added elsewhere (here through the SDK, as another app would): it shows at once.
    await sdk.memory.add.mutate({ characterId, content: 'I play the cello.', importance: 2 })
    await expect.poll(() => contents(second.page)).toEqual(['I play the cello.', 'My sister is called Anna.'])
    await expect.poll(() => contents(page)).toEqual(['I play the cello.', 'My sister is called Anna.'])
    await chromium.shots(page, 'memory')

    // Off, said plainly; kept across a reload; on again.
    const toggle = page.getByRole('switch', { name: 'Remember things about me' })
    await toggle.uncheck()
    await page.getByTestId('memory-off').getByText('Memory is off for Nori: nothing new is remembered, and nothing remembered is used in replies. What is kept below stays until you delete it.').waitFor()
    await expect.poll(async () => (await sdk.memory.settings.query({ characterId })).enabled).toBe(false)
    // The other device's switch follows without a reload (a `memory` event with change `settings`).
    await second.page.getByTestId('memory-off').waitFor()
    expect(await second.page.getByRole('switch', { name: 'Remember things about me' }).isChecked()).toBe(false)
    await page.reload()
    await page.getByTestId('memory-off').waitFor()
    expect(await page.getByRole('switch', { name: 'Remember things about me' }).isChecked()).toBe(false)
    expect(await contents(page)).toEqual(['I play the cello.', 'My sister is called Anna.'])
    await page.getByRole('switch', { name: 'Remember things about me' }).check()
    await page.getByTestId('memory-off').waitFor({ state: 'detached' })
    await expect.poll(async () => (await sdk.memory.settings.query({ characterId })).enabled).toBe(true)
    await second.page.getByTestId('memory-off').waitFor({ state: 'detached' })

    expect([...first.consoleErrors, ...second.consoleErrors]).toEqual([])
  })

  it('pages a long list with Load more, and says in words that the limit is reached', async () => {
    const user = await createVerifiedUser(server)
    const characterId = await createCharacter(user, 'Pip')
    // 2 000 memories at once, through the service (extraction's path; a browser would take minutes).
    const seeded = Array.from({ length: 2000 }, (_, index) => ({ content: `Fact number ${index + 1}.`, importance: 3 }))
    await server.api.services.memory.addExtracted(user.id, characterId, seeded, 'seeded')
    const { page, consoleErrors } = await memoryDevice(user, characterId, 'Pip')
    await expect.poll(() => list(page).locator('li').count()).toBe(50)
    // The count comes with the first page: the person sees how full it is before scrolling 2 000 memories.
    await expect.poll(() => page.getByTestId('memory-near-limit').textContent()).toContain('2,000 of 2,000 memories kept.')
    await page.getByRole('button', { name: 'Load more' }).click()
    await expect.poll(() => list(page).locator('li').count()).toBe(100)
    expect(new Set(await contents(page)).size).toBe(100)
    expect(await list(page).locator('li').first().getByTestId('memory-source').textContent()).toBe('Remembered from a chat')

    await addField(page, 'Pip').fill('I like kites.')
    await page.getByRole('button', { name: 'Add', exact: true }).click()
    await expect.poll(() => page.getByTestId('memory-add-error').textContent()).toBe('Pip already keeps 2,000 memories of you, the most there can be. Delete some to add new ones.')
    // What was written stays, to be added once there is room.
    expect(await addField(page, 'Pip').inputValue()).toBe('I like kites.')
    // The browser notes the refusal the test asked for; nothing else.
    expect(consoleErrors.filter(error => !/status of 409 .*memory\.add/.test(error))).toEqual([])
  })

  it('notes under a reply what the character remembered from that turn, linking to the Memory screen', async () => {
    llm.reset()
    const user = await createVerifiedUser(server)
    const characterId = await createCharacter(user, 'Kiki')
    const chatId = (await sdkOf(user).chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: characterId }] })).id
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    await page.goto(`${server.baseUrl}/app/chats/${chatId}`)
    await page.locator('[data-live="on"]').waitFor()
    await page.locator('[role="feed"][aria-busy="false"]').waitFor({ state: 'attached' })
    // The way in from the chat: its header.
    expect(await page.getByTestId('memory-link').getAttribute('href')).toBe(`/app/characters/${characterId}/memory`)

    await page.getByRole('textbox', { name: 'Message', exact: true }).fill('Hi Kiki! My cat is called Miso.')
    await page.getByRole('button', { name: 'Send' }).click()
    const reply = page.locator('[data-role="assistant"]').last()
    await reply.getByTestId('message-content').getByText('Hello from the fake upstream.').waitFor()
    const note = reply.getByTestId('remembered-note')
    await expect.poll(() => note.textContent(), { timeout: 30_000 }).toContain('Remembered: My cat is called Miso.')
    expect(await page.getByTestId('remembered-announcement').textContent()).toBe('Kiki remembered: My cat is called Miso.')
    await checkA11y(page, 'the chat with a remembered note')
    await chromium.shots(page, 'chat-remembered')

    await note.getByRole('link', { name: 'See memory' }).click()
    await page.waitForURL(url => url.pathname === `/app/characters/${characterId}/memory`)
    await expect.poll(() => contents(page)).toEqual(['My cat is called Miso.'])
    expect(await (await item(page, 'My cat is called Miso.')).getByTestId('memory-source').textContent()).toBe('Remembered from a chat')
    expect(consoleErrors).toEqual([])
  })
})
