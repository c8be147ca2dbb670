import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'

import type { BrowserContext, Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { DEFAULT_CONTENT, startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeRealtimeSttUpstream, utteranceTranscript, type FakeRealtimeSttUpstream } from '@airi/tooling/fakes/realtime-stt-upstream'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'
import { until } from '@airi/tooling/test/until'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from '../harness.ts'
import { createCharacter as createCharacterOf, deviceOf } from './app.ts'
import { launchChromium, type TestBrowser } from './chromium.ts'

/**
 * Voice input in stage-web (docs/stage-web.md) with Chromium's fake microphone
 * playing tooling/fixtures/audio/speech-like.wav: hands-free sends each final
 * transcript as a message, push-to-talk sends one message per press, and a
 * blocked microphone or an empty balance says what to do. The fake realtime
 * upstream closes an utterance per second of audio and names it
 * (`utterance 2 (1000 ms)`), so the messages tell what arrived and in what order.
 */

const WAV = fileURLToPath(new URL('../../../../tooling/fixtures/audio/speech-like.wav', import.meta.url))

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let stt: FakeRealtimeSttUpstream
let tts: FakeStreamingTtsUpstream
/** Each test's devices, closed after it so none of them sends into the next. */
const devices: BrowserContext[] = []

beforeAll(async () => {
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  // No --use-fake-ui-for-media-stream: each device is granted the microphone (or not) as a person would.
  const microphone = ['--use-fake-device-for-media-stream', `--use-file-for-fake-audio-capture=${WAV}`]
  ;[llm, stt, tts, chromium] = await Promise.all([startFakeOpenAIUpstream({ name: 'voice-input' }), startFakeRealtimeSttUpstream(), startFakeStreamingTtsUpstream(), launchChromium({ args: microphone })])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  const { config, llmGateway } = server.api.services
  const llmKey = llmGateway.encryptKey('chat', 'k0', 'sk-llm')
  await config.set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'fake', baseUrl: llm.url, model: 'fake-model', keys: [{ id: llmKey.keyId, ciphertext: llmKey.ciphertext }] }] } } })
  const sttKey = llmGateway.encryptKey('streaming-stt', 'k0', 'sk-stt')
  await config.set('STREAMING_STT_UPSTREAM', { url: stt.url, model: 'gpt-4o-transcribe', keys: [{ id: sttKey.keyId, ciphertext: sttKey.ciphertext }] })
  // Replies are spoken as in a deployment with voice; hands-free listens through them.
  const ttsKey = llmGateway.encryptKey('streaming-tts', 'k0', 'sk-tts')
  await config.set('STREAMING_TTS_UPSTREAM', { url: tts.url, keys: [{ id: ttsKey.keyId, ciphertext: ttsKey.ciphertext }], models: [{ id: 'seed-tts-2.0' }] })
}, 180_000)

afterEach(async () => {
  await Promise.all(devices.splice(0).map(context => context.close()))
})

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await Promise.all([llm?.close(), stt?.close(), tts?.close()])
})

/** A device on the chat of a new character: the microphone allowed unless `allowMicrophone` is false, replies not spoken unless `speak`. */
async function chatDevice(user: TestUser, { allowMicrophone = true, speak = false } = {}) {
  const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
  const character = await createCharacterOf(server, user, 'Mika')
  const chat = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: character }] })
  const device = await deviceOf(server, chromium, user)
  devices.push(device.context)
  if (allowMicrophone)
    await device.context.grantPermissions(['microphone'], { origin: server.baseUrl })
  await device.page.goto(`${server.baseUrl}/app/chats/${chat.id}`)
  await device.page.getByText('No messages yet. Say hello to Mika.').waitFor()
  await device.page.locator('[data-live="on"]').waitFor()
  // The voice catalogue is in (replies can be spoken).
  await device.page.getByTestId('voice-status').waitFor({ state: 'attached' })
  if (!speak) {
    await device.page.getByTestId('voice-settings').click()
    await device.page.getByTestId('speak-replies').uncheck()
    await device.page.getByTestId('voice-settings').click()
  }
  return device
}

