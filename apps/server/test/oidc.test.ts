import { createTRPCClient, createWSClient, wsLink } from '@trpc/client'
import { generateKeyPair, SignJWT } from 'jose'
import * as oidc from 'openid-client'
import superjson from 'superjson'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import { ELECTRON_RELAY_PATH, type AppRouter } from '@airi/api'
import { createAiriClient } from '@airi/sdk'

import { authPost, createVerifiedUser, startTestServer, type TestServer, type TestUser } from './harness.ts'

const WEB_CLIENT = 'airi-web'
const WEB_REDIRECT = 'http://localhost:5173/auth/callback'
const DESKTOP_CLIENT = 'airi-desktop'
const DESKTOP_SECRET = 'desktop-secret-value'
const POCKET_CLIENT = 'airi-pocket'
const POCKET_REDIRECT = 'capacitor://localhost/auth/callback'

let server: TestServer
let user: TestUser
let issuer: string

beforeAll(async () => {
  server = await startTestServer({
    socialProviders: { github: true },
    trustedClients: baseUrl => [
      { clientId: WEB_CLIENT, name: 'AIRI web', redirectUris: [WEB_REDIRECT], applicationType: 'web' },
      { clientId: DESKTOP_CLIENT, clientSecret: DESKTOP_SECRET, name: 'AIRI desktop', redirectUris: [`${baseUrl}${ELECTRON_RELAY_PATH}`], applicationType: 'web' },
      { clientId: POCKET_CLIENT, name: 'AIRI pocket', redirectUris: [POCKET_REDIRECT], applicationType: 'native' },
    ],
  })
  issuer = `${server.baseUrl}/api/auth`
  user = await createVerifiedUser(server)
})
afterAll(() => server.close())

function discover(clientId = WEB_CLIENT, auth: oidc.ClientAuth = oidc.None()): Promise<oidc.Configuration> {
  return oidc.discovery(new URL(issuer), clientId, undefined, auth, { execute: [oidc.allowInsecureRequests] })
}

/**
 * The user's browser at the authorize endpoint: signed in (session token), it is
 * sent back to the redirect URI with a code. Returns where it was sent.
 */
async function authorize(url: URL, token = user.token): Promise<URL> {
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' }, redirect: 'manual' })
  const body = await response.json() as { url?: string }
  if (!body.url)
    throw new Error(`authorize did not redirect: ${response.status} ${JSON.stringify(body)}`)
  return new URL(body.url, server.baseUrl)
}

async function pkceAuthorization(config: oidc.Configuration, params: Record<string, string> = {}) {
  const codeVerifier = oidc.randomPKCECodeVerifier()
  const state = oidc.randomState()
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: WEB_REDIRECT,
    scope: 'openid profile email offline_access',
    code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    resource: server.baseUrl,
    ...params,
  })
  return { url, codeVerifier, state }
}

async function tokensFor(config: oidc.Configuration) {
  const { url, codeVerifier, state } = await pkceAuthorization(config)
  const callback = await authorize(url)
  return oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: codeVerifier, expectedState: state }, { resource: server.baseUrl })
}

async function meStatus(token: string): Promise<number> {
  const response = await fetch(`${server.baseUrl}/trpc/auth.me`, { headers: { authorization: `Bearer ${token}` } })
  return response.status
}

function decode(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString())
}

