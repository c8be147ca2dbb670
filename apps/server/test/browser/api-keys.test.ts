import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { until } from '@airi/tooling/test/until'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'
import { signInThroughApp } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

/**
 * The API keys screen (issue 29, docs/stage-web.md#api-keys): reached from Account, a
 * key made with a budget and shown once, used by the official `openai` client, listed
 * with what it spent and when it was used, revoked after asking.
 */

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[chromium, llm] = await Promise.all([launchChromium(), startFakeOpenAIUpstream({ name: 'llm' })])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  const { keyId, ciphertext } = server.api.services.llmGateway.encryptKey('chat', 'k0', 'sk-chat')
  await server.api.services.config.set('LLM_ROUTER_CONFIG', {
    defaultModel: 'chat',
    models: { chat: { upstreams: [{ id: 'llm-chat', baseUrl: llm.url, model: 'upstream-chat', keys: [{ id: keyId, ciphertext }] }], pricing: { inputPer1M: 2000, outputPer1M: 8000 } } },
  })
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await llm?.close()
})

const openai = (key: string) => new OpenAI({ apiKey: key, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 })
const chat = (key: string) => openai(key).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Hi' }] })
const statusOf = (promise: Promise<unknown>) => promise.then(() => 200, (error: unknown) => (error as InstanceType<typeof OpenAI.APIError>).status)

