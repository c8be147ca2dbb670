import { createHash } from 'node:crypto'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import {
  buildAuthorizeUrl,
  createAiriClient,
  createPkcePair,
  createState,
  endBrowserSession,
  exchangeCode,
  OidcError,
  parseCallback,
  refreshTokens,
  revokeToken,
  type AiriClient,
  type PkcePair,
} from '@airi/sdk'

import { authPost, createVerifiedUser, signIn, startTestServer, type TestServer, type TestUser } from './harness.ts'

const WEB = { clientId: 'airi-web', redirectUri: 'http://localhost:5173/auth/callback' }
const DESKTOP = { clientId: 'airi-desktop', clientSecret: 'desktop-secret', redirectUri: 'http://localhost:5173/desktop/callback' }

let server: TestServer
let user: TestUser
const clients: AiriClient[] = []

beforeAll(async () => {
  server = await startTestServer({
    trustedClients: [
      { clientId: WEB.clientId, name: 'web', redirectUris: [WEB.redirectUri], applicationType: 'web' },
      { clientId: DESKTOP.clientId, clientSecret: DESKTOP.clientSecret, name: 'desktop', redirectUris: [DESKTOP.redirectUri], applicationType: 'web' },
    ],
  })
  user = await createVerifiedUser(server)
})
afterAll(async () => {
  await Promise.all(clients.map(client => client.close()))
  await server?.close()
})

interface Started { pkce: PkcePair, state: string, url: string }

async function start(client: { clientId: string, redirectUri: string }, prompt?: 'none'): Promise<Started> {
  const pkce = await createPkcePair()
  const state = createState()
  const url = buildAuthorizeUrl({ baseUrl: server.baseUrl, clientId: client.clientId, redirectUri: client.redirectUri, codeChallenge: pkce.codeChallenge, state, prompt })
  return { pkce, state, url }
}

/** The authorize endpoint's JSON answer (what better-auth's client reads instead of following a 302). */
async function authorize(url: string, sessionToken?: string): Promise<string> {
  const response = await fetch(url, { headers: { accept: 'application/json', ...(sessionToken ? { authorization: `Bearer ${sessionToken}` } : {}) } })
  expect(response.status).toBe(200)
  const body = await response.json() as { redirect: boolean, url: string }
  expect(body.redirect).toBe(true)
  return body.url
}

/** A signed-in user approves: the provider redirects to the client's callback with a code. */
async function codeFor(client: { clientId: string, redirectUri: string }, sessionToken = user.token): Promise<Started & { code: string }> {
  const started = await start(client)
  const callback = await authorize(started.url, sessionToken)
  expect(callback.startsWith(`${client.redirectUri}?`)).toBe(true)
  const { code } = parseCallback(callback, started.state)
  return { ...started, code }
}

async function oidcFailure(promise: Promise<unknown>): Promise<OidcError> {
  const error = await promise.then(() => undefined, (e: unknown) => e)
  expect(error).toBeInstanceOf(OidcError)
  return error as OidcError
}

function jwtPayload(token: string): Record<string, unknown> {
  const parts = token.split('.')
  expect(parts).toHaveLength(3)
  return JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>
}

function sdk(accessToken: () => string): AiriClient {
  const client = createAiriClient({ baseUrl: server.baseUrl, getToken: accessToken })
  clients.push(client)
  return client
}

