import { execFileSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'
import { createCharacter, signInThroughApp } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

let server: TestServer
let chromium: TestBrowser

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  chromium = await launchChromium()
  server = await startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
})

describe('stage-web: download my data', () => {
  it('shows the profile and saves the export as a file from the Account screen, on a phone and a desktop', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chromium.newPage()
    await signInThroughApp(server, page, user)
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Account' }).click()
    await page.waitForURL(url => url.pathname === '/app/account')
    // Made once on the Account screen: its test cover and avatar are not served, and no screen here shows them.
    const characterId = await createCharacter(server, user, 'Exported')
    expect(await page.getByTestId('account-email').textContent()).toBe(user.email)
    await page.getByRole('heading', { name: 'Sign-in and devices' }).waitFor()
    await checkA11y(page, 'account')
    await chromium.shots(page, 'account')

    for (const [width, height] of [[390, 844], [1280, 800]] as const) {
      await page.setViewportSize({ width, height })
      const button = page.getByRole('button', { name: 'Download my data' })
      await button.waitFor()

      const [download] = await Promise.all([page.waitForEvent('download'), button.click()])
      expect(download.suggestedFilename()).toMatch(/^airi-export-\d{4}-\d{2}-\d{2}\.json$/)
      const document = JSON.parse(await readFile(await download.path(), 'utf8')) as { userId: string, tables: Record<string, Array<{ id?: string }>> }
      expect(document.userId).toBe(user.id)
      expect(document.tables.characters!.map(row => row.id)).toEqual([characterId])
      await page.getByRole('status').filter({ hasText: download.suggestedFilename() }).waitFor()
      await chromium.screenshot(page, `account-exported-${width}`)
    }
    expect(consoleErrors).toEqual([])
  })
})
