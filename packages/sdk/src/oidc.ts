// OIDC relying-party helpers for AIRI's own clients (authorization code + PKCE).
// Only WebCrypto, fetch, URL and btoa: the same code runs in browsers and Node.

/** Scopes our first-party clients ask for; `offline_access` is what yields a refresh token. */
export const DEFAULT_OIDC_SCOPE = 'openid profile email offline_access'

export interface OidcEndpoints {
  issuer: string
  discovery: string
  authorize: string
  token: string
  userinfo: string
  /** RFC 7009 token revocation. */
  revocation: string
  /** better-auth's sign-out: ends the cookie session of the browser that calls it. */
  signOut: string
}

export interface PkcePair {
  codeVerifier: string
  codeChallenge: string
  codeChallengeMethod: 'S256'
}

export interface OidcTokens {
  /** A JWT for the API when the request named it as `resource`; send as `Authorization: Bearer`. */
  accessToken: string
  /** Present with `offline_access`. Single use: every refresh returns a new one. */
  refreshToken?: string
  idToken?: string
  tokenType: string
  /** Seconds, as the server said. */
  expiresIn: number
  /** `expiresIn` from when the answer arrived (local clock). */
  expiresAt: Date
  scope?: string
}

export interface AuthorizeUrlOptions {
  /** The server's origin, e.g. `https://api.example.com`. */
  baseUrl: string
  clientId: string
  /** Must match one of the client's registered URIs exactly. */
  redirectUri: string
  codeChallenge: string
  state: string
  scope?: string
  /** The API the access token is for; defaults to `baseUrl`, which makes it a JWT our API accepts. */
  resource?: string
  prompt?: 'none' | 'login' | 'consent' | 'select_account'
}

interface TokenRequestOptions {
  baseUrl: string
  clientId: string
  /** Only for confidential clients (sent as `client_secret_post`); public clients rely on PKCE. */
  clientSecret?: string
  /** Must equal the one in the authorize request, or the token is opaque rather than a JWT. */
  resource?: string
  /** Defaults to the global fetch. */
  fetch?: typeof fetch
}

export interface ExchangeCodeOptions extends TokenRequestOptions {
  code: string
  codeVerifier: string
  redirectUri: string
}

export interface RefreshTokensOptions extends TokenRequestOptions {
  refreshToken: string
}

export interface RevokeTokenOptions extends Omit<TokenRequestOptions, 'resource'> {
  token: string
  /** Which kind `token` is; the server tries both without it. */
  tokenTypeHint?: 'refresh_token' | 'access_token'
}

export interface EndBrowserSessionOptions {
  baseUrl: string
  /** Defaults to the global fetch. */
  fetch?: typeof fetch
}

/** An OAuth error: from the token endpoint (`status` is its HTTP status) or a callback URL (`status` 0). */
export class OidcError extends Error {
  override readonly name = 'OidcError'
  readonly status: number
  /** The OAuth error code, e.g. `invalid_grant`, `invalid_client`, `access_denied`. */
  readonly error: string
  readonly errorDescription?: string

  constructor(status: number, error: string, errorDescription?: string) {
    super(errorDescription ? `${error}: ${errorDescription}` : error)
    this.status = status
    this.error = error
    this.errorDescription = errorDescription
  }
}

function origin(baseUrl: string): string {
  // The server names itself (issuer, resource) without a trailing slash.
  return baseUrl.replace(/\/+$/, '')
}

/** Where the provider lives under a server's origin (better-auth is mounted at `/api/auth`). */
export function oidcEndpoints(baseUrl: string): OidcEndpoints {
  const issuer = `${origin(baseUrl)}/api/auth`
  return {
    issuer,
    discovery: `${issuer}/.well-known/openid-configuration`,
    authorize: `${issuer}/oauth2/authorize`,
    token: `${issuer}/oauth2/token`,
    userinfo: `${issuer}/oauth2/userinfo`,
    revocation: `${issuer}/oauth2/revoke`,
    signOut: `${issuer}/sign-out`,
  }
}

function base64url(bytes: Uint8Array): string {
  let binary = ''
  for (const byte of bytes)
    binary += String.fromCharCode(byte)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

function randomBase64url(byteLength: number): string {
  return base64url(globalThis.crypto.getRandomValues(new Uint8Array(byteLength)))
}

/** A fresh PKCE verifier (32 random bytes → 43 characters) and its S256 challenge. */
export async function createPkcePair(): Promise<PkcePair> {
  const codeVerifier = randomBase64url(32)
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(codeVerifier))
  return { codeVerifier, codeChallenge: base64url(new Uint8Array(digest)), codeChallengeMethod: 'S256' }
}

/** An unguessable, URL-safe `state` to tie the callback to the request that started it. */
export function createState(): string {
  return randomBase64url(32)
}

export function buildAuthorizeUrl({ baseUrl, clientId, redirectUri, codeChallenge, state, scope = DEFAULT_OIDC_SCOPE, resource = origin(baseUrl), prompt }: AuthorizeUrlOptions): string {
  const url = new URL(oidcEndpoints(baseUrl).authorize)
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope,
    state,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    resource,
    ...(prompt ? { prompt } : {}),
  }).toString()
  return url.toString()
}

