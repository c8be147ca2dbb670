import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import OpenAI from 'openai'
import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { ADMIN_EMAIL, createVerifiedUser, failure, signIn, startTestServer, uniqueEmail, type TestServer, type TestUser } from '../harness.ts'
import { signInThroughApp } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

// The admin pages of stage-web (SPEC §4.15), used the way an operator would.

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let operator: TestUser
let person: TestUser

const sdkOf = (user: TestUser) => createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[chromium, llm] = await Promise.all([launchChromium(), startFakeOpenAIUpstream({ name: 'llm' })])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  ;[operator, person] = await Promise.all([createVerifiedUser(server, ADMIN_EMAIL), createVerifiedUser(server)])
  // What is not under test here is set up as the CLI would: a chat model, a second one, a voice.
  const { upstreams } = server.api.services.operator
  await upstreams.put({ kind: 'llm', alias: 'chat', baseUrl: llm.url, model: 'upstream-chat', apiKey: 'sk-chat-key-00001111' }, null)
  await upstreams.put({ kind: 'llm', alias: 'draft', baseUrl: llm.url, model: 'upstream-draft', apiKey: 'sk-draft-key-00002222' }, null)
  await upstreams.put({ kind: 'tts', alias: 'voice', baseUrl: 'https://speech.example.com/v1', model: 'tts-1', apiKey: 'sk-voice-key-00003333' }, null)
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await llm?.close()
})

const TABS = { 'Models': 'models', 'Settings': 'settings', 'Flux grants': 'grants', 'Users': 'users' } as const

/** Signs the operator in and opens a tab of the Admin screen (each tab has its own URL). */
async function adminPage(tab: keyof typeof TABS) {
  const device = await chromium.newPage()
  await signInThroughApp(server, device.page, operator)
  await device.page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Admin' }).click()
  await device.page.getByRole('tab', { name: tab }).click()
  await device.page.waitForURL(url => url.pathname === `/app/admin/${TABS[tab]}`)
  return device
}

/** Console errors other than the browser's note of a refusal the test asked for (`status of 400`). */
const unexpected = (errors: string[], ...statuses: number[]) =>
  errors.filter(error => !statuses.some(status => error.includes(`status of ${status}`)))

/** Nothing sticks out sideways on a phone; `admin-<name>` in both widths and themes (with axe) or one phone picture of a passing state. */
async function look(page: Page, name: string, { all = false } = {}) {
  const original = page.viewportSize()!
  await page.setViewportSize({ width: 390, height: 844 })
  expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390)
  if (all) {
    await checkA11y(page, `admin ${name}`)
    await chromium.shots(page, `admin-${name}`)
  }
  else {
    await chromium.screenshot(page, `admin-${name}-390`)
  }
  await page.setViewportSize(original)
}