function encode(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

describe('OpenID Connect provider, driven by openid-client', () => {
  it('publishes a discovery document with PKCE S256 and our JWKS', async () => {
    const config = await discover()
    const metadata = config.serverMetadata()
    expect(metadata.issuer).toBe(issuer)
    expect(metadata.code_challenge_methods_supported).toEqual(['S256'])
    expect(metadata.jwks_uri).toBe(`${issuer}/jwks`)
    const jwks = await (await fetch(metadata.jwks_uri!)).json() as { keys: Array<{ kid: string }> }
    expect(jwks.keys.length).toBeGreaterThan(0)
  })

  it('completes authorize with PKCE → token → userinfo → refresh, and the JWT authorizes auth.me over HTTP and the tRPC WebSocket', async () => {
    const config = await discover()
    const tokens = await tokensFor(config)
    expect(tokens.token_type.toLowerCase()).toBe('bearer')
    expect(tokens.refresh_token).toEqual(expect.any(String))
    expect(tokens.id_token).toEqual(expect.any(String))
    const claims = decode(tokens.access_token.split('.')[1]!)
    expect(claims).toMatchObject({ sub: user.id, iss: issuer })
    expect([claims.aud].flat()).toContain(server.baseUrl)

    const info = await oidc.fetchUserInfo(config, tokens.access_token, user.id)
    expect(info).toMatchObject({ sub: user.id, email: user.email, email_verified: true })

    // HTTP, through the SDK.
    const sdk = createAiriClient({ baseUrl: server.baseUrl, getToken: () => tokens.access_token })
    expect((await sdk.auth.me.query()).user).toMatchObject({ id: user.id, email: user.email })

    // WebSocket: the same query over a WS-only link, token in the connection params.
    const wsClient = createWSClient({ url: `${server.baseUrl.replace('http', 'ws')}/trpc`, WebSocket: WebSocket as unknown as typeof globalThis.WebSocket, connectionParams: { token: tokens.access_token } })
    const overWs = createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient, transformer: superjson })] })
    try {
      expect((await overWs.auth.me.query()).user.id).toBe(user.id)
    }
    finally {
      await wsClient.close()
    }

    // Refresh rotates: a new pair, and the old refresh token is dead.
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: server.baseUrl })
    expect(refreshed.access_token).not.toBe(tokens.access_token)
    expect(refreshed.refresh_token).toEqual(expect.any(String))
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token)
    expect(await meStatus(refreshed.access_token)).toBe(200)
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: server.baseUrl })).rejects.toMatchObject({ error: 'invalid_grant' })
  })

  it('lets the desktop client (confidential) finish through the loopback relay page', async () => {
    const config = await discover(DESKTOP_CLIENT, oidc.ClientSecretPost(DESKTOP_SECRET))
    const codeVerifier = oidc.randomPKCECodeVerifier()
    const relay = `${server.baseUrl}${ELECTRON_RELAY_PATH}`
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: relay,
      scope: 'openid email offline_access',
      code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state: '53127:desktop-state',
      resource: server.baseUrl,
    })
    const callback = await authorize(url)
    expect(callback.origin + callback.pathname).toBe(relay)

    const page = await fetch(callback)
    expect(page.status).toBe(200)
    const html = await page.text()
    const forwarded = new URL(/location\.replace\(("[^"]+")\)/.exec(html)![1]!.replace(/\\u003c/g, '<').replace(/^"|"$/g, ''))
    expect(forwarded.origin).toBe('http://127.0.0.1:53127')
    expect(forwarded.pathname).toBe('/callback')
    expect(forwarded.searchParams.get('state')).toBe('desktop-state')

    // The app exchanges the forwarded code with its secret.
    forwarded.searchParams.set('state', '53127:desktop-state')
    const tokens = await oidc.authorizationCodeGrant(config, new URL(`${relay}?${forwarded.searchParams}`), { pkceCodeVerifier: codeVerifier, expectedState: '53127:desktop-state' }, { resource: server.baseUrl })
    expect(await meStatus(tokens.access_token)).toBe(200)

    const wrongSecret = await discover(DESKTOP_CLIENT, oidc.ClientSecretPost('not-the-secret'))
    const again = await authorize(url)
    await expect(oidc.authorizationCodeGrant(wrongSecret, again, { pkceCodeVerifier: codeVerifier, expectedState: '53127:desktop-state' }, { resource: server.baseUrl }))
      .rejects.toMatchObject({ error: 'invalid_client' })
  })

  it('lets the mobile app (public, native) finish on its custom-scheme redirect', async () => {
    const config = await discover(POCKET_CLIENT)
    const { url, codeVerifier, state } = await pkceAuthorization(config, { redirect_uri: POCKET_REDIRECT })
    const callback = await authorize(url)
    expect(callback.protocol).toBe('capacitor:')
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: codeVerifier, expectedState: state }, { resource: server.baseUrl })
    expect(await meStatus(tokens.access_token)).toBe(200)
  })
})