describe('stage-web: the API keys screen', () => {
  it('makes a key shown once, lists what it spent and when it was used, and revokes it, on a phone and a desktop', async () => {
    const user = await createVerifiedUser(server)
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
    const { context, page, consoleErrors } = await chromium.newPage()
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.baseUrl })
    await signInThroughApp(server, page, user)

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Account' }).click()
    await page.getByRole('link', { name: 'Manage API keys' }).click()
    await page.waitForURL(url => url.pathname === '/app/api-keys')
    await page.getByTestId('api-keys-empty').waitFor()
    expect(await page.getByTestId('api-keys-base-url').textContent()).toBe(`${server.baseUrl}/api/v1/openai`)
    await page.getByRole('button', { name: 'Copy the base URL' }).click()
    await page.getByRole('button', { name: 'Copied' }).waitFor()
    expect(await page.evaluate('navigator.clipboard.readText()')).toBe(`${server.baseUrl}/api/v1/openai`)
    await checkA11y(page, 'the API keys screen, empty')

    // Checked in the browser: no scope ticked, then a budget of 0; nothing is made.
    const form = page.getByRole('form', { name: 'Make a new key' })
    await form.getByLabel('Name').fill('SillyTavern')
    await form.getByRole('checkbox', { name: /Chat models/ }).uncheck()
    await form.getByRole('button', { name: 'Make key' }).click()
    await expect.poll(() => page.getByTestId('api-key-scopes').textContent()).toContain('Tick at least one thing the key may use.')
    expect(await form.getByRole('checkbox', { name: /Chat models/ }).getAttribute('aria-invalid')).toBe('true')
    await form.getByRole('checkbox', { name: /Chat models/ }).check()
    await form.getByLabel('Amount of Flux').fill('0')
    await form.getByRole('button', { name: 'Make key' }).click()
    await form.getByText('Enter a whole number of Flux, 1 or more').waitFor()
    expect(await form.getByLabel('Amount of Flux').getAttribute('aria-invalid')).toBe('true')
    await chromium.shots(page, 'api-keys-errors')
    await expect.poll(() => page.getByTestId('api-key-scopes').textContent()).not.toContain('Tick at least one')
    expect(await sdk.apiKeys.list.query()).toEqual([])

    await form.getByLabel('Amount of Flux').fill('50')

    await form.getByLabel('Period').selectOption({ label: 'a month' })
    await form.getByLabel('Most calls a minute').fill('30')
    await form.getByRole('button', { name: 'Make key' }).click()
    const box = page.getByTestId('api-key-new')
    await box.getByText('it will not be shown again').waitFor()
    const key = (await box.getByTestId('api-key-secret').textContent())!
    expect(key).toMatch(/^airi_sk_[\w-]{43}$/)
    await box.getByRole('button', { name: 'Copy the key' }).click()
    await box.getByRole('button', { name: 'Copied' }).waitFor()
    expect(await page.evaluate('navigator.clipboard.readText()')).toBe(key)
    // The form is empty again for another key.
    expect(await form.getByLabel('Name').inputValue()).toBe('')

    const row = page.getByTestId('api-keys-list').locator('li').first()
    expect(await row.getByTestId('api-key-prefix').textContent()).toBe(`${key.slice(0, 14)}…`)
    expect(await row.getByTestId('api-key-spent').textContent()).toBe('0 of 50 Flux this month')
    expect((await row.getByTestId('api-key-last-used').textContent())!.trim()).toBe('Never used')
    expect(await row.textContent()).toContain('up to 30')
    await checkA11y(page, 'the API keys screen with a key just made')
    await chromium.shots(page, 'api-keys-created')

    // Used from another app: the official client with the key, billed to the key.
    const answer = await chat(key)
    expect(answer.choices[0]!.message.content).toBe('Hello from the fake upstream.')
    await until(async () => (await sdk.apiKeys.list.query())[0]?.lastUsedAt != null, 'lastUsedAt to be set')
    const [stored] = await sdk.apiKeys.list.query()
    await page.reload()
    await page.getByTestId('api-keys-list').waitFor()
    // Shown once: after the reload the key is nowhere on the page.
    expect(await page.getByTestId('api-key-new').count()).toBe(0)
    expect(await page.content()).not.toContain(key.slice(14))
    const used = page.locator(`[data-key-id="${stored!.id}"]`)
    const lastUsed = used.getByTestId('api-key-last-used').locator('time')
    expect(await lastUsed.getAttribute('datetime')).toBe(stored!.lastUsedAt!.toISOString())
    expect(await lastUsed.textContent()).toMatch(/now|ago/)
    expect(stored!.spent).toBeGreaterThan(0)
    expect(await used.getByTestId('api-key-spent').textContent()).toBe(`${stored!.spent} of 50 Flux this month`)

    // A second key for the list: no budget, voice and transcription, 30 days; then dismissed.
    await form.getByLabel('Name').fill('My script')
    await form.getByRole('checkbox', { name: /Chat models/ }).uncheck()
    await form.getByRole('checkbox', { name: /Voice/ }).check()
    await form.getByRole('checkbox', { name: /Transcription/ }).check()
    await form.getByLabel('Expires').selectOption({ label: 'In 30 days' })
    await form.getByRole('button', { name: 'Make key' }).click()
    await box.waitFor()
    await box.getByRole('button', { name: 'I have saved it' }).click()
    await box.waitFor({ state: 'detached' })
    const rows = page.getByTestId('api-keys-list').locator('li')
    await expect.poll(() => rows.count()).toBe(2)
    expect(await rows.first().getByTestId('api-key-scopes').textContent()).toBe('Voice, Transcription')
    expect(await rows.first().getByTestId('api-key-spent').textContent()).toBe('0 Flux spent')
    expect((await rows.first().getByTestId('api-key-expires').textContent())!.trim()).not.toBe('Never')
    await chromium.shots(page, 'api-keys')

    // Revoke after asking: Keep it first, then Revoke key; the key stops working.
    await used.getByRole('button', { name: 'Revoke SillyTavern' }).click()
    await used.getByText('stops working at once').waitFor()
    await used.getByRole('button', { name: 'Keep it' }).click()
    await used.getByRole('button', { name: 'Revoke SillyTavern' }).click()
    await used.getByRole('button', { name: 'Revoke key' }).click()
    await expect.poll(() => rows.count()).toBe(1)
    await expect.poll(() => page.getByTestId('api-keys-announcement').textContent()).toBe('Key “SillyTavern” revoked.')
    await expect.poll(() => statusOf(chat(key))).toBe(401)

    // At 20 live keys the screen says so in words.
    await Promise.all(Array.from({ length: 19 }, (_, index) => sdk.apiKeys.create.mutate({ name: `key ${index}`, scopes: ['llm'] })))
    await form.getByLabel('Name').fill('One more')
    await form.getByRole('button', { name: 'Make key' }).click()
    await expect.poll(() => page.getByTestId('api-key-create-error').textContent())
      .toBe('You have 20 keys, the most there can be. Revoke one you no longer use to make another.')

    await page.emulateMedia({ colorScheme: 'dark' })
    await checkA11y(page, 'the API keys screen, dark')
    await page.emulateMedia({ colorScheme: 'light' })
    expect(consoleErrors.filter(error => !/status of 409/.test(error))).toEqual([])
  })
})