/**
 * Reads the code from the redirect the provider sent the user back with. Throws
 * when the provider reported an error, or when `state` is not ours (a forged or
 * crossed callback), so a caller never exchanges a code it did not ask for.
 */
export function parseCallback(url: string, expectedState: string): { code: string, state: string } {
  const params = new URL(url).searchParams
  const error = params.get('error')
  if (error)
    throw new OidcError(0, error, params.get('error_description') ?? undefined)
  const state = params.get('state')
  if (!state || state !== expectedState)
    throw new OidcError(0, 'invalid_state', 'the callback state does not match the one sent')
  const code = params.get('code')
  if (!code)
    throw new OidcError(0, 'invalid_request', 'the callback carries no code')
  return { code, state }
}

interface TokenResponse {
  access_token?: string
  refresh_token?: string
  id_token?: string
  token_type?: string
  expires_in?: number
  scope?: string
}

interface ErrorResponse {
  error?: string
  error_description?: string
  // better-auth's own error shape, for errors raised before the OAuth layer.
  code?: string
  message?: string
}

function oidcFailure(response: Response, json: ErrorResponse): OidcError {
  const error = json.error ?? json.code?.toLowerCase() ?? `http_${response.status}`
  return new OidcError(response.status, error, json.error_description ?? json.message)
}

async function requestTokens(options: TokenRequestOptions, grant: Record<string, string>): Promise<OidcTokens> {
  const { baseUrl, clientId, clientSecret, resource = origin(baseUrl) } = options
  // Called unbound: browsers reject `fetch` invoked as a method of another object.
  const send = options.fetch ?? globalThis.fetch
  const body = new URLSearchParams({ ...grant, client_id: clientId, resource })
  if (clientSecret)
    body.set('client_secret', clientSecret)

  const response = await send(oidcEndpoints(baseUrl).token, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'accept': 'application/json' },
    body: body.toString(),
  })
  const json = await response.json().catch(() => ({})) as TokenResponse & ErrorResponse

  if (!response.ok)
    throw oidcFailure(response, json)
  if (!json.access_token)
    throw new OidcError(response.status, 'invalid_response', 'the token endpoint answered without an access_token')

  const expiresIn = json.expires_in ?? 0
  return {
    accessToken: json.access_token,
    refreshToken: json.refresh_token,
    idToken: json.id_token,
    tokenType: json.token_type ?? 'Bearer',
    expiresIn,
    expiresAt: new Date(Date.now() + expiresIn * 1000),
    scope: json.scope,
  }
}

/** Trades the callback's code (with the PKCE verifier that made its challenge) for tokens. */
export function exchangeCode({ code, codeVerifier, redirectUri, ...options }: ExchangeCodeOptions): Promise<OidcTokens> {
  return requestTokens(options, { grant_type: 'authorization_code', code, code_verifier: codeVerifier, redirect_uri: redirectUri })
}

/**
 * New tokens for a refresh token. Refresh tokens rotate: store the returned one,
 * the one passed in no longer works (reusing it fails with `invalid_grant`).
 */
export function refreshTokens({ refreshToken, ...options }: RefreshTokensOptions): Promise<OidcTokens> {
  return requestTokens(options, { grant_type: 'refresh_token', refresh_token: refreshToken })
}

/**
 * Revokes a token (RFC 7009); for a refresh token, the access tokens issued with it
 * go too. Throws an OidcError when the server refuses. Revoke only a token that is
 * still alive: better-auth takes a revoked refresh token coming back as stolen and
 * ends every refresh token of that user and client.
 */
export async function revokeToken({ baseUrl, clientId, clientSecret, token, tokenTypeHint, fetch: send = globalThis.fetch }: RevokeTokenOptions): Promise<void> {
  const body = new URLSearchParams({ token, client_id: clientId, ...(tokenTypeHint ? { token_type_hint: tokenTypeHint } : {}) })
  if (clientSecret)
    body.set('client_secret', clientSecret)
  const response = await send(oidcEndpoints(baseUrl).revocation, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'accept': 'application/json' },
    body: body.toString(),
  })
  if (!response.ok)
    throw oidcFailure(response, await response.json().catch(() => ({})) as ErrorResponse)
}

/**
 * Ends the browser's own session at the server (the httpOnly cookie our sign-in page
 * left), so the next authorization asks for a password again. Revoking an app's tokens
 * does not do this. Call it from a page on the server's origin (the cookie is sent
 * with `credentials: 'include'`). Throws an OidcError when the server refuses.
 */
export async function endBrowserSession({ baseUrl, fetch: send = globalThis.fetch }: EndBrowserSessionOptions): Promise<void> {
  const response = await send(oidcEndpoints(baseUrl).signOut, {
    method: 'POST',
    credentials: 'include',
    headers: { 'content-type': 'application/json', 'accept': 'application/json' },
    body: '{}',
  })
  if (!response.ok)
    throw oidcFailure(response, await response.json().catch(() => ({})) as ErrorResponse)
}
