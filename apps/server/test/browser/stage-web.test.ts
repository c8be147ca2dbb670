import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'
import { startFakeStripe, type FakeStripe } from '@airi/tooling/fakes/stripe'
import { until } from '@airi/tooling/test/until'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from '../harness.ts'
import { createCharacter as createCharacterOf, deviceOf as deviceOfUser, recordStreamingTexts, signInThroughApp } from './app.ts'
import { launchChromium, type TestBrowser } from './chromium.ts'

const PRODUCT = 'prod_test_stage_web'
const INITIAL = 100

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let tts: FakeStreamingTtsUpstream
let stripe: FakeStripe

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[llm, tts, stripe, chromium] = await Promise.all([startFakeOpenAIUpstream({ name: 'stage-web' }), startFakeStreamingTtsUpstream(), startFakeStripe(), launchChromium()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
    stripe: stripe.settings,
  })
  // Operator config, as an admin would set it: the LLM alias, the streaming voice, the Flux product.
  const { config, llmGateway } = server.api.services
  const sealed = (alias: string, apiKey: string) => llmGateway.encryptKey(alias, 'k0', apiKey)
  const llmKey = sealed('chat', 'sk-llm')
  await config.set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'fake', baseUrl: llm.url, model: 'fake-model', keys: [{ id: llmKey.keyId, ciphertext: llmKey.ciphertext }] }] } } })
  const ttsKey = sealed('streaming-tts', 'sk-tts')
  await config.set('STREAMING_TTS_UPSTREAM', { url: tts.url, keys: [{ id: ttsKey.keyId, ciphertext: ttsKey.ciphertext }], models: [{ id: 'seed-tts-2.0' }] })
  await config.set('STRIPE_FLUX_PRODUCT_ID', PRODUCT)
  stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 300, currencyOptions: { cny: 2200 }, nickname: 'Starter', metadata: { fluxAmount: '300' } })
  stripe.addPrice({ product: PRODUCT, currency: 'usd', unitAmount: 1000, metadata: { fluxAmount: '1200', recommended: 'true' } })
  // The fake's checkout page pays at once and delivers the signed completion here.
  stripe.webhookUrl = `${server.baseUrl}/api/v1/stripe/webhook`
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await Promise.all([llm?.close(), tts?.close(), stripe?.close()])
})

const deviceOf = (user: TestUser) => deviceOfUser(server, chromium, user)
const createCharacter = (user: TestUser, name: string) => createCharacterOf(server, user, name)

const headerFlux = async (page: Page) => Number(await page.getByTestId('header-balance').getAttribute('data-flux'))
const audioBytes = async (page: Page) => Number(await page.getByTestId('voice-status').getAttribute('data-audio-bytes') ?? 0)
const fakeAudioBytes = (session: { audio: Buffer[] }) => session.audio.reduce((sum, chunk) => sum + chunk.length, 0)
const signedAmount = (row: { type: string, amount: number }) => row.type === 'debit' ? -row.amount : row.amount

