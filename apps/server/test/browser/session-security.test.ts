import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import Fastify from 'fastify'
import type { BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { OidcError, refreshTokens } from '@airi/sdk'

import { signInPlugin } from '../../src/plugins/sign-in.ts'
import { STAGE_WEB_DEV_CLIENT_ID } from '../../src/runtime.ts'
import { createVerifiedUser, emailTo, startTestServer, uniqueEmail, type TestServer } from '../harness.ts'
import { signInThroughApp } from './app.ts'
import { launchChromium, watchedTab, type TestBrowser } from './chromium.ts'

// How stage-web keeps its tokens (memory only, silent renewal through the cookie session),
// how sign-out ends everything, and the headers that keep injected scripts out.

let server: TestServer
let chromium: TestBrowser

beforeAll(async () => {
  // The same step `pnpm start` takes: build apps/stage-web when its dist is missing or stale.
  execFileSync('node', [fileURLToPath(new URL('../../../stage-web/scripts/build-if-stale.mjs', import.meta.url))], { stdio: 'inherit' })
  ;[chromium, server] = await Promise.all([launchChromium(), startTestServer({
    trustedClients: baseUrl => [{ clientId: STAGE_WEB_DEV_CLIENT_ID, name: 'AIRI web', redirectUris: [`${baseUrl}/app/callback`], applicationType: 'web' }],
  })])
}, 180_000)

afterAll(async () => {
  await chromium?.close()
  await server?.close()
})

/** Every access and refresh token the token endpoint hands to this browser. */
function recordTokens(context: BrowserContext): { access: string[], refresh: string[] } {
  const tokens = { access: [] as string[], refresh: [] as string[] }
  context.on('response', async (response) => {
    if (!response.url().endsWith('/api/auth/oauth2/token') || !response.ok())
      return
    const body = await response.json() as { access_token: string, refresh_token?: string }
    tokens.access.push(body.access_token)
    if (body.refresh_token)
      tokens.refresh.push(body.refresh_token)
  })
  return tokens
}

async function signedInAs(page: Page): Promise<string | null> {
  return page.getByTestId('signed-in-as').textContent({ timeout: 90_000 })
}

/** What a script on the page could read from storage and cookies. */
async function readableByScripts(page: Page): Promise<string> {
  return await page.evaluate('JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage), document.cookie])') as string
}

async function sessionOf(page: Page): Promise<unknown> {
  return page.evaluate(`fetch('/api/auth/get-session').then(response => response.json())`)
}

function policyOf(header: string | null): Map<string, string[]> {
  return new Map((header ?? '').split(';').map(part => part.trim()).filter(Boolean).map((part) => {
    const [name, ...sources] = part.split(/\s+/)
    return [name!, sources]
  }))
}

describe('stage-web sessions in Chromium', () => {
  it('keeps tokens only in memory, renews silently on reload and in a new tab, and signing out ends the session in every tab', async () => {
    const user = await createVerifiedUser(server)
    const { context, page, consoleErrors } = await chromium.newPage()
    const tokens = recordTokens(context)
    await signInThroughApp(server, page, user)

    await expect.poll(() => tokens.access.length).toBe(1)
    const stored = await readableByScripts(page)
    for (const token of [...tokens.access, ...tokens.refresh])
      expect(stored).not.toContain(token)

    // A reload forgets the tokens and gets new ones through prompt=none, back on the same URL.
    await page.goto(`${server.baseUrl}/app/account`)
    await page.getByRole('button', { name: 'Delete my account…' }).waitFor()
    await page.reload()
    await page.getByRole('button', { name: 'Delete my account…' }).waitFor()
    expect(new URL(page.url()).pathname).toBe('/app/account')
    expect(await signedInAs(page)).toBe(user.email)
    await expect.poll(() => tokens.access.length).toBe(3)
    expect(await readableByScripts(page)).not.toContain(tokens.refresh.at(-1))

    const second = await watchedTab(context)
    await second.page.goto(`${server.baseUrl}/app/account`)
    await second.page.getByRole('button', { name: 'Delete my account…' }).waitFor()
    expect(await signedInAs(second.page)).toBe(user.email)
    await expect.poll(() => tokens.refresh.length).toBe(4)
    const secondTabRefresh = tokens.refresh[3]!

    await page.getByRole('button', { name: 'Settings and account' }).click()
    await page.getByRole('button', { name: 'Sign out' }).click()
    await page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    // The other tab hears of it and drops its own grant.
    await second.page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    expect(await sessionOf(page)).toBeNull()
    const refused = await refreshTokens({ baseUrl: server.baseUrl, clientId: STAGE_WEB_DEV_CLIENT_ID, refreshToken: secondTabRefresh }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(OidcError)

    // On a shared computer the next person is asked for a password, not signed in silently.
    await page.reload()
    await page.getByRole('heading', { name: 'Welcome to AIRI' }).waitFor()
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForURL(url => url.pathname === '/sign-in')
    await page.locator('#password-form').getByLabel('Password').waitFor()
    expect([...consoleErrors, ...second.consoleErrors]).toEqual([])
  })

  it('signs in the tab where the e-mail verification link is opened', async () => {
    const email = uniqueEmail('verify-in-new-tab')
    const { context, page, consoleErrors } = await chromium.newPage()
    await page.goto(`${server.baseUrl}/app/`)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForURL(url => url.pathname === '/sign-in')
    await page.getByRole('button', { name: 'Create an account' }).click()
    const form = page.locator('#sign-up-form')
    await form.getByLabel('E-mail').fill(email)
    await form.getByLabel('Password', { exact: true }).fill('a long enough password')
    await form.getByLabel('Password again').fill('a long enough password')
    await form.getByRole('button', { name: 'Create account' }).click()
    await page.getByRole('heading', { name: 'Check your inbox' }).waitFor()

    // The link returns to an authorization the first tab started; this tab has no verifier for it.
    const mailed = await watchedTab(context)
    await mailed.page.goto(server.resend.linkIn(await emailTo(server, email, /verify/i)))
    await mailed.page.waitForURL(url => url.pathname.startsWith('/app/') && url.pathname !== '/app/callback')
    expect(await signedInAs(mailed.page)).toBe(email)
    expect([...consoleErrors, ...mailed.consoleErrors]).toEqual([])
  })
})

describe('security headers of /app/ and /sign-in', () => {
  it('gives the app, its fallback routes and its files the client\'s policy', async () => {
    for (const path of ['/app/', '/app/chats/x', '/app/callback?code=c&state=s']) {
      const response = await fetch(`${server.baseUrl}${path}`)
      expect(response.status, path).toBe(200)
      const policy = policyOf(response.headers.get('content-security-policy'))
      expect(Object.fromEntries(policy), path).toEqual({
        'default-src': [`'self'`],
        'script-src': [`'self'`],
        'style-src': [`'self'`],
        'img-src': [`'self'`, 'data:', 'blob:', 'https:'],
        'media-src': [`'self'`, 'blob:'],
        'connect-src': [`'self'`],
        'font-src': [`'self'`],
        'object-src': [`'none'`],
        'base-uri': [`'self'`],
        'form-action': [`'self'`],
        'frame-ancestors': [`'none'`],
      })
      expect(response.headers.get('x-content-type-options'), path).toBe('nosniff')
      expect(response.headers.get('referrer-policy'), path).toBe('no-referrer')
      // Vite's build has nothing inline that the policy would have to allow.
      expect(await response.text(), path).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=/)
    }
  })

  it('serves the sign-in page with its script as a built file under the page\'s nonce', async () => {
    const response = await fetch(`${server.baseUrl}/sign-in`)
    const policy = policyOf(response.headers.get('content-security-policy'))
    const nonce = /^'nonce-(.+)'$/.exec(policy.get('script-src')?.join(' ') ?? '')?.[1]
    expect(nonce).toBeDefined()
    const html = await response.text()
    const scripts = [...html.matchAll(/<script\b([^>]*)>([^<]*)<\/script>/g)]
    expect(scripts).toHaveLength(1)
    const [, attributes, inline] = scripts[0]!
    expect(inline).toBe('')
    expect(attributes).toContain(`nonce="${nonce}"`)
    const src = /src="(\/app\/assets\/sign-in-[\w-]+\.js)"/.exec(attributes!)?.[1]
    expect(src).toBeDefined()

    const script = await fetch(`${server.baseUrl}${src}`)
    expect(script.status).toBe(200)
    expect(script.headers.get('content-type')).toMatch(/^(?:application|text)\/javascript/)
    expect(script.headers.get('x-content-type-options')).toBe('nosniff')
  })

  it('says what to do when the web client is not built', async () => {
    const app = Fastify()
    await app.register(signInPlugin, { api: server.api, providers: [], clientRoot: '/nonexistent/stage-web/dist' })
    try {
      const response = await app.inject('/sign-in')
      expect(response.statusCode).toBe(200)
      expect(response.body).toContain('pnpm --filter @airi/stage-web build')
      expect(response.body).not.toContain('<script')
    }
    finally {
      await app.close()
    }
  })
})
