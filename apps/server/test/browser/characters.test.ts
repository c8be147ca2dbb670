import { execFileSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from '../harness.ts'
import { deviceOf } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

/**
 * The characters screens of stage-web (docs/stage-web.md, "Characters"): AIRI offered
 * on the first run, the gallery of one's own and everyone else's characters, and the
 * form that creates and edits one (an uploaded avatar, a cover URL, a priced model).
 */

/** A PNG without a card: a picture like any other. */
const PICTURE = fileURLToPath(new URL('../../../../tooling/fixtures/cards/no-card.png', import.meta.url))

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let tts: FakeStreamingTtsUpstream

beforeAll(async () => {
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[chromium, llm, tts] = await Promise.all([launchChromium(), startFakeOpenAIUpstream({ name: 'characters' }), startFakeStreamingTtsUpstream()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  // Two models, one with a price of its own; voice configured as in a deployment (its bridge lists no voices).
  const { config, llmGateway } = server.api.services
  // Keys are sealed to their alias.
  const upstreams = (alias: string) => {
    const key = llmGateway.encryptKey(alias, 'k0', `sk-${alias}`)
    return [{ id: `llm-${alias}`, baseUrl: llm.url, model: 'fake-model', keys: [{ id: key.keyId, ciphertext: key.ciphertext }] }]
  }
  await config.set('LLM_ROUTER_CONFIG', {
    defaultModel: 'everyday',
    models: { everyday: { upstreams: upstreams('everyday') }, deluxe: { upstreams: upstreams('deluxe'), pricing: { inputPer1M: 2000, outputPer1M: 8000 } } },
  })
  const ttsKey = llmGateway.encryptKey('streaming-tts', 'k0', 'sk-tts')
  await config.set('STREAMING_TTS_UPSTREAM', { url: tts.url, keys: [{ id: ttsKey.keyId, ciphertext: ttsKey.ciphertext }], models: [{ id: 'seed-tts-2.0' }] })
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await Promise.all([llm?.close(), tts?.close()])
})

const sdkOf = (user: TestUser): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
const card = (page: Page, list: 'own-characters' | 'public-characters', name: string) => page.getByTestId(list).getByRole('article', { name, exact: true })
const firstMessage = (page: Page) => page.locator('[data-testid="messages"] [data-role="assistant"] [data-testid="message-content"]').first().evaluate(element => element.textContent?.trim())

describe('characters in stage-web', () => {
  it('offers AIRI on the first run, and a double click opens one chat with her greeting', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    const start = page.getByRole('button', { name: 'Start chatting with AIRI' })
    await start.waitFor()
    await expect.poll(() => page.getByTestId('first-run').locator('img').evaluate(img => (img as unknown as { naturalWidth: number }).naturalWidth)).toBeGreaterThan(0)
    await checkA11y(page, 'the characters page on the first run')
    await chromium.shots(page, 'characters-first-run')

    await start.dblclick()
    await page.waitForURL(/\/app\/chats\/[^/]+$/)
    await expect.poll(() => firstMessage(page)).toBe(`Hi ${user.email.split('@')[0]}! I'm AIRI — it's lovely to meet you. How has your day been so far?`)
    const own = await sdkOf(user).characters.list.query({})
    expect(own.items.map(character => character.characterId)).toEqual(['airi-companion'])
    expect(consoleErrors).toEqual([])
  })

  it('creates a character with an uploaded avatar and a cover URL, edits it, and deletes it after asking', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    await page.getByRole('link', { name: 'Create your own' }).click()
    await page.getByRole('heading', { name: 'New character' }).waitFor()

    await page.getByLabel('Name', { exact: true }).fill('Juniper')
    await page.getByTestId('avatar-file').setInputFiles({ name: 'juniper.png', mimeType: 'image/png', buffer: await readFile(PICTURE) })
    await expect.poll(() => page.getByTestId('avatar-preview').getAttribute('src')).toMatch(/^data:image\/webp;base64,/)
    const cover = `${server.baseUrl}/app/companions/airi.svg`
    await page.getByLabel('Cover URL').fill('ftp://example.com/cover.png')
    await page.getByLabel('Cover URL').press('Tab')
    await page.getByLabel('Description', { exact: true }).fill('A gardener who talks to her plants.')
    await page.getByLabel('System prompt', { exact: true }).fill('You are Juniper, a gardener. Answer with gentle advice.')
    await page.getByLabel('Greeting', { exact: true }).fill('Welcome to the greenhouse!')
    const models = page.getByLabel('Default model')
    expect(await models.locator('option').allTextContents())
      .toEqual(['The service\'s default', 'deluxe — 2,000 / 8,000', 'everyday — standard rate'])
    await models.selectOption('deluxe')
    // No voices listed: no voice to pick.
    await expect(page.getByLabel('Voice').count()).resolves.toBe(0)
    await checkA11y(page, 'the character form')
    // From the top: a full-page picture of a scrolled page draws the sticky header mid-page.
    await page.evaluate('window.scrollTo(0, 0)')
    await chromium.shots(page, 'character-edit')

    // The server's refusal shows under the field it is about.
    await page.getByRole('button', { name: 'Create character' }).click()
    await expect.poll(() => page.getByRole('group', { name: 'Cover', exact: true }).locator('.field-errors').textContent()).toBe('Must be an http(s) URL')
    await page.getByLabel('Cover URL').fill(cover)
    await page.getByLabel('Cover URL').press('Tab')
    await page.getByRole('button', { name: 'Create character' }).click()
    await page.waitForURL(url => url.pathname === '/app/characters')
    const [created] = (await sdkOf(user).characters.list.query({})).items
    expect(created).toMatchObject({ avatarUrl: expect.stringMatching(/^data:image\/webp;base64,/), coverUrl: cover, defaultModelId: 'deluxe', defaultVoiceId: null })
    await expect.poll(() => card(page, 'own-characters', 'Juniper').getByText('A gardener who talks to her plants.').count()).toBe(1)
    await checkA11y(page, 'the characters gallery')
    await chromium.shots(page, 'characters-gallery')

    // Edit: the form holds what was saved; a change left unsaved is asked about, Back returns.
    await card(page, 'own-characters', 'Juniper').getByRole('button', { name: 'Edit' }).click()
    await expect.poll(() => page.getByLabel('Name', { exact: true }).inputValue()).toBe('Juniper')
    await page.getByLabel('Name', { exact: true }).fill('Juniper Blue')
    const asked: string[] = []
    page.once('dialog', (dialog) => {
      asked.push(dialog.message())
      void dialog.dismiss()
    })
    await page.getByRole('link', { name: 'Back to characters' }).click()
    await expect.poll(() => asked).toEqual(['You have unsaved changes. Leave without saving?'])
    expect(new URL(page.url()).pathname).toMatch(/\/edit$/)
    await page.getByRole('button', { name: 'Save' }).click()
    await card(page, 'own-characters', 'Juniper Blue').waitFor()
    await card(page, 'own-characters', 'Juniper Blue').getByRole('button', { name: 'Edit' }).click()
    await expect.poll(() => page.getByLabel('Greeting', { exact: true }).inputValue()).toBe('Welcome to the greenhouse!')
    await page.getByRole('link', { name: 'Back to characters' }).click()
    await page.waitForURL(url => url.pathname === '/app/characters')

    // Delete asks first; Cancel keeps it.
    const juniper = card(page, 'own-characters', 'Juniper Blue')
    await juniper.getByRole('button', { name: 'Delete' }).click()
    await juniper.getByText('Delete Juniper Blue? This cannot be undone.').waitFor()
    await juniper.getByRole('button', { name: 'Cancel' }).click()
    await juniper.getByRole('button', { name: 'Delete' }).click()
    await juniper.getByRole('button', { name: 'Delete' }).click()
    await expect.poll(() => page.getByTestId('characters-status').textContent()).toBe('Deleted Juniper Blue.')
    await expect(juniper.count()).resolves.toBe(0)
    expect((await sdkOf(user).characters.list.query({})).items).toEqual([])
    // The refused save is the browser's own 400 line; nothing else may show.
    expect(consoleErrors.filter(line => !line.includes('status of 400'))).toEqual([])
  })

  it('lists another person\'s character under public ones, to chat with but not to edit', async () => {
    const [owner, user] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
    const picture = `${server.baseUrl}/app/companions/airi.svg`
    const shared = await sdkOf(owner).characters.create.mutate({
      characterId: 'pemberton',
      version: '1',
      avatarUrl: picture,
      coverUrl: picture,
      i18n: [{ language: 'en', name: 'Pemberton', description: 'A butler of impeccable manners.' }],
      prompts: [{ language: 'en', type: 'system', content: 'You are Pemberton, a butler.' }],
    })
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    const pemberton = card(page, 'public-characters', 'Pemberton')
    await pemberton.waitFor()
    expect(await pemberton.getByRole('button').allTextContents()).toEqual(['Chat'])
    await pemberton.getByRole('button', { name: 'Chat' }).click()
    await page.waitForURL(url => url.pathname === `/app/characters/${shared.id}`)
    expect(consoleErrors).toEqual([])
  })
})
