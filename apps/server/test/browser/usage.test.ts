import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { startFakeTtsUpstream, type FakeTtsUpstream } from '@airi/tooling/fakes/tts-upstream'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'
import { signInThroughApp } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

let server: TestServer
let chromium: TestBrowser
let llm: FakeUpstream
let tts: FakeTtsUpstream

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[chromium, llm, tts] = await Promise.all([launchChromium(), startFakeOpenAIUpstream({ name: 'llm' }), startFakeTtsUpstream()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  const sealed = (alias: string) => {
    const { keyId, ciphertext } = server.api.services.llmGateway.encryptKey(alias, 'k0', `sk-${alias}`)
    return [{ id: keyId, ciphertext }]
  }
  await server.api.services.config.set('LLM_ROUTER_CONFIG', {
    defaultModel: 'chat',
    models: {
      chat: { upstreams: [{ id: 'llm-chat', baseUrl: llm.url, model: 'upstream-chat', keys: sealed('chat') }], pricing: { inputPer1M: 2000, outputPer1M: 8000, cachedInputPer1M: 500 } },
      draft: { upstreams: [{ id: 'llm-draft', baseUrl: llm.url, model: 'upstream-draft', keys: sealed('draft') }] },
    },
  })
  await server.api.services.config.set('TTS_UPSTREAMS', { defaultModel: 'voice', models: { voice: { adapter: 'openai-compatible', baseUrl: tts.url, model: 'upstream-tts', keys: sealed('voice') } } })
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await Promise.all([llm?.close(), tts?.close()])
})

describe('stage-web: the Usage screen', () => {
  it('lists the calls made, charts their Flux by day and model, and shows the price of each chat model, on a phone and a desktop', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chromium.newPage()
    await signInThroughApp(server, page, user)
    const nav = page.getByRole('navigation', { name: 'Main' })
    await nav.getByRole('link', { name: 'Usage' }).click()
    await page.getByTestId('usage-empty').waitFor()

    llm.behave(() => ({ kind: 'complete', content: 'Hello!', usage: { prompt_tokens: 900, completion_tokens: 300 } }))
    await new OpenAI({ apiKey: user.token, baseURL: `${server.baseUrl}/api/v1/openai`, maxRetries: 0 }).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'Hi' }] })
    await new OpenAI({ apiKey: user.token, baseURL: `${server.baseUrl}/api/v1`, maxRetries: 0 }).audio.speech.create({ model: 'voice', voice: 'alloy', input: 'x'.repeat(1500) })

    // Another screen and back: the screen reads afresh.
    await nav.getByRole('link', { name: 'Account' }).click()
    await page.waitForURL(url => url.pathname === '/app/account')
    await nav.getByRole('link', { name: 'Usage' }).click()
    const rows = page.getByTestId('usage-calls').locator('tbody tr')
    await expect.poll(() => rows.count()).toBe(2)
    expect(await rows.evaluateAll(list => list.map(row => row.getAttribute('data-kind')))).toEqual(['tts', 'llm'])
    await expect.poll(() => rows.nth(0).textContent()).toMatch(/Speech\s*voice\s*1,500 characters\s*1$/)
    await expect.poll(() => rows.nth(1).textContent()).toMatch(/Chat API\s*chat\s*900 in \/ 300 out tokens\s*5$/)

    const chart = page.getByTestId('usage-chart')
    await chart.waitFor()
    // Something was drawn: the canvas has pixels that are not transparent.
    const drawn = `(() => {
      const canvas = document.querySelector('[data-testid="usage-chart"]')
      return canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data.some(value => value !== 0)
    })()`
    await expect.poll(() => page.evaluate(drawn)).toBe(true)

    const prices = page.getByTestId('usage-prices').locator('tbody tr')
    await expect.poll(() => prices.allTextContents()).toEqual([expect.stringMatching(/^chat\s*2,000\s*500\s*8,000$/), expect.stringMatching(/^draft.*standard rate/)])

    for (const [width, height] of [[390, 844], [1280, 800]] as const) {
      await page.setViewportSize({ width, height })
      // chart.js follows its box's width.
      await expect.poll(() => page.evaluate(`(() => {
        const canvas = document.querySelector('[data-testid="usage-chart"]')
        return Math.abs(canvas.getBoundingClientRect().width - canvas.parentElement.getBoundingClientRect().width) < 2
      })()`)).toBe(true)
    }
    await checkA11y(page, 'usage')
    await chromium.shots(page, 'usage')
    expect(consoleErrors).toEqual([])
  })
})
