import type { FastifyPluginAsync } from 'fastify'

import { AUTH_BASE_PATH, SIGN_IN_PATH, type Api } from '@airi/api'

import { escapeHtml, sendPage } from '../html.ts'
import { sendFetchResponse } from './auth.ts'
import { STAGE_WEB_DIST, stageWebEntries } from './stage-web.ts'
import { toHeaders } from './trpc.ts'

export interface SignInPluginOptions {
  api: Api
  /** Social providers that are configured, in the order they are offered. */
  providers: Array<'google' | 'github'>
  /** The built web client, whose build holds this page's script; defaults to apps/stage-web/dist. */
  clientRoot?: string
}

const providerLabels = { google: 'Continue with Google', github: 'Continue with GitHub' } as const

// Added by the provider when it signs the query; the authorize endpoint must not see them again.
const SIGNATURE_PARAMS = ['sig', 'exp', 'ba_iat', 'ba_pl', 'ba_param']

/** The OIDC authorize URL this sign-in continues, rebuilt from the signed query. */
function authorizeUrl(search: URLSearchParams): string | undefined {
  if (!search.has('client_id'))
    return undefined
  const params = new URLSearchParams(search)
  for (const name of [...SIGNATURE_PARAMS, 'provider'])
    params.delete(name)
  return `${AUTH_BASE_PATH}/oauth2/authorize?${params}`
}

/** The page's script: apps/stage-web/src/sign-in/main.ts, built with the web client. */
const SCRIPT_ENTRY = 'src/sign-in/main.ts'
// Without the script only the provider links work; said where the page's errors go.
const NOT_BUILT = 'This page cannot sign you in yet: the web client is not built. Run <code>pnpm --filter @airi/stage-web build</code> (<code>pnpm start</code> builds it), then reload.'

/**
 * `GET /sign-in`: the page the OIDC provider sends a user to. With
 * `provider=google|github` it goes straight to that provider; otherwise it
 * offers the providers and an e-mail form, plus create-account and password
 * reset (a mailed reset link comes back here with `token`). The forms work through
 * the page's script, a file of the web client's build (no inline script).
 */
export const signInPlugin: FastifyPluginAsync<SignInPluginOptions> = async (app, { api, providers, clientRoot = STAGE_WEB_DIST }) => {
  const builtEntry = stageWebEntries(clientRoot)

  // Browsers ask every origin for an icon; an empty answer spares the console of each page a 404.
  app.get('/favicon.ico', async (_request, reply) => reply.status(204).header('cache-control', 'public, max-age=86400').send())

  app.get(SIGN_IN_PATH, async (request, reply) => {
    const search = new URL(request.url, 'http://local').searchParams
    const continueUrl = authorizeUrl(search)
    reply.header('cache-control', 'no-store')

    const provider = search.get('provider')
    if (provider) {
      if (!providers.includes(provider as 'google')) {
        return sendPage(reply.status(400), 'Sign in', `<h1>Sign in</h1><p class="message">Sign-in with ${escapeHtml(provider)} is not available.</p><a class="button" href="${SIGN_IN_PATH}">Back</a>`)
      }
      const query = new URLSearchParams(search)
      query.delete('provider')
      // better-auth starts the social flow (state cookie + provider URL); the signed
      // query lets the OIDC provider resume the authorization when the user returns.
      const response = await api.auth.handler(new Request(`${request.protocol}://${request.host}${AUTH_BASE_PATH}/sign-in/social`, {
        method: 'POST',
        headers: { ...Object.fromEntries(toHeaders(request.headers)), 'content-type': 'application/json', 'accept': 'application/json' },
        body: JSON.stringify({ provider, callbackURL: continueUrl ?? '/', ...(query.has('sig') ? { oauth_query: query.toString() } : {}) }),
      }))
      if (!response.ok)
        return sendFetchResponse(reply, response)
      const { url } = await response.json() as { url: string }
      const cookies = response.headers.getSetCookie()
      if (cookies.length > 0)
        reply.header('set-cookie', cookies)
      return reply.redirect(url, 302)
    }

    const providerLinks = providers.map((name) => {
      const query = new URLSearchParams(search)
      query.set('provider', name)
      return `<a class="button" href="${escapeHtml(`${SIGN_IN_PATH}?${query}`)}">${providerLabels[name]}</a>`
    }).join('\n')

    const script = builtEntry(SCRIPT_ENTRY)
    const body = `<section data-view="sign-in">
<h1>Sign in to AIRI</h1>
${providerLinks}${providerLinks ? '\n<hr>' : ''}
<form id="password-form">
  <label>E-mail <input name="email" type="email" autocomplete="email" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button class="primary" type="submit">Sign in</button>
</form>
<button id="magic-link" type="button">E-mail me a sign-in link</button>
<p class="links"><button class="link" type="button" data-go="forgot">Forgot your password?</button> <button class="link" type="button" data-go="sign-up">Create an account</button></p>
</section>
<section data-view="sign-up" hidden>
<h1>Create your AIRI account</h1>
<form id="sign-up-form">
  <label>Name <input name="name" autocomplete="name"></label>
  <label>E-mail <input name="email" type="email" autocomplete="email" required></label>
  <label>Password <input name="password" type="password" autocomplete="new-password" minlength="8" required></label>
  <label>Password again <input name="confirm" type="password" autocomplete="new-password" minlength="8" required></label>
  <button class="primary" type="submit">Create account</button>
</form>
<p class="links"><button class="link" type="button" data-go="sign-in">I already have an account</button></p>
</section>
<section data-view="inbox" hidden>
<h1>Check your inbox</h1>
<p>We sent a verification link to <strong id="inbox-address"></strong>. Open it to finish creating your account; it signs you in.</p>
<p class="links"><button class="link" type="button" data-go="sign-in">Back to sign-in</button></p>
</section>
<section data-view="forgot" hidden>
<h1>Reset your password</h1>
<p>Enter your e-mail address and we will send you a link to choose a new password.</p>
<form id="forgot-form">
  <label>E-mail <input name="email" type="email" autocomplete="email" required></label>
  <button class="primary" type="submit">Send the link</button>
</form>
<p class="links"><button class="link" type="button" data-go="sign-in">Back to sign-in</button></p>
</section>
<section data-view="reset" hidden>
<h1>Choose a new password</h1>
<form id="reset-form">
  <label>New password <input name="password" type="password" autocomplete="new-password" minlength="8" required></label>
  <label>New password again <input name="confirm" type="password" autocomplete="new-password" minlength="8" required></label>
  <button class="primary" type="submit">Change password</button>
</form>
</section>
<section data-view="signed-in" hidden>
<h1>You are signed in</h1>
<p>You can close this window and go back to the app.</p>
</section>
<p id="message" class="message" role="alert">${script ? '' : NOT_BUILT}</p>
<p id="notice" class="notice" role="status"></p>`
    return sendPage(reply, 'Sign in to AIRI', body, { moduleScript: script, data: { continue: continueUrl ?? '' } })
  })
}