describe('public client (PKCE)', () => {
  it('exchanges the code for a JWT the API accepts, and rotates the refresh token', async () => {
    const { code, pkce } = await codeFor(WEB)
    const tokens = await exchangeCode({ baseUrl: server.baseUrl, clientId: WEB.clientId, code, codeVerifier: pkce.codeVerifier, redirectUri: WEB.redirectUri })

    expect(tokens.tokenType.toLowerCase()).toBe('bearer')
    expect(tokens.expiresIn).toBeGreaterThan(0)
    expect(tokens.expiresAt.getTime()).toBeGreaterThan(Date.now())
    expect(tokens.idToken).toBeTruthy()
    expect(tokens.refreshToken).toBeTruthy()
    const claims = jwtPayload(tokens.accessToken)
    expect(claims).toMatchObject({ sub: user.id, iss: `${server.baseUrl}/api/auth` })
    // With `openid` the userinfo endpoint is an audience too, next to our API.
    expect([claims.aud].flat()).toContain(server.baseUrl)

    let current = tokens.accessToken
    const client = sdk(() => current)
    expect((await client.auth.me.query()).user).toMatchObject({ id: user.id, email: user.email })

    const refreshed = await refreshTokens({ baseUrl: server.baseUrl, clientId: WEB.clientId, refreshToken: tokens.refreshToken! })
    expect(refreshed.accessToken).not.toBe(tokens.accessToken)
    expect(refreshed.refreshToken).toBeTruthy()
    expect(refreshed.refreshToken).not.toBe(tokens.refreshToken)
    current = refreshed.accessToken
    expect((await client.auth.me.query()).user.id).toBe(user.id)

    const reused = await oidcFailure(refreshTokens({ baseUrl: server.baseUrl, clientId: WEB.clientId, refreshToken: tokens.refreshToken! }))
    expect(reused.error).toBe('invalid_grant')
    expect(reused.status).toBeGreaterThanOrEqual(400)
  })

  it('sends an anonymous user to sign in, then back with a code', async () => {
    const { url, state, pkce } = await start(WEB)
    const signInPage = new URL(await authorize(url), server.baseUrl)
    expect(signInPage.pathname).toBe('/sign-in')

    const signIn = await authPost(server, '/sign-in/email', { email: user.email, password: user.password, oauth_query: signInPage.search.slice(1) })
    expect(signIn.status).toBe(200)
    const { url: callback } = await signIn.json() as { url: string }
    const { code } = parseCallback(callback, state)

    const tokens = await exchangeCode({ baseUrl: server.baseUrl, clientId: WEB.clientId, code, codeVerifier: pkce.codeVerifier, redirectUri: WEB.redirectUri })
    expect(jwtPayload(tokens.accessToken).sub).toBe(user.id)
  })

  it('rejects a code exchanged with another PKCE verifier', async () => {
    const { code } = await codeFor(WEB)
    const other = await createPkcePair()
    const error = await oidcFailure(exchangeCode({ baseUrl: server.baseUrl, clientId: WEB.clientId, code, codeVerifier: other.codeVerifier, redirectUri: WEB.redirectUri }))
    // better-auth's provider says 401 invalid_request here (RFC 6749 would say 400 invalid_grant).
    expect(error).toMatchObject({ status: 401, error: 'invalid_request', errorDescription: 'code verification failed' })
  })
})

describe('signing out: revokeToken and endBrowserSession', () => {
  it('revokes a refresh token', async () => {
    const { code, pkce } = await codeFor(WEB)
    const tokens = await exchangeCode({ baseUrl: server.baseUrl, clientId: WEB.clientId, code, codeVerifier: pkce.codeVerifier, redirectUri: WEB.redirectUri })
    await revokeToken({ baseUrl: server.baseUrl, clientId: WEB.clientId, token: tokens.refreshToken!, tokenTypeHint: 'refresh_token' })
    const refused = await oidcFailure(refreshTokens({ baseUrl: server.baseUrl, clientId: WEB.clientId, refreshToken: tokens.refreshToken! }))
    expect(refused.error).toBe('invalid_grant')
  })

  it('ends the browser session: the JWTs bound to it stop working and a silent authorization needs a sign-in', async () => {
    const browser = await signIn(server, user.email, user.password)
    const { code, pkce } = await codeFor(WEB, browser.token)
    const tokens = await exchangeCode({ baseUrl: server.baseUrl, clientId: WEB.clientId, code, codeVerifier: pkce.codeVerifier, redirectUri: WEB.redirectUri })
    const client = sdk(() => tokens.accessToken)
    expect((await client.auth.me.query()).user.id).toBe(user.id)

    // Node has no cookie jar: the session travels as the bearer token better-auth also reads.
    const withSession: typeof fetch = (input, init) => fetch(input, { ...init, headers: { ...init?.headers as Record<string, string>, authorization: `Bearer ${browser.token}` } })
    await endBrowserSession({ baseUrl: server.baseUrl, fetch: withSession })

    const session = await fetch(`${server.baseUrl}/api/auth/get-session`, { headers: { authorization: `Bearer ${browser.token}` } })
    expect(await session.json()).toBeNull()
    await expect(client.auth.me.query()).rejects.toMatchObject({ data: { httpStatus: 401 } })
    const silent = await start(WEB, 'none')
    const callback = new URL(await authorize(silent.url, browser.token))
    expect(callback.searchParams.get('error')).toBe('login_required')
    expect(callback.searchParams.get('state')).toBe(silent.state)
  })
})

