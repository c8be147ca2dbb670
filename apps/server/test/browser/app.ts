import type { Page } from 'playwright-core'
import { expect } from 'vitest'

import { createAiriClient } from '@airi/sdk'

import type { TestServer, TestUser } from '../harness.ts'
import type { TestBrowser } from './chromium.ts'

// What the stage-web tests do the way a person would: sign in through the app, and
// the few things set up through the SDK (a character) that are not under test.

/** Signs in through the app's welcome screen, our /sign-in page and the OIDC callback. */
export async function signInThroughApp(server: TestServer, page: Page, user: TestUser, from = '/app/'): Promise<void> {
  await page.goto(`${server.baseUrl}${from}`)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(url => url.pathname === '/sign-in')
  await page.locator('#password-form').getByLabel('E-mail').fill(user.email)
  await page.locator('#password-form').getByLabel('Password').fill(user.password)
  await page.getByRole('button', { name: 'Sign in', exact: true }).click()
  // Back in the app, wherever it was going (the callback's code traded).
  await page.waitForURL(url => url.pathname.startsWith('/app/') && url.pathname !== '/app/callback' && !url.searchParams.has('code'))
  await expect.poll(() => page.getByTestId('signed-in-as').textContent()).toBe(user.email)
}

/** A signed-in page (a device of its own); the test checks its console errors at the end. */
export async function deviceOf(server: TestServer, chromium: TestBrowser, user: TestUser) {
  const device = await chromium.newPage()
  await signInThroughApp(server, device.page, user)
  return device
}

export async function createCharacter(server: TestServer, user: TestUser, name: string): Promise<string> {
  const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
  const created = await sdk.characters.create.mutate({
    characterId: name.toLowerCase(),
    version: '1',
    // A picture the server has: a missing one is a 404, and so a console error.
    coverUrl: `${server.baseUrl}/app/favicon.svg`,
    avatarUrl: `${server.baseUrl}/app/favicon.svg`,
    covers: [],
    capabilities: [],
    avatarModels: [],
    i18n: [{ language: 'en', name, description: `${name}, a test character.` }],
    prompts: [{ language: 'en', type: 'system', content: `You are ${name}.` }],
  })
  return created.id
}

/** Records every text the page's streaming bubble shows, as it renders it. */
export async function recordStreamingTexts(page: Page): Promise<void> {
  await page.evaluate(`(() => {
    window.__replyTexts = []
    new MutationObserver(() => {
      const bubble = document.querySelector('[data-testid="streaming-reply"]')
      if (bubble) window.__replyTexts.push(bubble.textContent)
    }).observe(document.body, { subtree: true, childList: true, characterData: true })
  })()`)
}
