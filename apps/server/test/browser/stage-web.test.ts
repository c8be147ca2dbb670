import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, startTestServer, type TestServer } from '../harness.ts'
import { launchChromium, type TestBrowser } from './chromium.ts'

let server: TestServer
let chromium: TestBrowser

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[server, chromium] = await Promise.all([
    startTestServer({ trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }] }),
    launchChromium(),
  ])
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
})

describe('stage-web in Chromium', () => {
  it('signs in through the OIDC flow, stays signed in across a reload, and signs out', async () => {
    const user = await createVerifiedUser(server)
    const { page, consoleErrors } = await chromium.newPage()
    await page.goto(`${server.baseUrl}/app/`)
    await chromium.screenshot(page, 'app-signed-out')
    await page.getByRole('button', { name: 'Sign in' }).click()

    // Our own /sign-in page, continuing the authorization request.
    await page.waitForURL(url => url.pathname === '/sign-in')
    await page.locator('#password-form').getByLabel('E-mail').fill(user.email)
    await page.locator('#password-form').getByLabel('Password').fill(user.password)
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()

    await page.waitForURL(url => url.pathname === '/app/' && !url.searchParams.has('code'))
    await expect.poll(() => page.getByTestId('signed-in-as').textContent()).toBe(user.email)
    await page.getByRole('button', { name: 'Create AIRI' }).waitFor()
    await chromium.screenshot(page, 'app-chat-empty')

    await page.reload()
    await expect.poll(() => page.getByTestId('signed-in-as').textContent()).toBe(user.email)

    await page.getByRole('button', { name: 'Flux', exact: true }).click()
    await page.getByTestId('flux-balance').getByText(/\d+ Flux/).waitFor()
    await chromium.screenshot(page, 'app-flux')
    await page.getByRole('button', { name: 'Account' }).click()
    await page.getByRole('button', { name: 'Delete my account…' }).waitFor()
    await chromium.screenshot(page, 'app-account')

    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    await page.reload()
    await page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    // A string runs in the page; this package's types have no DOM.
    expect(await page.evaluate('localStorage.getItem("airi.tokens")')).toBeNull()
    // Billing is not configured in this server: the Flux screen said so, nothing else went wrong.
    expect(consoleErrors.filter(text => !/status of 503/.test(text))).toEqual([])
  })
})