const userTexts = (page: Page) => page.locator('[data-role="user"]:not(.pending) [data-testid="message-content"]').allTextContents()
// Replies are Markdown: a paragraph's text has no trailing newline of its own.
const assistantTexts = async (page: Page) => (await page.locator('[data-role="assistant"] [data-testid="message-content"]').allTextContents()).map(text => text.trim())
const composerBox = (page: Page) => page.getByRole('textbox', { name: 'Message', exact: true })
const composer = (page: Page) => composerBox(page).inputValue()
const micState = (page: Page) => page.getByTestId('mic').getAttribute('data-state')
const chatCalls = () => llm.requests.filter(request => request.path === '/v1/chat/completions')
/** The utterance numbers a message names, in order. */
const utterances = (texts: string[]) => texts.flatMap(text => [...text.matchAll(/utterance (\d+) \(\d+ ms\)/g)].map(match => Number(match[1])))
const ONE_PRESS = /^utterance 1 \(1000 ms\)(?: utterance \d+ \(\d+ ms\))*$/


describe('voice input in stage-web', () => {
  it('hands-free: each final transcript is sent as a message through respond and answered; switching it off ends the session', async () => {
    llm.reset()
    stt.reset()
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chatDevice(user, { speak: true })

    const handsFree = page.getByTestId('hands-free')
    await handsFree.click()
    expect(await handsFree.getAttribute('aria-pressed')).toBe('true')
    // The meter moves with the fake microphone's sound.
    await until(async () => Number(await page.getByTestId('mic-level').getAttribute('data-level')) > 0, 'the level meter to show sound')
    expect(await page.getByTestId('mic').getAttribute('aria-pressed')).toBe('true')

    await expect.poll(() => userTexts(page), { timeout: 30_000 }).toEqual([utteranceTranscript(1, 1000)])
    await expect.poll(() => assistantTexts(page), { timeout: 30_000 }).toEqual([DEFAULT_CONTENT])
    expect(chatCalls()[0]!.body.messages.at(-1)).toMatchObject({ role: 'user', content: utteranceTranscript(1, 1000) })
    await until(async () => (await userTexts(page)).length >= 2, 'a second message', 30_000)
    await chromium.shots(page, 'voice-hands-free')

    await handsFree.click()
    expect(await handsFree.getAttribute('aria-pressed')).toBe('false')
    await until(() => stt.sessions.length === 1 && stt.sessions[0]!.closed, 'the upstream session to close')
    await until(async () => await micState(page) === 'idle', 'the microphone to close')
    // Settled: nothing heard waits in the composer, no reply is being made, and every message (sent or still pending) is answered.
    await until(async () => await composer(page) === '' && await page.getByTestId('stop-reply').count() === 0
      && (await assistantTexts(page)).length === await page.locator('[data-role="user"]').count(), 'every message to be answered', 30_000)
    const sent = await userTexts(page)
    // One upstream call per message, made by the server's respond.
    expect(chatCalls()).toHaveLength(sent.length)
    // Nothing lost or sent twice: the utterances, in order, across the messages (those heard during a reply wait for it and go together).
    const heard = utterances(sent)
    expect(heard).toEqual(Array.from({ length: heard.length }, (_, i) => i + 1))
    expect(heard.length).toBe(stt.sessions[0]!.items.filter(item => item.transcript.trim()).length)
    expect(await composer(page)).toBe('')
    // The replies were spoken meanwhile (silence went to the transcriber while they were).
    expect(tts.sessions.length).toBeGreaterThan(0)
    expect(consoleErrors).toEqual([])
  })

  it('push-to-talk: holding the button shows the live transcript in the composer, and release sends it as one message; Enter, or a click, starts and stops it too', async () => {
    llm.reset()
    stt.reset()
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chatDevice(user)
    await composerBox(page).fill('a draft I was typing')

    const mic = page.getByTestId('mic')
    const box = (await mic.boundingBox())!
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2)
    await page.mouse.down()
    await until(async () => (await composer(page)).startsWith('utterance 1'), 'the first words in the composer')
    expect(await mic.getAttribute('aria-pressed')).toBe('true')
    expect(await composerBox(page).getAttribute('readonly')).not.toBeNull()
    await page.getByTestId('mic-level').waitFor()
    await chromium.screenshot(page, 'voice-push-to-talk-1280')
    await page.mouse.up()

    await expect.poll(() => userTexts(page), { timeout: 30_000 }).toHaveLength(1)
    const [pressed] = await userTexts(page)
    expect(pressed).toMatch(ONE_PRESS)
    await expect.poll(() => assistantTexts(page), { timeout: 30_000 }).toEqual([DEFAULT_CONTENT])
    await until(async () => await micState(page) === 'idle', 'the microphone to close')
    expect(stt.sessions).toHaveLength(1)
    expect(stt.sessions[0]!.closed).toBe(true)
    // What was typed is back, untouched.
    expect(await composer(page)).toBe('a draft I was typing')

    // From the keyboard: Enter starts, Enter again stops and sends.
    await mic.focus()
    await page.keyboard.press('Enter')
    await until(async () => (await composer(page)).startsWith('utterance 1'), 'the first words in the composer')
    await page.keyboard.press('Enter')
    await expect.poll(() => userTexts(page), { timeout: 30_000 }).toHaveLength(2)
    expect((await userTexts(page))[1]).toMatch(ONE_PRESS)
    await expect.poll(() => assistantTexts(page), { timeout: 30_000 }).toHaveLength(2)
    expect(stt.sessions).toHaveLength(2)

    // A click (a short press, as a tap on a phone) starts it; it goes on until the next click.
    await mic.click()
    await until(async () => (await composer(page)).startsWith('utterance 1'), 'the first words in the composer')
    expect(await micState(page)).toBe('listening')
    expect(await mic.getAttribute('aria-pressed')).toBe('true')
    await mic.click()
    await expect.poll(() => userTexts(page), { timeout: 30_000 }).toHaveLength(3)
    expect((await userTexts(page))[2]).toMatch(ONE_PRESS)
    await expect.poll(() => assistantTexts(page), { timeout: 30_000 }).toHaveLength(3)
    expect(stt.sessions).toHaveLength(3)
    expect(chatCalls()).toHaveLength(3)
    expect(consoleErrors).toEqual([])
  })

  it('a blocked microphone shows what to do, and nothing is dialled', async () => {
    stt.reset()
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chatDevice(user, { allowMicrophone: false })
    await page.getByTestId('mic').click()
    const problem = page.getByTestId('mic-problem')
    await problem.waitFor()
    expect(await problem.getAttribute('data-problem')).toBe('denied')
    expect(await problem.textContent()).toContain('Allow it in your browser\'s site settings')
    expect(await micState(page)).toBe('idle')
    expect(await page.getByTestId('mic').getAttribute('aria-pressed')).toBe('false')
    await chromium.shots(page, 'voice-microphone-blocked')

    // Hands-free says the same, and stays off.
    await page.getByRole('button', { name: 'OK' }).click()
    await page.getByTestId('hands-free').click()
    await problem.waitFor()
    expect(await page.getByTestId('hands-free').getAttribute('aria-pressed')).toBe('false')
    expect(stt.sessions).toHaveLength(0)
    expect(consoleErrors).toEqual([])
  })

  it('an empty balance says so, with the way to top up', async () => {
    stt.reset()
    const user = await createVerifiedUser(server)
    const { billing } = server.api.services
    await billing.debit({ userId: user.id, amount: await billing.getBalance(user.id), requestId: `test:${randomUUID()}`, description: 'test setup' })
    const { page, consoleErrors } = await chatDevice(user)
    await page.getByTestId('hands-free').click()
    const notice = page.getByTestId('chat-notice')
    await notice.getByText('You are out of Flux for voice input. Top up to keep talking.').waitFor()
    await notice.getByRole('button', { name: 'Top up' }).waitFor()
    await until(async () => await micState(page) === 'idle', 'the microphone to close')
    expect(await page.getByTestId('hands-free').getAttribute('aria-pressed')).toBe('false')
    expect(stt.sessions).toHaveLength(0)
    await chromium.shots(page, 'voice-out-of-flux')
    expect(consoleErrors).toEqual([])
  })
})
