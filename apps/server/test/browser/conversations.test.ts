import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { AiriError, createAiriClient, createReplyFollower, followReply, type AiriClient, type ChatEvent, type WebSocketConstructor } from '@airi/sdk'
import { createPacer, startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'
import { until } from '@airi/tooling/test/until'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer, type TestUser } from '../harness.ts'
import { createCharacter as createCharacterOf, deviceOf, recordStreamingTexts } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

/**
 * Replies made on the server as stage-web shows them (docs/stage-web.md): one call
 * per turn, the reply growing on every open device, Stop that keeps the partial
 * reply, regenerate, edit and delete from another device; and the SDK's reply
 * followers in Node. The fake upstream's pacer lets the reply out piece by piece,
 * so a half-made reply is looked at without timing.
 */

const STORY = 'Once upon a time, a fox found a lantern in the snow and carried it home.'

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let tts: FakeStreamingTtsUpstream
const clients: AiriClient[] = []

beforeAll(async () => {
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[llm, tts, chromium] = await Promise.all([startFakeOpenAIUpstream({ name: 'conversations' }), startFakeStreamingTtsUpstream(), launchChromium()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  const { config, llmGateway } = server.api.services
  const key = llmGateway.encryptKey('chat', 'k0', 'sk-llm')
  await config.set('LLM_ROUTER_CONFIG', { defaultModel: 'chat', models: { chat: { upstreams: [{ id: 'fake', baseUrl: llm.url, model: 'fake-model', keys: [{ id: key.keyId, ciphertext: key.ciphertext }] }] } } })
  // Voice is configured as it would be in a deployment, and switched off on each device (stage-web.test.ts covers it).
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
  const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(sdk)
  return sdk
}

const createCharacter = (user: TestUser, name: string) => createCharacterOf(server, user, name)

/** A new bot chat of `user` with their character `characterId` (a chat is a URL: the test opens it). */
async function createChat(user: TestUser, characterId: string): Promise<string> {
  return (await sdkOf(user).chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: characterId }] })).id
}

/** A device of `user` on the chat `chatId`, live, its replies not spoken. */
async function chatDevice(user: TestUser, chatId: string) {
  const device = await deviceOf(server, chromium, user)
  await device.page.goto(`${server.baseUrl}/app/chats/${chatId}`)
  await device.page.locator('[data-live="on"]').waitFor()
  await device.page.locator('[role="feed"][aria-busy="false"]').waitFor({ state: 'attached' })
  await device.page.getByTestId('voice-settings').click()
  await device.page.getByTestId('speak-replies').uncheck()
  await device.page.getByTestId('voice-settings').click()
  return device
}

// Replies are Markdown: a paragraph's text has no trailing space of its own.
const streamingText = async (page: Page) => (await page.getByTestId('streaming-reply').textContent())?.trim()
const texts = async (page: Page, role: string) => (await page.locator(`[data-role="${role}"] [data-testid="message-content"]`).allTextContents()).map(text => text.trim())
const assistantTexts = (page: Page) => texts(page, 'assistant')
const userTexts = (page: Page) => texts(page, 'user')
const lastAssistant = (page: Page) => page.locator('[data-role="assistant"]').last()
const composer = (page: Page) => page.getByRole('textbox', { name: 'Message', exact: true })

async function send(page: Page, text: string): Promise<void> {
  await composer(page).fill(text)
  await page.getByRole('button', { name: 'Send' }).click()
}

