import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import type { Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'
import { signInThroughApp } from './app.ts'
import { checkA11y, launchChromium, type TestBrowser } from './chromium.ts'

// The app's frame: routes a person can go Back through and reload, the menu with theme and
// language, the welcome screen; the screens themselves have their own tests.

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

const path = (page: Page) => new URL(page.url()).pathname
const menu = (page: Page) => page.getByRole('button', { name: /Settings and account|设置与账户/ })
// Wider than the window means a person has to scroll sideways.
const overflowsSideways = (page: Page) => page.evaluate('document.documentElement.scrollWidth > window.innerWidth')

describe('the stage-web shell', () => {
  it('welcomes a signed-out person, signs in, and opens each screen at its own URL (Back and reload work)', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chromium.newPage()
    await page.goto(`${server.baseUrl}/app/flux`)
    await page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    await checkA11y(page, 'welcome')
    await chromium.shots(page, 'app-welcome')

    await signInThroughApp(server, page, user, '/app/flux')
    // Sign-in returns to where the person was going.
    expect(path(page)).toBe('/app/flux')
    const nav = page.getByRole('navigation', { name: 'Main' })
    // (Screens that need an LLM or a voice configured are left to their own tests.)
    await nav.getByRole('link', { name: 'Account' }).click()
    await page.waitForURL(url => url.pathname === '/app/account')
    await page.goBack()
    await page.waitForURL(url => url.pathname === '/app/flux')
    await page.goForward()
    await page.waitForURL(url => url.pathname === '/app/account')
    // The reload renews silently through /app/callback and lands back here; the header may
    // show the person a moment before the URL has moved on, so the URL is waited for too.
    await page.reload()
    await expect.poll(() => page.getByTestId('signed-in-as').textContent()).toBe(user.email)
    await expect.poll(() => path(page)).toBe('/app/account')

    await page.goto(`${server.baseUrl}/app/no/such/screen`)
    await page.getByRole('heading', { name: 'Nothing here' }).waitFor()
    expect(consoleErrors).toEqual([])
  })

  it('fits a 390 px phone, switches theme and language from the menu (kept across a reload), and passes axe in both themes', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chromium.newPage()
    await page.setViewportSize({ width: 390, height: 844 })
    await signInThroughApp(server, page, user, '/app/account')
    await page.getByTestId('header-balance').waitFor()
    expect(await overflowsSideways(page)).toBe(false)
    // Everything in the header is on the screen (the sign-out once sat at x = 530).
    for (const box of await page.locator('header.top > *').evaluateAll(elements => elements.map(element => element.getBoundingClientRect().right)))
      expect(box).toBeLessThanOrEqual(390)

    await menu(page).click()
    await page.getByRole('button', { name: 'Sign out' }).waitFor()
    await chromium.screenshot(page, 'app-menu-390')
    await page.getByRole('radio', { name: 'Dark' }).check()
    expect(await page.evaluate('document.documentElement.dataset.theme')).toBe('dark')
    await checkA11y(page, 'menu, dark')
    await page.getByLabel('Language').selectOption('zh-CN')
    await page.getByRole('navigation', { name: '主导航' }).getByRole('link', { name: '用量' }).waitFor()
    expect(await page.evaluate('document.documentElement.lang')).toBe('zh-CN')

    await page.reload()
    await page.getByRole('navigation', { name: '主导航' }).waitFor()
    expect(await page.evaluate('document.documentElement.dataset.theme')).toBe('dark')
    await menu(page).click()
    await page.getByRole('radio', { name: '跟随系统' }).check()
    await page.getByLabel('语言').selectOption('en')
    await page.getByRole('navigation', { name: 'Main' }).waitFor()
    // Following the system again: the page changes with it (the media query's change event comes a frame later).
    await page.emulateMedia({ colorScheme: 'dark' })
    await expect.poll(() => page.evaluate('document.documentElement.dataset.theme')).toBe('dark')
    await page.emulateMedia({ colorScheme: 'light' })
    await expect.poll(() => page.evaluate('document.documentElement.dataset.theme')).toBe('light')
    await page.keyboard.press('Escape')
    await expect.poll(() => page.getByRole('button', { name: 'Sign out' }).isVisible()).toBe(false)
    await checkA11y(page, 'account, light')
    expect(consoleErrors).toEqual([])
  })
})
