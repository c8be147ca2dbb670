import type { FastifyPluginAsync } from 'fastify'

import { AUTH_BASE_PATH, SIGN_IN_PATH, type Api } from '@airi/api'

import { escapeHtml, sendPage } from '../html.ts'
import { sendFetchResponse } from './auth.ts'
import { toHeaders } from './trpc.ts'

export interface SignInPluginOptions {
  api: Api
  /** Social providers that are configured, in the order they are offered. */
  providers: Array<'google' | 'github'>
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

// Runs in the browser: signs in through better-auth's own endpoints, handing over the
// signed OAuth query so the provider continues the authorization afterwards.
const script = `
const query = new URLSearchParams(location.search);
query.delete('provider');
const oauthQuery = query.has('sig') ? query.toString() : undefined;
const message = document.getElementById('message');
async function call(path, body) {
  const response = await fetch(${JSON.stringify(AUTH_BASE_PATH)} + path, {
    method: 'POST', credentials: 'include',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ ...body, oauth_query: oauthQuery }),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || data.error_description || 'Sign-in failed');
  return data;
}
document.getElementById('password-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  message.textContent = '';
  try {
    const data = await call('/sign-in/email', { email: form.get('email'), password: form.get('password') });
    if (data.url) location.href = data.url; else message.textContent = 'Signed in. You can close this window.';
  } catch (error) { message.textContent = error.message; }
});
document.getElementById('magic-link').addEventListener('click', async () => {
  const email = document.querySelector('input[name=email]').value;
  message.textContent = '';
  try {
    await call('/sign-in/magic-link', { email, callbackURL: document.body.dataset.continue || '/' });
    message.textContent = 'Check your inbox for a sign-in link.';
  } catch (error) { message.textContent = error.message; }
});
`

/**
 * `GET /sign-in`: the page the OIDC provider sends a user to. With
 * `provider=google|github` it goes straight to that provider; otherwise it
 * offers the providers and an e-mail form.
 */
export const signInPlugin: FastifyPluginAsync<SignInPluginOptions> = async (app, { api, providers }) => {
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

    const body = `<h1>Sign in to AIRI</h1>
${providerLinks}${providerLinks ? '\n<hr>' : ''}
<form id="password-form">
  <label>E-mail <input name="email" type="email" autocomplete="email" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button class="primary" type="submit">Sign in</button>
</form>
<button id="magic-link" type="button">E-mail me a sign-in link</button>
<p id="message" class="message" role="status"></p>`
    return sendPage(reply, 'Sign in to AIRI', body, { script, data: { continue: continueUrl ?? '' } })
  })
}