describe('confidential client (client_secret_post)', () => {
  it('exchanges and refreshes with its secret', async () => {
    const { code, pkce } = await codeFor(DESKTOP)
    const tokens = await exchangeCode({ baseUrl: server.baseUrl, ...DESKTOP, code, codeVerifier: pkce.codeVerifier })
    const claims = jwtPayload(tokens.accessToken)
    expect(claims.sub).toBe(user.id)
    expect([claims.aud].flat()).toContain(server.baseUrl)
    expect((await sdk(() => tokens.accessToken).auth.me.query()).user.id).toBe(user.id)

    const refreshed = await refreshTokens({ baseUrl: server.baseUrl, clientId: DESKTOP.clientId, clientSecret: DESKTOP.clientSecret, refreshToken: tokens.refreshToken! })
    expect(jwtPayload(refreshed.accessToken).sub).toBe(user.id)
  })

  it('rejects a wrong secret with invalid_client', async () => {
    const { code, pkce } = await codeFor(DESKTOP)
    const error = await oidcFailure(exchangeCode({ baseUrl: server.baseUrl, ...DESKTOP, clientSecret: 'wrong-secret', code, codeVerifier: pkce.codeVerifier }))
    expect([400, 401]).toContain(error.status)
    expect(error.error).toBe('invalid_client')
  })
})

describe('parseCallback', () => {
  it('returns the code when the state matches', () => {
    expect(parseCallback(`${WEB.redirectUri}?code=abc&state=s1`, 's1')).toEqual({ code: 'abc', state: 's1' })
  })

  it('rejects a state that is not ours', () => {
    expect(() => parseCallback(`${WEB.redirectUri}?code=abc&state=theirs`, 'ours'))
      .toThrow(expect.objectContaining({ name: 'OidcError', error: 'invalid_state' }))
    expect(() => parseCallback(`${WEB.redirectUri}?code=abc`, 'ours')).toThrow(OidcError)
  })

  it('rejects a callback that reports an error, carrying its code and description', () => {
    expect(() => parseCallback(`${WEB.redirectUri}?error=access_denied&error_description=user+said+no&state=s1`, 's1'))
      .toThrow(expect.objectContaining({ name: 'OidcError', error: 'access_denied', errorDescription: 'user said no' }))
  })

  it('rejects a callback without a code', () => {
    expect(() => parseCallback(`${WEB.redirectUri}?state=s1`, 's1')).toThrow(OidcError)
  })
})

describe('createPkcePair and buildAuthorizeUrl', () => {
  it('makes an RFC 7636 verifier and its S256 challenge', async () => {
    const pair = await createPkcePair()
    expect(pair.codeVerifier).toMatch(/^[A-Za-z0-9\-._~]{43,128}$/)
    expect(pair.codeChallenge).toBe(createHash('sha256').update(pair.codeVerifier).digest('base64url'))
    expect(pair.codeChallengeMethod).toBe('S256')
    expect((await createPkcePair()).codeVerifier).not.toBe(pair.codeVerifier)
  })

  it('makes URL-safe, distinct states', () => {
    const state = createState()
    expect(state).toMatch(/^[A-Za-z0-9_-]{32,}$/)
    expect(createState()).not.toBe(state)
  })

  it('puts the PKCE challenge, scope and resource in the authorize URL', () => {
    const url = new URL(buildAuthorizeUrl({ baseUrl: 'https://api.example.com/', clientId: 'c', redirectUri: 'https://app.example.com/cb', codeChallenge: 'ch', state: 'st', prompt: 'login' }))
    expect(`${url.origin}${url.pathname}`).toBe('https://api.example.com/api/auth/oauth2/authorize')
    expect(Object.fromEntries(url.searchParams)).toEqual({
      response_type: 'code',
      client_id: 'c',
      redirect_uri: 'https://app.example.com/cb',
      scope: 'openid profile email offline_access',
      state: 'st',
      code_challenge: 'ch',
      code_challenge_method: 'S256',
      resource: 'https://api.example.com',
      prompt: 'login',
    })
  })
})
