import { buildAuthorizeUrl, createPkcePair, createState, endBrowserSession, exchangeCode, OidcError, parseCallback, refreshTokens, revokeToken, type OidcTokens } from '@airi/sdk'

// OIDC authorization code + PKCE against our own server. The tokens live only in this
// module's memory: nothing in storage for an injected script to lift, nothing left once
// the tab closes. A reload or a new tab gets a grant of its own through a silent
// authorization (prompt=none) on the httpOnly cookie session our /sign-in page left.
// The threat model: docs/auth.md ("stage-web").

export const baseUrl = window.location.origin
const clientId = import.meta.env.VITE_OIDC_CLIENT_ID ?? 'airi-stage-web'
const appBase = import.meta.env.BASE_URL
const redirectUri = new URL('callback', new URL(appBase, baseUrl)).href
// Taken as the app starts, so a script injected later that wraps window.fetch does not
// see the refresh token go by.
const send = window.fetch.bind(window)

// sessionStorage (this tab only) holds no token, just how this tab's sign-in goes:
/** The state, PKCE verifier and return path of the authorization under way (one round trip). */
const PENDING_KEY = 'airi.pending-sign-in'
/** Silent sign-in cannot work here (the server asked for a person, or they signed out) until they sign in. */
const NO_SILENT_KEY = 'airi.no-silent-sign-in'
/** A silent attempt's state starts so; its callback without a pending sign-in then ends instead of looping. */
const SILENT_STATE = 'silent.'
/** Answers to prompt=none that mean "ask the person": the welcome screen does. */
const NEEDS_PERSON = new Set(['login_required', 'interaction_required', 'consent_required', 'account_selection_required'])
/**
 * localStorage, this device: "someone signed in here and has not signed out" — no token,
 * only whether a silent sign-in is worth a redirect. A first visit shows the welcome
 * screen at once instead of a trip through the authorize endpoint.
 */
const SIGNED_IN_BEFORE_KEY = 'airi.signed-in-before'
/** Refresh a little before the 15-minute access token runs out. */
const EARLY_MS = 60_000

interface Tokens { accessToken: string, refreshToken?: string, expiresAt: number }
interface Pending { state: string, codeVerifier: string, returnTo: string }

/** A sign-in or sign-out that failed; `code` lets the shell pick a translated sentence. */
export class SignInError extends Error {
  override readonly name = 'SignInError'
  constructor(readonly code: 'not-started-here' | 'refused' | 'unreachable' | 'failed' | 'sign-out-incomplete', message: string) {
    super(message)
  }
}

let tokens: Tokens | null = null
let refreshing: Promise<Tokens | null> | null = null
let silentAttempt: Promise<never> | null = null
let interactive = false
const signedOutListeners = new Set<() => void>()

// Tells the app's other tabs (each holds a grant of its own) that the person signed out or in.
const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('airi.session') : null

function keep(next: OidcTokens): Tokens {
  tokens = { accessToken: next.accessToken, refreshToken: next.refreshToken, expiresAt: next.expiresAt.getTime() }
  return tokens
}

/** A path of this app to continue to: never the callback, never another origin. */
function appPath(path: string): string {
  const url = new URL(path, baseUrl)
  if (url.origin !== baseUrl || !url.pathname.startsWith(appBase) || url.pathname === `${appBase}callback`)
    return appBase
  return url.pathname + url.search + url.hash
}

/** Leaves for the authorize endpoint; the promise never settles, so nothing renders meanwhile. */
async function authorize(returnTo: string, silent: boolean): Promise<never> {
  const pkce = await createPkcePair()
  // A click on "Sign in" wins over a silent attempt started on load.
  if (!silent || !interactive) {
    const state = (silent ? SILENT_STATE : '') + createState()
    sessionStorage.setItem(PENDING_KEY, JSON.stringify({ state, codeVerifier: pkce.codeVerifier, returnTo: appPath(returnTo) } satisfies Pending))
    window.location.assign(buildAuthorizeUrl({ baseUrl, clientId, redirectUri, codeChallenge: pkce.codeChallenge, state, prompt: silent ? 'none' : undefined }))
  }
  return new Promise<never>(() => {})
}

function silentSignIn(returnTo: string): Promise<never> {
  silentAttempt ??= authorize(returnTo, true)
  return silentAttempt
}

/**
 * True when this tab holds tokens. Otherwise starts the silent sign-in (the page
 * leaves; the promise never settles), unless this tab already learned that only the
 * person can sign in: then false (show the welcome screen).
 */
export async function ensureSession(returnTo: string): Promise<boolean> {
  if (tokens)
    return true
  if (interactive || sessionStorage.getItem(NO_SILENT_KEY) || !localStorage.getItem(SIGNED_IN_BEFORE_KEY))
    return false
  return silentSignIn(returnTo)
}

/** The interactive sign-in: through the authorize endpoint to our /sign-in page, then back to `returnTo` (an app path). */
export async function signIn(returnTo: string): Promise<void> {
  interactive = true
  await authorize(returnTo, false)
}