describe('stage-web: the Admin screen', () => {
  it('is not offered to a person who is not an operator, and its procedures refuse them', async () => {
    const { page, consoleErrors } = await chromium.newPage()
    await signInThroughApp(server, page, person)
    const nav = page.getByRole('navigation', { name: 'Main' })
    await nav.getByRole('link', { name: 'Usage' }).waitFor()
    expect(await nav.getByRole('link', { name: 'Admin' }).count()).toBe(0)
    // Its URL shows no tools, and asks the server nothing.
    await page.goto(`${server.baseUrl}/app/admin/users`)
    await page.getByText('Only operators can open these pages.').waitFor()
    expect(await page.getByRole('tab').count()).toBe(0)

    const sdk = sdkOf(person)
    for (const call of [sdk.admin.upstreams.list.query({ kind: 'llm' }), sdk.admin.config.list.query(), sdk.admin.users.lookup.query({ email: ADMIN_EMAIL })])
      expect((await failure(call)).data?.code).toBe('FORBIDDEN')
    expect(consoleErrors).toEqual([])
  })

  it('adds a language model with its key, shows the key only as its last four characters, and removes another after a confirmation', async () => {
    const KEY = 'sk-writer-secret-key-4321'
    const { page, consoleErrors } = await adminPage('Models')
    const card = page.getByTestId('upstreams-llm')
    await card.locator('[data-alias="chat"]').waitFor()
    expect(await card.locator('[data-alias="chat"] [data-testid="key-hints"]').textContent()).toBe('••••1111')

    await card.getByRole('button', { name: 'Add a model' }).click()
    const form = card.getByRole('form', { name: 'Add a model' })
    await form.getByLabel('Name clients ask for').fill('writer')
    await form.getByLabel('Base URL').fill('ftp://upstream.example.com')
    await form.getByLabel('Upstream model').fill('upstream-writer')
    await form.getByLabel('API key').fill(KEY)
    await form.getByLabel('Input', { exact: true }).fill('3000')
    await form.getByLabel('Output', { exact: true }).fill('9000')
    await form.getByRole('button', { name: 'Save' }).click()
    // The server's refusal, next to the field it names.
    await expect.poll(() => form.locator('#upstream-llm-base-url-errors').textContent()).toContain('http:// or https://')
    expect(await form.getByLabel('Base URL').getAttribute('aria-invalid')).toBe('true')
    await look(page, 'models-form')

    await form.getByLabel('Base URL').fill(llm.url)
    await form.getByRole('button', { name: 'Save' }).click()
    const writer = card.locator('[data-alias="writer"]')
    await writer.waitFor()
    expect(await writer.getByTestId('key-hints').textContent()).toBe('••••4321')
    expect(await writer.getByTestId('alias-price').textContent()).toBe('input 3,000, output 9,000 Flux per 1M tokens')
    expect(await card.locator('[data-alias="draft"] [data-testid="alias-price"]').textContent()).toBe('flat: 1 Flux per 1K tokens')
    // Nowhere on the page: not in the markup, not in a field's value, not in storage.
    expect(await page.content()).not.toContain(KEY)
    expect(await page.evaluate(`[...document.querySelectorAll('input, textarea')].some(field => field.value.includes(${JSON.stringify(KEY)}))
      || JSON.stringify({ ...localStorage, ...sessionStorage }).includes(${JSON.stringify(KEY)})`)).toBe(false)
    // Stored sealed, and usable: the gateway calls the upstream with it.
    const stored = await server.api.services.config.describe('LLM_ROUTER_CONFIG')
    expect(JSON.stringify(stored.value)).not.toContain(KEY)
    llm.behave(() => ({ kind: 'complete', content: 'Hi', usage: { prompt_tokens: 10, completion_tokens: 2 } }))
    await new OpenAI({ apiKey: person.token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 }).chat.completions.create({ model: 'writer', messages: [{ role: 'user', content: 'Hi' }] })
    expect(llm.requests.at(-1)?.key).toBe(KEY)

    const draft = card.locator('[data-alias="draft"]')
    await draft.getByRole('button', { name: 'Remove' }).click()
    await draft.getByRole('button', { name: 'Keep it' }).click()
    expect(await draft.count()).toBe(1)
    await draft.getByRole('button', { name: 'Remove' }).click()
    await draft.getByRole('button', { name: 'Yes, remove' }).click()
    await expect.poll(() => draft.count()).toBe(0)
    expect((await server.api.services.operator.upstreams.list('llm')).models.map(model => model.alias).sort()).toEqual(['chat', 'writer'])

    await page.getByTestId('upstreams-tts').locator('[data-alias="voice"]').waitFor()
    await look(page, 'models', { all: true })
    expect(unexpected(consoleErrors, 400)).toEqual([])
  })

  it('shows each problem of a refused setting under its editor, keeps sealed keys masked, and saves a good value', async () => {
    const { page, consoleErrors } = await adminPage('Settings')
    const flux = page.locator('[data-key="INITIAL_USER_FLUX"]')
    await flux.getByRole('button', { name: 'Edit' }).click()
    await flux.getByRole('textbox').fill('-5')
    await flux.getByRole('button', { name: 'Save' }).click()
    await expect.poll(() => flux.getByTestId('config-issues').textContent()).toMatch(/the whole value → .*>=0/)

    const router = page.locator('[data-key="LLM_ROUTER_CONFIG"]')
    const stored = async () => (await server.api.services.config.getOptional('LLM_ROUTER_CONFIG'))!.models.chat!
    const { ciphertext } = (await stored()).upstreams[0]!.keys[0]!
    expect(await router.getByTestId('config-value').textContent()).toContain('"ciphertext": "••••"')
    expect(await page.content()).not.toContain(ciphertext)

    await router.getByRole('button', { name: 'Edit' }).click()
    const editor = router.getByRole('textbox')
    const edited = (change: (value: { models: Record<string, { maxOutputTokens: number, upstreams: Array<{ baseUrl: string }> }> }) => void) => editor.inputValue().then((text) => {
      const value = JSON.parse(text)
      change(value)
      return JSON.stringify(value, null, 2)
    })
    await editor.fill(await edited((value) => { value.models.chat!.upstreams[0]!.baseUrl = 'ftp://nope.example.com' }))
    await router.getByRole('button', { name: 'Save' }).click()
    await expect.poll(() => router.getByTestId('config-issues').textContent()).toContain('models.chat.upstreams.0.baseUrl → must be an http:// or https:// URL')
    expect(await editor.getAttribute('aria-invalid')).toBe('true')
    await look(page, 'settings-error')

    // A good change to the rest of the entry keeps the keys the page never showed.
    await editor.fill(await edited((value) => {
      value.models.chat!.upstreams[0]!.baseUrl = llm.url
      value.models.chat!.maxOutputTokens = 2048
    }))
    await router.getByRole('button', { name: 'Save' }).click()
    await router.getByRole('status').filter({ hasText: 'Saved' }).waitFor()
    await expect.poll(async () => (await stored()).maxOutputTokens).toBe(2048)
    expect((await stored()).upstreams[0]!.keys[0]!.ciphertext).toBe(ciphertext)

    // The tab is in the URL: a reload comes back to it.
    await page.reload()
    await expect.poll(() => page.getByRole('tab', { name: 'Settings' }).getAttribute('aria-selected')).toBe('true')
    await page.locator('[data-key="LLM_ROUTER_CONFIG"]').waitFor()
    await look(page, 'settings', { all: true })
    expect(unexpected(consoleErrors, 400)).toEqual([])
  })

  it('previews a grant per e-mail, then grants it once however often Grant is pressed', async () => {
    const grantee = await createVerifiedUser(server)
    const before = await server.api.services.billing.getBalance(grantee.id)
    const unknown = uniqueEmail('nobody')
    const { page, consoleErrors } = await adminPage('Flux grants')
    await page.getByLabel('E-mail addresses').fill(`${grantee.email}\n${unknown}, ${grantee.email}`)
    await page.getByLabel('Flux for each').fill('25')
    await page.getByLabel('Reason').fill('Beta tester thanks')
    await page.getByRole('button', { name: 'Preview' }).click()

    const preview = page.getByTestId('grant-preview').locator('tbody tr')
    await expect.poll(() => preview.evaluateAll(rows => rows.map(row => [row.getAttribute('data-email'), row.getAttribute('data-outcome')])))
      .toEqual([[grantee.email, 'would_grant'], [unknown, 'not_found'], [grantee.email, 'duplicate']])
    expect(await server.api.services.billing.getBalance(grantee.id)).toBe(before)
    await look(page, 'grants-preview')

    await page.getByTestId('grant-confirm').dblclick()
    const result = page.getByTestId('grant-result').locator('tbody tr')
    await expect.poll(() => result.evaluateAll(rows => rows.map(row => row.getAttribute('data-outcome')))).toEqual(['granted', 'not_found', 'duplicate'])

    await page.getByRole('tab', { name: 'Users' }).click()
    await page.waitForURL(url => url.pathname === '/app/admin/users')
    await page.getByLabel('E-mail address').fill(grantee.email)
    await page.getByRole('button', { name: 'Look up' }).click()
    await expect.poll(() => page.getByTestId('user-balance').getAttribute('data-flux')).toBe(String(before + 25))
    expect(await server.api.services.billing.getBalance(grantee.id)).toBe(before + 25)

    // Back returns to the tab before.
    await page.goBack()
    await expect.poll(() => page.getByRole('tab', { name: 'Flux grants' }).getAttribute('aria-selected')).toBe('true')
    await page.getByLabel('E-mail addresses').fill(grantee.email)
    await page.getByLabel('Flux for each').fill('5')
    await page.getByLabel('Reason').fill('Once more')
    await page.getByRole('button', { name: 'Preview' }).click()
    await page.getByTestId('grant-confirm').click()
    await expect.poll(() => page.getByTestId('grant-result').locator('tbody tr').first().getAttribute('data-outcome')).toBe('granted')
    await look(page, 'grants', { all: true })
    expect(consoleErrors).toEqual([])
  })

  it('looks a person up with their balance, calls and sessions, and revoking a session ends it', async () => {
    llm.behave(() => ({ kind: 'complete', content: 'Hello!', usage: { prompt_tokens: 900, completion_tokens: 300 } }))
    await new OpenAI({ apiKey: person.token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 }).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Hi' }] })
    // Two sessions of their own: one revoked alone, then the other with Revoke all.
    const [first, second] = [person, await signIn(server, person.email, person.password)].map(sdkOf)
    const { session } = await first!.auth.me.query()

    const { page, consoleErrors } = await adminPage('Users')
    await page.getByLabel('E-mail address').fill(uniqueEmail('nobody'))
    await page.getByRole('button', { name: 'Look up' }).click()
    await expect.poll(() => page.getByTestId('user-not-found').textContent()).toMatch(/^No account uses nobody-.*Check the spelling/)

    await page.getByLabel('E-mail address').fill(person.email.toUpperCase())
    await page.getByRole('button', { name: 'Look up' }).click()
    const balance = await server.api.services.billing.getBalance(person.id)
    await expect.poll(() => page.getByTestId('user-balance').textContent()).toBe(`${balance} Flux`)
    expect(await page.getByTestId('user-not-found').count()).toBe(0)
    const calls = page.getByTestId('user-calls').locator('tbody tr')
    expect(await calls.first().getAttribute('data-kind')).toBe('llm')
    expect(await calls.first().textContent()).toMatch(/Chat API\s*chat\s*900 in \/ 300 out tokens\s*\d+$/)

    const sessions = page.getByTestId('user-sessions').locator('tbody tr')
    expect(await sessions.count()).toBeGreaterThanOrEqual(2)
    await look(page, 'users', { all: true })

    await page.locator(`[data-session="${session.id}"]`).getByRole('button', { name: 'Revoke' }).click()
    await page.getByRole('status').filter({ hasText: 'Ended 1 session.' }).waitFor()
    expect(await page.locator(`[data-session="${session.id}"]`).count()).toBe(0)
    await expect.poll(async () => (await failure(first!.auth.me.query())).data?.httpStatus).toBe(401)
    expect((await second!.auth.me.query()).user.email).toBe(person.email)

    await page.getByRole('button', { name: 'Revoke all…' }).click()
    await page.getByRole('button', { name: /^Yes, end all/ }).click()
    await page.getByTestId('user-sessions-empty').waitFor()
    await expect.poll(async () => (await failure(second!.auth.me.query())).data?.httpStatus).toBe(401)
    expect(unexpected(consoleErrors, 404)).toEqual([])
  })
})