describe('stage-web in Chromium', () => {
  it('signs in through the OIDC flow, stays signed in across a reload, and signs out', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chromium.newPage()
    await page.goto(`${server.baseUrl}/app/`)
    await chromium.screenshot(page, 'app-signed-out')
    await signInThroughApp(server, page, user)
    await page.getByRole('button', { name: 'Create AIRI' }).waitFor()
    await chromium.screenshot(page, 'app-chat-empty')

    await page.reload()
    await expect.poll(() => page.getByTestId('signed-in-as').textContent()).toBe(user.email)

    await page.getByRole('button', { name: 'Account' }).click()
    await page.getByRole('button', { name: 'Delete my account…' }).waitFor()
    await chromium.screenshot(page, 'app-account')

    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    await page.reload()
    await page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    // A string runs in the page; this package's types have no DOM.
    expect(await page.evaluate('localStorage.getItem("airi.tokens")')).toBeNull()
    expect(consoleErrors).toEqual([])
  })

  it('streams a reply token by token, stores it, bills exactly the ledger\'s amount, and shows both messages live on a second device', async () => {
    const user = await createVerifiedUser(server)
    await createCharacter(user, 'Airi')
    const kiki = await createCharacter(user, 'Kiki')
    const first = await deviceOf(user)
    const second = await deviceOf(user)
    const { page } = first

    // Pick Kiki on both devices (the first opens the chat, the second finds it).
    await page.getByTestId('character-picker').selectOption({ label: 'Kiki' })
    await page.getByText('No messages yet. Say hello to Kiki.').waitFor()
    await second.page.getByTestId('character-picker').selectOption({ label: 'Kiki' })
    await second.page.getByText('No messages yet. Say hello to Kiki.').waitFor()
    await second.page.locator('[data-live="on"]').waitFor()
    await page.getByTestId('speak-replies').uncheck()
    expect(await headerFlux(page)).toBe(INITIAL)
    const seqBefore = (await server.database.db.selectFrom('flux_transaction').select(eb => eb.fn.max('seq').as('seq')).where('user_id', '=', user.id).executeTakeFirst())?.seq ?? 0

    const reply = 'Hi! I am Kiki, and I answer one word at a time.'
    llm.behave(() => ({ kind: 'complete', content: reply, usage: { prompt_tokens: 400, completion_tokens: 700 }, chunkDelayMs: 80 }))
    await recordStreamingTexts(page)
    await page.getByLabel('Message').fill('Hello Kiki')
    await page.getByRole('button', { name: 'Send' }).click()

    const stored = page.locator('[data-testid="messages"] li[data-role="assistant"]')
    await stored.getByText(reply, { exact: true }).waitFor()
    await expect.poll(() => page.getByTestId('streaming-reply').count()).toBe(0)
    const texts = await page.evaluate('window.__replyTexts') as string[]
    const partial = [...new Set(texts)].filter(text => text !== '…' && text !== reply)
    // Several growing prefixes of the reply were on screen before the whole of it.
    expect(partial.length).toBeGreaterThan(1)
    for (const text of partial)
      expect(reply.startsWith(text)).toBe(true)
    await chromium.screenshot(page, 'app-chat-reply')

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
    expect(messages.map(message => [message.role, message.content])).toEqual([['user', 'Hello Kiki'], ['assistant', reply]])
    const other = second.page.locator('[data-testid="messages"] li')
    await other.filter({ hasText: reply }).waitFor()
    expect(await other.evaluateAll(items => items.map(item => [item.getAttribute('data-role'), item.querySelector('[data-testid="message-content"]')?.textContent]))).toEqual([['user', 'Hello Kiki'], ['assistant', reply]])
    await expect.poll(() => headerFlux(second.page)).toBe(INITIAL - spent)
    await chromium.screenshot(second.page, 'app-chat-second-device')

    await page.getByRole('button', { name: 'Flux', exact: true }).click()
    await page.getByTestId('flux-history').getByText(/^−\d+$/).first().waitFor()
    expect([...first.consoleErrors, ...second.consoleErrors]).toEqual([])
  })

  it('speaks the reply through Web Audio as it streams; Stop voice ends the speech session, and Stop ends the reply and keeps its partial text', async () => {
    const user = await createVerifiedUser(server)
    await createCharacter(user, 'Airi')
    const { page, consoleErrors } = await deviceOf(user)
    await page.getByText('No messages yet. Say hello to Airi.').waitFor()
    await expect.poll(() => page.getByTestId('speak-replies').isChecked()).toBe(true)
    tts.reset()

    // A whole reply: every byte the fake spoke reached the page's audio pipeline.
    llm.behave(() => ({ kind: 'complete', content: 'Hello there. How are you today?', chunkDelayMs: 20 }))
    await page.getByLabel('Message').fill('Say hello')
    await page.getByRole('button', { name: 'Send' }).click()
    await page.locator('li[data-role="assistant"]').getByText('Hello there. How are you today?').waitFor()
    await until(() => tts.sessions[0]?.closed === true, 'the first speech session to end')
    const spoken = tts.sessions[0]!
    expect(spoken).toMatchObject({ finished: true, cancelled: false, start: { model: 'seed-tts-2.0', response_format: 'pcm' } })
    expect(spoken.texts.join('')).toBe('Hello there. How are you today?')
    await expect.poll(() => audioBytes(page)).toBe(fakeAudioBytes(spoken))
    expect(fakeAudioBytes(spoken)).toBeGreaterThan(0)

    // A reply that stops coming after its first sentence: that sentence is on screen and heard, then Stop.
    llm.behave(() => ({ kind: 'complete', content: 'Sure thing. I will keep talking until you stop me.', stallAfter: 2 }))
    await page.getByLabel('Message').fill('Talk to me')
    await page.getByRole('button', { name: 'Send' }).click()
    await page.getByTestId('streaming-reply').getByText('Sure thing.', { exact: true }).waitFor()
    await until(() => tts.sessions.length === 2 && tts.sessions[1]!.audio.length > 0, 'the second session\'s first audio')
    const talking = tts.sessions[1]!
    await expect.poll(() => audioBytes(page)).toBe(fakeAudioBytes(talking))
    expect(await page.getByTestId('voice-status').getAttribute('data-speaking')).toBe('true')
    await chromium.screenshot(page, 'app-voice-speaking')

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
    const stopped = page.locator('li[data-role="assistant"][data-status="stopped"]')
    await expect.poll(() => stopped.getByTestId('message-content').textContent()).toBe('Sure thing. ')
    expect(tts.sessions).toHaveLength(2)
    expect(await page.getByRole('alert').count()).toBe(0)
    expect(consoleErrors).toEqual([])
  })

  it('tops up: packages in a chosen currency, the fake checkout, the signed webhook\'s credit on return (shown on another device too); and a cancelled checkout', async () => {
    const user = await createVerifiedUser(server)
    await createCharacter(user, 'Airi')
    const { page, consoleErrors } = await deviceOf(user)
    // Another device of the user, on the chat screen with its live feed open.
    const other = await deviceOf(user)
    await other.page.locator('[data-live="on"]').waitFor()
    expect(await headerFlux(other.page)).toBe(INITIAL)
    await page.getByRole('button', { name: 'Flux', exact: true }).click()
    await page.getByTestId('flux-balance').getByText(`${INITIAL} Flux`).waitFor()
    await page.getByTestId('currency').selectOption('cny')
    const starter = page.getByRole('button', { name: /Starter/ })
    await starter.getByText('¥22.00').waitFor()
    await chromium.screenshot(page, 'app-flux-packages')

    const checkout = page.waitForRequest(request => request.url().startsWith(`${stripe.url}/c/pay/`))
    await starter.click()
    const sessionId = new URL((await checkout).url()).pathname.split('/').at(-1)!
    expect(stripe.sessions.get(sessionId)).toMatchObject({ currency: 'cny', amount_total: 2200, client_reference_id: user.id })

    // Back from the fake checkout, whose signed webhook credited the account.
    await page.getByTestId('checkout-success').and(page.locator('[data-credit="credited"]')).waitFor()
    await page.getByTestId('flux-balance').getByText(`${INITIAL + 300} Flux`).waitFor()
    expect(await headerFlux(page)).toBe(INITIAL + 300)
    expect(await server.api.services.billing.getBalance(user.id)).toBe(INITIAL + 300)
    expect(new URL(page.url()).search).toBe('')
    await page.getByTestId('flux-history').getByText('+300').waitFor()
    await chromium.screenshot(page, 'app-flux-topup-success')
    // The other device shows the new balance without a reload: the balance event on its feed.
    await until(async () => await headerFlux(other.page) === INITIAL + 300, 'the other device to show the top-up')
    expect(other.consoleErrors).toEqual([])

    // Cancelling at the checkout page (the fake cancels with ?cancel) comes back with the cancel banner.
    await page.route(`${stripe.url}/c/pay/*`, route => route.continue({ url: `${route.request().url()}?cancel` }))
    await page.getByRole('button', { name: /Starter/ }).click()
    await page.getByTestId('checkout-cancel').waitFor()
    await page.getByTestId('flux-balance').getByText(`${INITIAL + 300} Flux`).waitFor()
    await chromium.screenshot(page, 'app-flux-topup-cancelled')
    expect(await server.api.services.billing.getBalance(user.id)).toBe(INITIAL + 300)
    expect(consoleErrors).toEqual([])
  })
})
