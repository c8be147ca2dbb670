import { execFileSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { startFakeStreamingTtsUpstream, type FakeStreamingTtsUpstream } from '@airi/tooling/fakes/streaming-tts-upstream'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'
import { deviceOf } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

/**
 * Character cards in stage-web (docs/stage-web.md): import on the characters page by
 * the file picker and by drag and drop, the imported character's new chat with its
 * greeting, export as JSON and PNG downloads, and a card the server refuses, said in words.
 */

const FIXTURES = fileURLToPath(new URL('../../../../tooling/fixtures/cards/', import.meta.url))

/** The chat's first message: a bot chat opens with its character's greeting (the card's `first_mes`). */
const firstMessage = (page: Page) => page.locator('[data-testid="messages"] [data-role="assistant"] [data-testid="message-content"]').first().evaluate(element => element.textContent?.trim())

let server: TestServer
let chromium: TestBrowser
let tts: FakeStreamingTtsUpstream

beforeAll(async () => {
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[chromium, tts] = await Promise.all([launchChromium(), startFakeStreamingTtsUpstream()])
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
  // Voice is configured as in a deployment, so the chat screen loads its voices without an error.
  const key = server.api.services.llmGateway.encryptKey('streaming-tts', 'k0', 'sk-tts')
  await server.api.services.config.set('STREAMING_TTS_UPSTREAM', { url: tts.url, keys: [{ id: key.keyId, ciphertext: key.ciphertext }], models: [{ id: 'seed-tts-2.0' }] })
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
  await tts?.close()
})

/** The tEXt chunks of a PNG, by keyword, walked by chunk lengths. */
function textsOf(png: Buffer): Record<string, string> {
  const texts: Record<string, string> = {}
  for (let at = 8; at < png.length;) {
    const length = png.readUInt32BE(at)
    const name = png.toString('latin1', at + 4, at + 8)
    if (name === 'tEXt') {
      const data = png.subarray(at + 8, at + 8 + length)
      const end = data.indexOf(0)
      texts[data.toString('latin1', 0, end)] = data.toString('latin1', end + 1)
    }
    at += 12 + length
  }
  return texts
}

/** Clicks a character's export button and reads the file the browser downloads. */
async function download(page: Page, character: string, button: 'Export JSON' | 'Export PNG'): Promise<{ name: string, bytes: Buffer }> {
  const exportButton = page.getByTestId('own-characters').getByRole('article', { name: character }).getByRole('button', { name: button })
  const [file] = await Promise.all([page.waitForEvent('download'), exportButton.click()])
  const stream = await file.createReadStream()
  const chunks: Buffer[] = []
  for await (const chunk of stream)
    chunks.push(chunk as Buffer)
  return { name: file.suggestedFilename(), bytes: Buffer.concat(chunks) }
}

/** Drops `fileName` from the fixtures onto the import area, as a file dragged from the desktop. */
async function drop(page: Page, fileName: string, type: string): Promise<void> {
  const base64 = (await readFile(`${FIXTURES}${fileName}`)).toString('base64')
  const transfer = await page.evaluateHandle(`(() => {
    const bytes = Uint8Array.from(atob(${JSON.stringify(base64)}), c => c.charCodeAt(0))
    const transfer = new DataTransfer()
    transfer.items.add(new File([bytes], ${JSON.stringify(fileName)}, { type: ${JSON.stringify(type)} }))
    return transfer
  })()`)
  await page.getByTestId('card-drop').dispatchEvent('drop', { dataTransfer: transfer })
}

describe('character cards in stage-web', () => {
  it('imports a PNG card through the file picker into a chat with its greeting, and exports it as JSON and PNG', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    await page.getByRole('button', { name: 'Start chatting with AIRI' }).waitFor()

    const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.getByRole('button', { name: 'Import a card…' }).click()])
    await chooser.setFiles(`${FIXTURES}v2-chara.png`)
    // The imported character opens in a new chat; the card keeps {{char}} and {{user}}, the greeting reads them as the names (its *…* drawn as emphasis).
    await page.waitForURL(/\/app\/chats\/[^/]+$/)
    await expect.poll(() => firstMessage(page))
      .toBe(`Mirelle holds the lantern up to your face. You're lucky the tide didn't take you. Come in, ${user.email.split('@')[0]}, and mind the third step.`)

    await page.getByRole('link', { name: 'Characters', exact: true }).click()
    const json = await download(page, 'Mirelle', 'Export JSON')
    expect(json.name).toBe('mirelle.card.json')
    const card = JSON.parse(json.bytes.toString('utf8')) as { spec: string, data: Record<string, unknown> }
    expect(card).toMatchObject({ spec: 'chara_card_v3', data: { name: 'Mirelle', first_mes: expect.stringContaining('{{char}} holds the lantern') } })
    const png = await download(page, 'Mirelle', 'Export PNG')
    expect(png.name).toBe('mirelle.card.png')
    expect(JSON.parse(Buffer.from(textsOf(png.bytes).ccv3!, 'base64').toString('utf8'))).toEqual(card)
    await expect.poll(() => page.getByTestId('characters-status').textContent()).toBe('Exported Mirelle as mirelle.card.png.')
    expect(consoleErrors).toEqual([])
  })

  it('imports a JSON card dropped on the page, and says in words why a card is refused', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await deviceOf(server, chromium, user)
    await page.getByRole('button', { name: 'Start chatting with AIRI' }).waitFor()

    await drop(page, 'no-card.png', 'image/png')
    await expect.poll(() => page.getByTestId('characters-error').textContent()).toBe('Could not import no-card.png: PNG has no chara or ccv3 chunk')
    await checkA11y(page, 'the characters page with a refused card')
    await chromium.shots(page, 'character-card-refused')

    await drop(page, 'v3-lorebook.json', 'application/json')
    await page.waitForURL(/\/app\/chats\/[^/]+$/)
    await expect.poll(() => firstMessage(page)).toMatch(/^Captain Orrin Vale squints at your ticket/)
    // A failed call shows in the console as the browser's own 400 line; nothing else may.
    expect(consoleErrors.filter(line => !line.includes('status of 400'))).toEqual([])
  })
})