describe('rejected', () => {
  it('a redirect URI that is not registered: never redirected to it', async () => {
    const config = await discover()
    const { url } = await pkceAuthorization(config, { redirect_uri: 'http://localhost:5173/auth/callback/../evil' })
    const response = await fetch(url, { headers: { authorization: `Bearer ${user.token}`, accept: 'application/json' }, redirect: 'manual' })
    const text = await response.text()
    expect(text).not.toContain('code=')
    expect(response.headers.get('location') ?? '').not.toContain('evil')

    const other = await pkceAuthorization(config, { redirect_uri: 'https://attacker.example/callback' })
    const response2 = await fetch(other.url, { headers: { authorization: `Bearer ${user.token}`, accept: 'application/json' }, redirect: 'manual' })
    expect(response2.headers.get('location') ?? '').not.toContain('attacker.example')
    expect(await response2.text()).not.toContain('attacker.example/callback?code')
  })

  it('a public client that sends no PKCE challenge', async () => {
    const config = await discover()
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: WEB_REDIRECT, scope: 'openid', state: 's', resource: server.baseUrl })
    const response = await fetch(url, { headers: { authorization: `Bearer ${user.token}`, accept: 'application/json' }, redirect: 'manual' })
    const body = await response.json() as { url?: string }
    expect(body.url ?? '').not.toContain('code=')
  })

  it('a PKCE verifier that does not match the challenge', async () => {
    const config = await discover()
    const { url, state } = await pkceAuthorization(config)
    const callback = await authorize(url)
    // The provider answers invalid_request here; either way no token is issued.
    await expect(oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: oidc.randomPKCECodeVerifier(), expectedState: state }, { resource: server.baseUrl }))
      .rejects.toMatchObject({ error: expect.stringMatching(/^invalid_(grant|request)$/) })
  })

  it('a replayed authorization code', async () => {
    const config = await discover()
    const { url, codeVerifier, state } = await pkceAuthorization(config)
    const callback = await authorize(url)
    const first = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: codeVerifier, expectedState: state }, { resource: server.baseUrl })
    expect(first.access_token).toEqual(expect.any(String))
    await expect(oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: codeVerifier, expectedState: state }, { resource: server.baseUrl }))
      .rejects.toMatchObject({ error: 'invalid_grant' })
  })

  describe('JWT access tokens', () => {
    let valid: string
    beforeAll(async () => {
      valid = (await tokensFor(await discover())).access_token
      expect(await meStatus(valid)).toBe(200)
    })

    /** A token signed with our own key but claims of the test's choosing. */
    async function signedByUs(payload: Record<string, unknown>): Promise<string> {
      const { token } = await server.api.auth.api.signJWT({ body: { payload: { sub: user.id, iss: issuer, aud: server.baseUrl, ...payload } } })
      return token
    }

    it('accepts a token we signed with the right claims (the control for the cases below)', async () => {
      expect(await meStatus(await signedByUs({}))).toBe(200)
    })

    it('expired', async () => {
      const now = Math.floor(Date.now() / 1000)
      const token = await signedByUs({ iat: now - 3600, exp: now - 60 })
      expect(decode(token.split('.')[1]!).exp).toBe(now - 60)
      expect(await meStatus(token)).toBe(401)
    })

    it('wrong audience', async () => {
      const token = await signedByUs({ aud: 'https://another-api.example' })
      expect(decode(token.split('.')[1]!).aud).toBe('https://another-api.example')
      expect(await meStatus(token)).toBe(401)
    })

    it('wrong issuer', async () => {
      const token = await signedByUs({ iss: 'https://evil.example/api/auth' })
      expect(decode(token.split('.')[1]!).iss).toBe('https://evil.example/api/auth')
      expect(await meStatus(token)).toBe(401)
    })

    it('signed by another key (even under our key id)', async () => {
      const { privateKey } = await generateKeyPair('EdDSA')
      const kid = decode(valid.split('.')[0]!).kid as string
      const forged = await new SignJWT({ ...decode(valid.split('.')[1]!) }).setProtectedHeader({ alg: 'EdDSA', kid, typ: 'at+jwt' }).sign(privateKey)
      expect(await meStatus(forged)).toBe(401)
    })

    it('alg: none', async () => {
      const unsigned = `${encode({ alg: 'none', typ: 'JWT' })}.${valid.split('.')[1]}.`
      expect(await meStatus(unsigned)).toBe(401)
    })

    it('a tampered payload', async () => {
      const [header, payload, signature] = valid.split('.')
      const other = await createVerifiedUser(server)
      const tampered = `${header}.${encode({ ...decode(payload!), sub: other.id })}.${signature}`
      expect(await meStatus(tampered)).toBe(401)
    })

    it('a token whose session was revoked (signed out)', async () => {
      const holder = await createVerifiedUser(server)
      const config = await discover()
      const { url, codeVerifier, state } = await pkceAuthorization(config)
      const tokens = await oidc.authorizationCodeGrant(config, await authorize(url, holder.token), { pkceCodeVerifier: codeVerifier, expectedState: state }, { resource: server.baseUrl })
      expect(await meStatus(tokens.access_token)).toBe(200)
      expect((await authPost(server, '/sign-out', {}, holder.token)).ok).toBe(true)
      expect(await meStatus(tokens.access_token)).toBe(401)
    })
  })
})