describe('server-made replies in stage-web', () => {
  it('shows the reply growing on a second device, and a reply stopped from that device stays, marked, after a reload', async () => {
    llm.reset()
    const user = await createVerifiedUser(server)
    const chatId = await createChat(user, await createCharacter(user, 'Kiki'))
    const first = await chatDevice(user, chatId)
    await first.page.getByText('No messages yet. Say hello to Kiki.').waitFor()
    const second = await chatDevice(user, chatId)
    await recordStreamingTexts(second.page)

    const pacer = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace: pacer }))
    await send(first.page, 'Tell me a story')
    pacer.release(4)
    // Half-made, on both devices: the sender's and the other one, which sent nothing.
    await expect.poll(() => streamingText(second.page)).toBe('Once upon a time,')
    await expect.poll(() => streamingText(first.page)).toBe('Once upon a time,')
    expect(await second.page.getByTestId('streaming-reply').getAttribute('aria-busy')).toBe('true')
    await chromium.shots(first.page, 'chat-streaming')
    pacer.releaseAll()
    await expect.poll(() => assistantTexts(second.page)).toEqual([STORY])
    await expect.poll(() => assistantTexts(first.page)).toEqual([STORY])
    await second.page.getByTestId('streaming-reply').waitFor({ state: 'detached' })
    const seen = [...new Set((await second.page.evaluate('window.__replyTexts') as string[]).map(text => text.trim()))]
    // The second device saw a part of the reply before the whole of it, and only prefixes of it.
    expect(seen).toContain('Once upon a time,')
    expect(seen.every(text => STORY.startsWith(text))).toBe(true)
    // Screen readers hear the reply once, when it ends.
    expect(await second.page.getByTestId('reply-announcement').textContent()).toBe(`Kiki replied: ${STORY}`)
    expect(await userTexts(second.page)).toEqual(['Tell me a story'])

    // A reply that keeps coming until it is stopped, from the device that did not ask for it.
    const slow = createPacer()
    llm.behave(() => ({ kind: 'complete', content: 'And then the fox walked on and on through the night.', pace: slow }))
    await send(first.page, 'Go on')
    slow.release(3)
    await expect.poll(() => streamingText(second.page)).toBe('And then the')
    await second.page.getByTestId('stop-reply').click()
    await until(() => llm.requests.at(-1)!.aborted, 'the upstream call to be abandoned')
    for (const page of [first.page, second.page]) {
      await page.getByTestId('streaming-reply').waitFor({ state: 'detached' })
      await expect.poll(() => assistantTexts(page)).toEqual([STORY, 'And then the'])
      expect(await lastAssistant(page).getAttribute('data-status')).toBe('stopped')
      await lastAssistant(page).getByTestId('stopped-mark').waitFor()
    }
    // With the last reply's actions (regenerate among them) shown, as on hover.
    await lastAssistant(first.page).hover()
    await chromium.shots(first.page, 'chat-stopped')

    await first.page.reload()
    await expect.poll(() => assistantTexts(first.page)).toEqual([STORY, 'And then the'])
    await lastAssistant(first.page).getByTestId('stopped-mark').waitFor()
    // One upstream call per turn, none of them by the browser.
    expect(llm.requests.filter(request => request.path === '/v1/chat/completions')).toHaveLength(2)
    expect([...first.consoleErrors, ...second.consoleErrors]).toEqual([])
  })

  it('regenerates the last reply, and edits and deletes messages, live on another device', async () => {
    llm.reset()
    const user = await createVerifiedUser(server)
    const chatId = await createChat(user, await createCharacter(user, 'Momo'))
    const first = await chatDevice(user, chatId)
    const second = await chatDevice(user, chatId)

    llm.behave(() => ({ kind: 'complete', content: 'A first answer.' }))
    await send(first.page, 'Hello Momo')
    await expect.poll(() => assistantTexts(second.page)).toEqual(['A first answer.'])

    // Regenerate: the newest answer takes the old one's place on both devices.
    llm.behave(() => ({ kind: 'complete', content: 'A better answer.' }))
    await lastAssistant(first.page).hover()
    await lastAssistant(first.page).getByRole('button', { name: 'Regenerate' }).click()
    await expect.poll(() => assistantTexts(first.page)).toEqual(['A better answer.'])
    await expect.poll(() => assistantTexts(second.page)).toEqual(['A better answer.'])

    // Edit my message on the first device; the second shows the new text.
    const mine = first.page.locator('[data-role="user"]').first()
    await mine.hover()
    await mine.getByRole('button', { name: 'Edit' }).click()
    await mine.getByLabel('Edit message').fill('Hello again, Momo')
    await mine.getByRole('button', { name: 'Save' }).click()
    await expect.poll(() => userTexts(second.page)).toEqual(['Hello again, Momo'])
    expect(await userTexts(first.page)).toEqual(['Hello again, Momo'])
    // Only my own user messages can be edited.
    expect(await lastAssistant(first.page).getByRole('button', { name: 'Edit' }).count()).toBe(0)

    // The actions, and the delete confirmation, as a person sees them.
    await lastAssistant(second.page).hover()
    await lastAssistant(second.page).getByRole('button', { name: 'Delete' }).click()
    await lastAssistant(second.page).getByText('Delete this message?').waitFor()
    await chromium.shots(second.page, 'chat-actions')
    await checkA11y(second.page, 'the chat screen, with a delete confirmation')
    await lastAssistant(second.page).getByRole('button', { name: 'Delete', exact: true }).click()
    // The newest answer is gone; the one it had replaced is the newest again.
    await expect.poll(() => assistantTexts(first.page)).toEqual(['A first answer.'])
    await expect.poll(() => assistantTexts(second.page)).toEqual(['A first answer.'])
    expect(await userTexts(first.page)).toEqual(['Hello again, Momo'])

    // What the server holds: the edited message and the first answer (the regenerated one was deleted).
    const sdk = sdkOf(user)
    const [chat] = await sdk.chats.list.query()
    const { messages } = await sdk.chats.pullMessages.query({ chatId: chat!.id })
    expect(messages.map(message => [message.role, message.content])).toEqual([['user', 'Hello again, Momo'], ['assistant', 'A first answer.']])
    expect([...first.consoleErrors, ...second.consoleErrors]).toEqual([])
  })

  it('keeps a growing reply in view while the list is at its bottom, and leaves a person who scrolled up where they are', async () => {
    llm.reset()
    const user = await createVerifiedUser(server)
    const character = await createCharacter(user, 'Lulu')
    // A long history, stored by the client as a local model's replies would be.
    const sdk = sdkOf(user)
    const chat = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: character }] })
    await sdk.chats.sendMessages.mutate({ chatId: chat.id, messages: Array.from({ length: 30 }, (_, index) => ({ id: crypto.randomUUID(), role: index % 2 ? 'assistant' as const : 'user' as const, content: `Message number ${index + 1}` })) })
    const { page, consoleErrors } = await chatDevice(user, chat.id)
    await page.setViewportSize({ width: 390, height: 844 })
    const list = page.getByTestId('messages')
    const fromBottom = () => list.evaluate(element => element.scrollHeight - element.scrollTop - element.clientHeight)
    const scrollTop = () => list.evaluate(element => element.scrollTop)
    await expect.poll(fromBottom).toBeLessThan(2)

    const pacer = createPacer()
    const lines = Array.from({ length: 40 }, (_, index) => `Line ${index + 1}\n`).join('')
    llm.behave(() => ({ kind: 'complete', content: lines, pace: pacer }))
    await send(page, 'Count for me')
    pacer.release(16)
    await expect.poll(() => streamingText(page)).toContain('Line 8')
    await expect.poll(fromBottom).toBeLessThan(2)
    // On a phone, the page itself does not scroll: the composer stays on screen, the reply's end above it.
    const layout = await page.evaluate(`(() => {
      const box = selector => document.querySelector(selector).getBoundingClientRect()
      return { pageScrolls: document.documentElement.scrollHeight > innerHeight, composer: box('form.composer').bottom, reply: box('[data-testid="streaming-reply"]').bottom, list: box('[data-testid="messages"]').bottom, height: innerHeight }
    })()`) as { pageScrolls: boolean, composer: number, reply: number, list: number, height: number }
    expect(layout.pageScrolls).toBe(false)
    expect(layout.composer).toBeLessThanOrEqual(layout.height)
    expect(layout.reply).toBeLessThanOrEqual(layout.list + 1)

    // Scrolled up: the reply grows below without moving the view; "Latest" brings it back.
    await list.evaluate((element) => {
      element.scrollTop = 0
    })
    await page.getByTestId('jump-to-latest').waitFor()
    pacer.release(16)
    await expect.poll(() => streamingText(page)).toContain('Line 16')
    expect(await scrollTop()).toBe(0)
    await page.getByTestId('jump-to-latest').click()
    await expect.poll(fromBottom).toBeLessThan(2)
    pacer.releaseAll()
    await expect.poll(async () => (await lastAssistant(page).getByTestId('message-content').textContent())?.trim()).toBe(lines.trim())
    await expect.poll(fromBottom).toBeLessThan(2)
    expect(consoleErrors).toEqual([])
  })

  it('says what to do when the Flux ran out (Top up) and when a reply failed (Try again)', async () => {
    llm.reset()
    const user = await createVerifiedUser(server)
    const chatId = await createChat(user, await createCharacter(user, 'Nana'))
    const { page, consoleErrors } = await chatDevice(user, chatId)

    // A call priced above the balance: 402, nothing stored, the draft given back.
    const { config } = server.api.services
    await config.set('FLUX_PER_REQUEST', 1000)
    try {
      await send(page, 'Are you there?')
      await page.getByTestId('chat-notice').getByText('You are out of Flux. Top up to keep talking.').waitFor()
    }
    finally {
      await config.set('FLUX_PER_REQUEST', 1)
    }
    expect(await composer(page).inputValue()).toBe('Are you there?')
    expect(await userTexts(page)).toEqual([])
    await page.getByRole('button', { name: 'Top up' }).click()
    await page.waitForURL(url => url.pathname === '/app/flux')
    // "Chat" goes back to the chat open last, whose draft waited.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Chat' }).click()
    await page.waitForURL(url => url.pathname === `/app/chats/${chatId}`)
    await page.locator('[data-live="on"]').waitFor()
    expect(await composer(page).inputValue()).toBe('Are you there?')

    llm.behave(() => ({ kind: 'status', status: 500 }))
    await page.getByRole('button', { name: 'Send' }).click()
    await page.getByTestId('chat-notice').getByText('The reply failed — try again.').waitFor()
    expect(await assistantTexts(page)).toEqual([])
    await chromium.shots(page, 'chat-failed')

    llm.behave(() => ({ kind: 'complete', content: 'I am here now.' }))
    await page.getByRole('button', { name: 'Try again' }).click()
    await expect.poll(() => assistantTexts(page)).toEqual(['I am here now.'])
    expect(await userTexts(page)).toEqual(['Are you there?'])
    // The browser reports the 402 answer itself; that one is expected.
    expect(consoleErrors.filter(error => !/status of 402 .*chats\.respond/.test(error))).toEqual([])
  })
})

