import { sql } from 'kysely'
import * as oidc from 'openid-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { ADMIN_EMAIL, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

const WEB_CLIENT = 'airi-web'
const WEB_REDIRECT = 'http://localhost:5173/auth/callback'
const DESKTOP_CLIENT = 'airi-desktop'
const DESKTOP_SECRET = 'desktop-secret-value'

let server: TestServer
let user: TestUser
let admin: TestUser

beforeAll(async () => {
  server = await startTestServer({
    trustedClients: [
      { clientId: WEB_CLIENT, name: 'AIRI web', redirectUris: [WEB_REDIRECT], applicationType: 'web' },
      { clientId: DESKTOP_CLIENT, clientSecret: DESKTOP_SECRET, name: 'AIRI desktop', redirectUris: ['https://desktop.example.com/callback'], applicationType: 'web' },
    ],
  })
  user = await createVerifiedUser(server)
  admin = await createVerifiedUser(server, ADMIN_EMAIL)
})
afterAll(() => server.close())

interface ClientRow { clientId: string, name: string | null, redirectUris: unknown, clientSecret: string | null, disabled: boolean | null }

async function clientRows(): Promise<ClientRow[]> {
  const { rows } = await sql<ClientRow>`SELECT "clientId", name, "redirectUris", "clientSecret", disabled FROM "oauthClient" ORDER BY "clientId"`.execute(server.database.db)
  return rows
}

const attacker = { redirect_uris: ['https://evil.example.com/callback'], client_name: 'AIRI Official', token_endpoint_auth_method: 'none' }

/** Every client-management call the provider plugin offers, as a signed-in browser-less client would make it. */
const managementCalls: Array<{ method: 'GET' | 'POST' | 'PATCH', path: string, body?: unknown }> = [
  { method: 'POST', path: '/oauth2/create-client', body: attacker },
  { method: 'POST', path: '/oauth2/register', body: attacker },
  { method: 'GET', path: `/oauth2/get-client?client_id=${WEB_CLIENT}` },
  { method: 'GET', path: '/oauth2/get-clients' },
  { method: 'POST', path: '/oauth2/update-client', body: { client_id: WEB_CLIENT, update: { redirect_uris: attacker.redirect_uris } } },
  { method: 'POST', path: '/oauth2/client/rotate-secret', body: { client_id: DESKTOP_CLIENT } },
  { method: 'POST', path: '/oauth2/delete-client', body: { client_id: WEB_CLIENT } },
  { method: 'POST', path: '/admin/oauth2/create-client', body: attacker },
  { method: 'PATCH', path: '/admin/oauth2/update-client', body: { client_id: WEB_CLIENT, update: { redirect_uris: attacker.redirect_uris } } },
]

async function call(method: string, path: string, token: string, body?: unknown): Promise<Response> {
  return fetch(`${server.baseUrl}/api/auth${path}`, {
    method,
    headers: { 'authorization': `Bearer ${token}`, 'accept': 'application/json', ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
}

describe('OAuth client management', () => {
  it('is not served to a signed-in user or an admin, and no client is added, changed or removed', async () => {
    const before = await clientRows()
    expect(before.map(row => row.clientId)).toEqual([DESKTOP_CLIENT, WEB_CLIENT])

    const answers: string[] = []
    for (const who of [user, admin]) {
      for (const { method, path, body } of managementCalls)
        answers.push(`${method} ${path} → ${(await call(method, path, who.token, body)).status}`)
    }
    expect(answers).toEqual([...managementCalls, ...managementCalls].map(({ method, path }) => `${method} ${path} → 404`))
    expect(await clientRows()).toEqual(before)
  })

  it('stays closed when the path is written another way', async () => {
    const before = await clientRows()
    const variants = ['/oauth2/create-client/', '//oauth2/create-client', '/oauth2//create-client', '/oauth2/create-client?x=1', '/OAUTH2/CREATE-CLIENT', '/oauth2/create%2Dclient']
    const statuses: string[] = []
    for (const variant of variants) {
      const status = (await call('POST', variant, user.token, attacker)).status
      statuses.push(`${variant} → ${status >= 400 && status < 500 ? 'refused' : status}`)
    }
    expect(statuses).toEqual(variants.map(variant => `${variant} → refused`))
    expect(await clientRows()).toEqual(before)
  })

  it('refuses client changes inside the provider too, should a path ever be served again', async () => {
    const before = await clientRows()
    const headers = new Headers({ authorization: `Bearer ${admin.token}` })
    const { api: provider } = server.api.auth
    const refusals = await Promise.all([
      provider.createOAuthClient({ headers, body: attacker }),
      provider.getOAuthClients({ headers }),
      provider.updateOAuthClient({ headers, body: { client_id: WEB_CLIENT, update: { redirect_uris: attacker.redirect_uris } } }),
      provider.rotateClientSecret({ headers, body: { client_id: DESKTOP_CLIENT } }),
      provider.deleteOAuthClient({ headers, body: { client_id: WEB_CLIENT } }),
    ].map(promise => promise.then(() => 'served', (error: { statusCode?: number }) => error.statusCode)))
    expect(refusals).toEqual([401, 401, 401, 401, 401])
    expect(await clientRows()).toEqual(before)
  })

  it('still runs the env-configured clients, matching a loopback redirect URI on any port (RFC 8252)', async () => {
    const config = await oidc.discovery(new URL(`${server.baseUrl}/api/auth`), WEB_CLIENT, undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] })
    const authorize = async (redirectUri: string) => {
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope: 'openid',
        code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
        state: 'state',
      })
      const response = await fetch(url, { headers: { authorization: `Bearer ${user.token}`, accept: 'application/json' }, redirect: 'manual' })
      const { url: target } = await response.json() as { url?: string }
      return target ? new URL(target, server.baseUrl) : undefined
    }

    // The registered port, another port, and no port: only the port of a loopback http URI may vary.
    for (const redirectUri of [WEB_REDIRECT, 'http://localhost:49152/auth/callback', 'http://localhost/auth/callback']) {
      const target = await authorize(redirectUri)
      expect(`${target?.origin}${target?.pathname}`).toBe(redirectUri)
      expect(target?.searchParams.get('code')).toBeTruthy()
    }
    // Any other difference is refused: the code never goes there.
    for (const redirectUri of ['http://localhost:5173/auth/other', 'http://127.0.0.1:5173/auth/callback', 'http://example.com:5173/auth/callback']) {
      const target = await authorize(redirectUri)
      expect(target?.searchParams.get('code') ?? null).toBeNull()
      if (target)
        expect(target.origin).toBe(server.baseUrl)
    }
  })
})