describe('the desktop relay page', () => {
  const relay = () => `${server.baseUrl}${ELECTRON_RELAY_PATH}`

  it.each(['80:abc', '1023:abc', '65536:abc', 'abc', '', '99999999:abc'])('refuses state %j (port must be 1024–65535)', async (state) => {
    const response = await fetch(`${relay()}?code=c&state=${encodeURIComponent(state)}`)
    expect(response.status).toBe(400)
    expect(await response.text()).not.toContain('127.0.0.1')
  })

  it('escapes what it echoes', async () => {
    const state = '4000:"><script>alert(1)</script>'
    const response = await fetch(`${relay()}?code=${encodeURIComponent('<img src=x onerror=alert(2)>')}&state=${encodeURIComponent(state)}`)
    expect(response.status).toBe(200)
    const html = await response.text()
    expect(html).not.toContain('<script>alert(1)')
    expect(html).not.toContain('<img src=x')
    expect(html).toContain('http://127.0.0.1:4000/callback?')
  })
})

describe('the sign-in page', () => {
  it('offers the configured providers and the e-mail form', async () => {
    const response = await fetch(`${server.baseUrl}/sign-in?client_id=${WEB_CLIENT}&state=x`)
    expect(response.status).toBe(200)
    const html = await response.text()
    expect(html).toContain('Continue with GitHub')
    expect(html).not.toContain('Continue with Google')
    expect(html).toContain('id="password-form"')
    expect(html).toContain('/sign-in?client_id=airi-web&amp;state=x&amp;provider=github')
    // Where the magic link returns to: the authorization this sign-in continues.
    expect(html).toContain('<body data-continue="/api/auth/oauth2/authorize?client_id=airi-web&amp;state=x">')
  })

  it('passes straight through to the provider when one is named, carrying the authorization as callback', async () => {
    const config = await discover()
    const { url } = await pkceAuthorization(config)
    const anonymous = await fetch(url, { headers: { accept: 'application/json' } })
    const signInUrl = new URL((await anonymous.json() as { url: string }).url, server.baseUrl)
    expect(signInUrl.pathname).toBe('/sign-in')
    signInUrl.searchParams.set('provider', 'github')

    const response = await fetch(signInUrl, { redirect: 'manual' })
    expect(response.status).toBe(302)
    const location = new URL(response.headers.get('location')!)
    expect(location.origin + location.pathname).toBe('https://github.com/login/oauth/authorize')
    expect(location.searchParams.get('client_id')).toBe('fake-client-id')
    expect(location.searchParams.get('redirect_uri')).toBe(`${issuer}/callback/github`)
    expect(response.headers.getSetCookie().length).toBeGreaterThan(0)
  })

  it('refuses a provider that is not configured', async () => {
    const response = await fetch(`${server.baseUrl}/sign-in?provider=google`, { redirect: 'manual' })
    expect(response.status).toBe(400)
  })
})