describe('the SDK\'s reply followers', () => {
  async function botChat(user: TestUser): Promise<{ sdk: AiriClient, chatId: string }> {
    const sdk = sdkOf(user)
    const character = await createCharacter(user, 'Sora')
    const chat = await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: character }] })
    return { sdk, chatId: chat.id }
  }

  it('followReply grows the text and resolves with the stored message', async () => {
    const user = await createVerifiedUser(server)
    const { sdk, chatId } = await botChat(user)
    const pacer = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace: pacer }))
    pacer.release(2)
    const { reply } = await sdk.chats.respond.mutate({ chatId, message: { id: crypto.randomUUID(), content: 'A story?' } })
    await until(async () => (await sdk.chats.getReply.query({ chatId, replyId: reply.id })).text === 'Once upon ', 'two pieces made')
    const texts: string[] = []
    const following = followReply(sdkOf(user), { chatId, replyId: reply.id, onText: text => void texts.push(text) })
    // It joined late: the text made before it subscribed comes from getReply.
    await until(() => texts.at(-1) === 'Once upon ', 'the text made before following')
    pacer.releaseAll()
    const stored = await following
    expect(stored).toMatchObject({ role: 'assistant', content: STORY, metadata: { replyId: reply.id, status: 'complete' } })
    expect(texts.at(-1)).toBe(STORY)
    expect(texts.every((text, index) => index === 0 || text.startsWith(texts[index - 1]!))).toBe(true)
  })

  it('a follower fed events with a gap repairs it with getReply; a failed reply rejects with an AiriError', async () => {
    const user = await createVerifiedUser(server)
    const { sdk, chatId } = await botChat(user)
    const pacer = createPacer()
    llm.behave(() => ({ kind: 'complete', content: STORY, pace: pacer }))
    const { reply } = await sdk.chats.respond.mutate({ chatId, message: { id: crypto.randomUUID(), content: 'A story?' } })
    const follower = createReplyFollower(sdk, { chatId, replyId: reply.id })
    let dropped = 0
    let ready = false
    // A subscription that loses the second delta, as a flaky connection would.
    const subscription = sdkOf(user).chats.onMessages.subscribe(undefined, {
      onData: ({ data }: { data: ChatEvent }) => {
        ready ||= data.type === 'ready'
        if (data.type === 'reply' && data.offset > 0 && dropped === 0)
          dropped++
        else
          follower.push(data)
      },
    })
    await until(() => ready, 'the subscription to be live')
    pacer.release(1)
    await until(() => follower.text === 'Once ', 'the first delta')
    pacer.release(1)
    await until(() => dropped === 1, 'the second delta, dropped')
    pacer.release(1)
    await until(() => follower.text === 'Once upon a ', 'the text after the gap')
    pacer.releaseAll()
    expect((await follower.done).content).toBe(STORY)
    expect(follower.text).toBe(STORY)
    subscription.unsubscribe()

    llm.behave(() => ({ kind: 'status', status: 500 }))
    const failed = await sdk.chats.respond.mutate({ chatId, message: { id: crypto.randomUUID(), content: 'Again?' } })
    const error = await followReply(sdk, { chatId, replyId: failed.reply.id }).catch((cause: unknown) => cause)
    expect(error).toBeInstanceOf(AiriError)
    expect(error).toMatchObject({ status: 502, details: { replyId: failed.reply.id } })
    expect((error as AiriError).code).toMatch(/^[A-Z_]+$/)
  })
})
