import { buildAuthorizeUrl, createPkcePair, createState, exchangeCode, oidcEndpoints, OidcError, parseCallback, refreshTokens, type OidcTokens } from '@airi/sdk'

// OIDC authorization code + PKCE against our own server. Tokens live in localStorage so a
// reload (and other tabs) stay signed in; refresh tokens rotate, so refreshing is single-flight
// across tabs (Web Locks) and within one (a shared promise).

export const baseUrl = window.location.origin
const clientId = import.meta.env.VITE_OIDC_CLIENT_ID ?? 'airi-stage-web'
const redirectUri = new URL('callback', new URL(import.meta.env.BASE_URL, baseUrl)).href

const TOKENS_KEY = 'airi.tokens'
const PENDING_KEY = 'airi.pending-sign-in'
// Refresh a little before the 15-minute access token runs out.
const EARLY_MS = 60_000

interface StoredTokens { accessToken: string, refreshToken?: string, expiresAt: number }

function load(): StoredTokens | null {
  try {
    return JSON.parse(localStorage.getItem(TOKENS_KEY) ?? 'null') as StoredTokens | null
  }
  catch {
    return null
  }
}

function store(tokens: OidcTokens): StoredTokens {
  const stored = { accessToken: tokens.accessToken, refreshToken: tokens.refreshToken, expiresAt: tokens.expiresAt.getTime() }
  localStorage.setItem(TOKENS_KEY, JSON.stringify(stored))
  return stored
}

export function isSignedIn(): boolean {
  return load() !== null
}

/** Sends the browser to our sign-in page through the authorize endpoint. */
export async function signIn(): Promise<void> {
  const pkce = await createPkcePair()
  const state = createState()
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ state, codeVerifier: pkce.codeVerifier, returnTo: window.location.pathname + window.location.search }))
  window.location.assign(buildAuthorizeUrl({ baseUrl, clientId, redirectUri, codeChallenge: pkce.codeChallenge, state }))
}

/** On /app/callback: trades the code for tokens; returns where the user was before signing in. */
export async function completeSignIn(url: string): Promise<string> {
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? 'null') as { state: string, codeVerifier: string, returnTo: string } | null
  sessionStorage.removeItem(PENDING_KEY)
  if (!pending)
    throw new Error('This sign-in was not started here, or it was already finished. Sign in again.')
  const { code } = parseCallback(url, pending.state)
  store(await exchangeCode({ baseUrl, clientId, code, codeVerifier: pending.codeVerifier, redirectUri }))
  return pending.returnTo.endsWith('/callback') ? import.meta.env.BASE_URL : pending.returnTo
}

let refreshing: Promise<StoredTokens | null> | null = null

async function refresh(stale: StoredTokens): Promise<StoredTokens | null> {
  const run = async () => {
    // Another tab may have refreshed while this one waited for the lock.
    const current = load()
    if (!current || current.accessToken !== stale.accessToken)
      return current
    if (!current.refreshToken)
      return null
    try {
      return store(await refreshTokens({ baseUrl, clientId, refreshToken: current.refreshToken }))
    }
    catch (error) {
      if (error instanceof OidcError && error.status >= 400 && error.status < 500) {
        // The refresh token is dead (revoked, used, expired): the session is over.
        localStorage.removeItem(TOKENS_KEY)
        onSignedOut?.()
        return null
      }
      throw error
    }
  }
  if (!refreshing) {
    const locked = async (): Promise<StoredTokens | null> => navigator.locks ? await navigator.locks.request('airi-token-refresh', run) : run()
    refreshing = locked().finally(() => (refreshing = null))
  }
  return refreshing
}

/** The access token for the API, refreshed when close to expiry; null when signed out. */
export async function getAccessToken(): Promise<string | null> {
  const tokens = load()
  if (!tokens)
    return null
  if (tokens.expiresAt - EARLY_MS > Date.now())
    return tokens.accessToken
  return (await refresh(tokens))?.accessToken ?? null
}

let onSignedOut: (() => void) | undefined
export function whenSignedOut(callback: () => void): void {
  onSignedOut = callback
}

/** Forgets the tokens here and revokes the refresh token on the server (best effort). */
export async function signOut(): Promise<void> {
  const tokens = load()
  localStorage.removeItem(TOKENS_KEY)
  if (tokens?.refreshToken) {
    await fetch(`${oidcEndpoints(baseUrl).issuer}/oauth2/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.refreshToken, token_type_hint: 'refresh_token', client_id: clientId }),
    }).catch(() => undefined)
  }
}
