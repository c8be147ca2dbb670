import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { ELECTRON_RELAY_PATH } from '@airi/api'

import { startTestServer, type TestServer } from './harness.ts'

let server: TestServer

beforeAll(async () => {
  server = await startTestServer({ redisUrl: false, socialProviders: { github: true } })
})
afterAll(() => server.close())

/** The CSP as directive → sources. */
function csp(response: Response): Map<string, string[]> {
  const header = response.headers.get('content-security-policy') ?? ''
  return new Map(header.split(';').map(part => part.trim()).filter(Boolean).map((part) => {
    const [name, ...sources] = part.split(/\s+/)
    return [name!, sources]
  }))
}

/** Checks the headers of one of our pages and that its inline style and script carry the CSP's nonce; returns the nonce. */
async function expectProtectedPage(response: Response): Promise<string> {
  expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8')
  expect(response.headers.get('x-content-type-options')).toBe('nosniff')
  expect(response.headers.get('referrer-policy')).toBe('no-referrer')
  expect(response.headers.get('x-frame-options')).toBe('DENY')
  expect(response.headers.get('cache-control')).toBe('no-store')

  const policy = csp(response)
  expect(policy.get('frame-ancestors')).toEqual([`'none'`])
  expect(policy.get('default-src')).toEqual([`'none'`])
  expect(policy.get('form-action')).toEqual([`'none'`])
  expect(policy.get('base-uri')).toEqual([`'none'`])
  expect(policy.get('connect-src')).toEqual([`'self'`])
  const scriptSources = policy.get('script-src') ?? []
  expect(scriptSources).toHaveLength(1)
  const nonce = /^'nonce-([A-Za-z0-9+/=]{22,})'$/.exec(scriptSources[0]!)?.[1]
  expect(nonce, 'script-src allows exactly one nonce').toBeDefined()
  expect(policy.get('style-src')).toEqual([`'nonce-${nonce}'`])

  // Every <style> and <script> of the page (inline, or a built file of ours) runs under that nonce, and nothing else would.
  const html = await response.text()
  const tags = [...html.matchAll(/<(script|style)\b([^>]*)>/g)]
  expect(tags.length).toBeGreaterThan(0)
  for (const [tag, , attributes] of tags)
    expect(attributes!.replace(/ type="module" src="\/app\/assets\/[\w-]+\.js"$/, ''), tag).toBe(` nonce="${nonce}"`)
  return nonce!
}

describe('security headers of our HTML pages', () => {
  it('the sign-in page runs only its own script and style, and cannot be framed', async () => {
    const first = await expectProtectedPage(await fetch(`${server.baseUrl}/sign-in?client_id=airi-web&state=x`))
    const second = await expectProtectedPage(await fetch(`${server.baseUrl}/sign-in?client_id=airi-web&state=x`))
    expect(second).not.toBe(first)
  })

  it('the sign-in page refusing an unknown provider has them too', async () => {
    const response = await fetch(`${server.baseUrl}/sign-in?provider=google`)
    expect(response.status).toBe(400)
    await expectProtectedPage(response)
  })

  it('the desktop relay page has them, with the forwarding script allowed', async () => {
    const response = await fetch(`${server.baseUrl}${ELECTRON_RELAY_PATH}?code=abc&state=53127:inner`)
    expect(response.status).toBe(200)
    const nonce = await expectProtectedPage(response.clone())
    expect(await response.text()).toContain(`<script nonce="${nonce}">location.replace("http://127.0.0.1:53127/callback?code=abc&state=inner")</script>`)

    const refused = await fetch(`${server.baseUrl}${ELECTRON_RELAY_PATH}?code=abc&state=80:inner`)
    expect(refused.status).toBe(400)
    await expectProtectedPage(refused)
  })

  it('leaves JSON responses without a page policy', async () => {
    for (const path of ['/api/auth/ok', '/trpc/meta.info', '/livez']) {
      const response = await fetch(`${server.baseUrl}${path}`)
      expect(response.status, path).toBe(200)
      expect(response.headers.get('content-security-policy'), path).toBeNull()
    }
  })
})