function failure(cause: unknown): SignInError {
  if (cause instanceof TypeError)
    return new SignInError('unreachable', 'Cannot reach the server to finish signing in. Check your connection, then sign in again.')
  if (cause instanceof OidcError && cause.status === 0)
    return new SignInError('refused', `The sign-in was not completed (${cause.errorDescription ?? cause.error}). Sign in again.`)
  return new SignInError('failed', `Signing in did not work (${cause instanceof Error ? cause.message : String(cause)}). Sign in again.`)
}

/**
 * On /app/callback: trades the code for tokens and returns the app path to continue
 * to. A silent attempt the server answered with login_required (or another "ask the
 * person") is remembered for this tab and returns that path too. A callback this tab
 * did not start (an e-mail verification link opened in a new tab, which made the
 * cookie session) starts a silent sign-in. Other failures throw a SignInError.
 */
export async function completeSignIn(url: string): Promise<string> {
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? 'null') as Pending | null
  sessionStorage.removeItem(PENDING_KEY)
  const state = new URL(url).searchParams.get('state') ?? ''
  if (!pending || pending.state !== state) {
    if (state.startsWith(SILENT_STATE))
      throw new SignInError('not-started-here', 'This sign-in was not started in this tab, or it was already finished. Sign in again.')
    sessionStorage.removeItem(NO_SILENT_KEY)
    return silentSignIn(pending?.returnTo ?? appBase)
  }

  const silent = state.startsWith(SILENT_STATE)
  try {
    const { code } = parseCallback(url, pending.state)
    keep(await exchangeCode({ baseUrl, clientId, code, codeVerifier: pending.codeVerifier, redirectUri, fetch: send }))
  }
  catch (cause) {
    // A failed silent attempt is not retried on every navigation: the person signs in.
    if (silent)
      sessionStorage.setItem(NO_SILENT_KEY, cause instanceof OidcError ? cause.error : 'failed')
    if (silent && cause instanceof OidcError && NEEDS_PERSON.has(cause.error))
      return pending.returnTo
    throw failure(cause)
  }
  sessionStorage.removeItem(NO_SILENT_KEY)
  localStorage.setItem(SIGNED_IN_BEFORE_KEY, '1')
  channel?.postMessage('signed-in')
  return pending.returnTo
}

/** Single-flight within the tab: refresh tokens rotate, and a reused one ends every grant of the person. */
function refresh(): Promise<Tokens | null> {
  refreshing ??= (async () => {
    const refreshToken = tokens?.refreshToken
    try {
      if (!refreshToken)
        throw new OidcError(400, 'invalid_grant', 'no refresh token')
      return keep(await refreshTokens({ baseUrl, clientId, refreshToken, fetch: send }))
    }
    catch (error) {
      if (!(error instanceof OidcError && error.status >= 400 && error.status < 500))
        throw error
      // The grant is over (revoked, expired). The cookie session may still be alive, so
      // the next ensureSession may renew silently.
      tokens = null
      for (const listener of signedOutListeners)
        listener()
      return null
    }
  })().finally(() => (refreshing = null))
  return refreshing
}

/** The access token for the API, refreshed when close to expiry; null when signed out. */
export async function getAccessToken(): Promise<string | null> {
  if (!tokens)
    return null
  if (tokens.expiresAt - EARLY_MS > Date.now())
    return tokens.accessToken
  return (await refresh())?.accessToken ?? null
}

/** Calls `callback` when the session ends other than by this tab's signOut(); returns the unsubscribe. */
export function whenSignedOut(callback: () => void): () => void {
  signedOutListeners.add(callback)
  return () => signedOutListeners.delete(callback)
}

/** Forgets this tab's tokens (after a refresh under way) and revokes its refresh token; no silent sign-in after. */
async function endGrant(): Promise<boolean> {
  sessionStorage.setItem(NO_SILENT_KEY, 'signed-out')
  localStorage.removeItem(SIGNED_IN_BEFORE_KEY)
  await refreshing?.catch(() => null)
  const ended = tokens
  tokens = null
  // Best effort: the JWTs die with the cookie session anyway (they carry its id).
  if (ended?.refreshToken)
    await revokeToken({ baseUrl, clientId, token: ended.refreshToken, tokenTypeHint: 'refresh_token', fetch: send }).catch(() => undefined)
  return ended !== null
}

/**
 * Signs out for real: ends this tab's grant, the browser's cookie session at the server
 * (so the next sign-in asks for the password), and tells the app's other tabs.
 * Throws a SignInError when the server could not be told.
 */
export async function signOut(): Promise<void> {
  channel?.postMessage('signed-out')
  const [, session] = await Promise.allSettled([endGrant(), endBrowserSession({ baseUrl, fetch: send })])
  if (session.status === 'rejected')
    throw new SignInError('sign-out-incomplete', 'You are signed out in this tab, but the server could not be reached to end the session. Sign out again once you are online.')
}

channel?.addEventListener('message', (event: MessageEvent<unknown>) => {
  if (event.data === 'signed-in') {
    sessionStorage.removeItem(NO_SILENT_KEY)
  }
  else if (event.data === 'signed-out') {
    void endGrant().then((ended) => {
      if (ended) {
        for (const listener of signedOutListeners)
          listener()
      }
    })
  }
})

