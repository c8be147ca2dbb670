import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createVerifiedUser, emailTo, startTestServer, uniqueEmail, type TestServer } from '../harness.ts'
import { launchChromium, type TestBrowser } from './chromium.ts'

let server: TestServer
let chromium: TestBrowser

beforeAll(async () => {
  // The page's script is a file of the web client's build, as under `pnpm start`.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[server, chromium] = await Promise.all([startTestServer(), launchChromium()])
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
})

describe('the /sign-in page in Chromium', () => {
  it('creates an account: the inbox state, the mailed link signs in, then password sign-in works', async () => {
    const { page, consoleErrors } = await chromium.newPage()
    const email = uniqueEmail('browser-signup')
    await page.goto(`${server.baseUrl}/sign-in`)
    await page.getByRole('button', { name: 'Create an account' }).click()
    const form = page.locator('#sign-up-form')
    await form.getByLabel('Name').fill('Browser User')
    await form.getByLabel('E-mail').fill(email)
    await form.getByLabel('Password', { exact: true }).fill('a long enough password')
    await form.getByLabel('Password again').fill('a long enough password')
    await chromium.screenshot(page, 'sign-in-create-account')
    await form.getByRole('button', { name: 'Create account' }).click()

    await page.getByRole('heading', { name: 'Check your inbox' }).waitFor()
    expect(await page.locator('#inbox-address').textContent()).toBe(email)
    await chromium.screenshot(page, 'sign-in-check-inbox')

    const mail = await emailTo(server, email, /verify/i)
    await page.goto(server.resend.linkIn(mail))
    await page.getByRole('heading', { name: 'You are signed in' }).waitFor()
    expect(await page.getByRole('status').textContent()).toMatch(/verified/)
    // The verification left a session cookie for our origin.
    const session = await page.evaluate(async () => (await fetch('/api/auth/get-session')).json() as Promise<{ user?: { email: string } } | null>)
    expect(session?.user?.email).toBe(email)

    const other = await chromium.newPage()
    await other.page.goto(`${server.baseUrl}/sign-in`)
    await other.page.locator('#password-form').getByLabel('E-mail').fill(email)
    await other.page.locator('#password-form').getByLabel('Password').fill('a long enough password')
    await other.page.getByRole('button', { name: 'Sign in', exact: true }).click()
    await other.page.getByRole('heading', { name: 'You are signed in' }).waitFor()
    expect([...consoleErrors, ...other.consoleErrors]).toEqual([])
  })

  it('forgot password: the mailed link opens the reset form, the new password signs in, the old one does not', async () => {
    const user = await createVerifiedUser(server, uniqueEmail('browser-reset'))
    const { page } = await chromium.newPage()
    await page.goto(`${server.baseUrl}/sign-in`)
    await page.getByRole('button', { name: 'Forgot your password?' }).click()
    await page.locator('#forgot-form').getByLabel('E-mail').fill(user.email)
    await chromium.screenshot(page, 'sign-in-forgot-password')
    await page.getByRole('button', { name: 'Send the link' }).click()
    await page.getByText('we sent it a link to choose a new password').waitFor()

    const mail = await emailTo(server, user.email, /reset/i)
    const link = server.resend.linkIn(mail)
    await page.goto(link)
    await page.getByRole('heading', { name: 'Choose a new password' }).waitFor()
    await page.getByLabel('New password', { exact: true }).fill('a brand new password')
    await page.getByLabel('New password again').fill('a brand new password')
    await chromium.screenshot(page, 'sign-in-reset-password')
    await page.getByRole('button', { name: 'Change password' }).click()
    await page.getByText('Your password is changed').waitFor()
    // The token is gone from the address bar, so a reload does not offer the form again.
    expect(new URL(page.url()).searchParams.has('token')).toBe(false)

    const signInForm = page.locator('#password-form')
    await signInForm.getByLabel('E-mail').fill(user.email)
    await signInForm.getByLabel('Password').fill(user.password)
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
    await page.getByRole('alert').getByText('Wrong e-mail or password.').waitFor()
    await chromium.screenshot(page, 'sign-in-error')

    await signInForm.getByLabel('Password').fill('a brand new password')
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
    await page.getByRole('heading', { name: 'You are signed in' }).waitFor()

    // The link works once: opening it again says so and offers a new one.
    await page.goto(link)
    await page.getByRole('heading', { name: 'Reset your password' }).waitFor()
    expect(await page.getByRole('alert').textContent()).toMatch(/expired or was already used/)
  })

  it('explains mistakes: passwords that differ, an unverified address, an expired verification link', async () => {
    const { page } = await chromium.newPage()
    const email = uniqueEmail('browser-errors')
    await page.goto(`${server.baseUrl}/sign-in`)
    await page.getByRole('button', { name: 'Create an account' }).click()
    const form = page.locator('#sign-up-form')
    await form.getByLabel('E-mail').fill(email)
    await form.getByLabel('Password', { exact: true }).fill('a long enough password')
    await form.getByLabel('Password again').fill('another long password')
    await form.getByRole('button', { name: 'Create account' }).click()
    await page.getByRole('alert').getByText('The two passwords differ.').waitFor()

    await form.getByLabel('Password again').fill('a long enough password')
    await form.getByRole('button', { name: 'Create account' }).click()
    await page.getByRole('heading', { name: 'Check your inbox' }).waitFor()

    // Signing in before opening the link: told why, and a fresh link is sent.
    await page.getByRole('button', { name: 'Back to sign-in' }).click()
    await page.locator('#password-form').getByLabel('E-mail').fill(email)
    await page.locator('#password-form').getByLabel('Password').fill('a long enough password')
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
    await page.getByRole('alert').getByText(/not verified yet/).waitFor()

    await page.goto(`${server.baseUrl}/api/auth/verify-email?token=not-a-token&callbackURL=${encodeURIComponent('/sign-in?verified=1')}`)
    await page.getByRole('heading', { name: 'Sign in to AIRI' }).waitFor()
    expect(await page.getByRole('alert').textContent()).not.toBe('')
  })
})
