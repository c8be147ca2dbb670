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

// Runs in the browser: signs in, signs up and resets passwords through better-auth's
// own endpoints, handing over the signed OAuth query so the provider continues the
// authorization afterwards. One page, several views; links carry the query along.
const script = `
const SIGN_IN = ${JSON.stringify(SIGN_IN_PATH)};
const AUTH = ${JSON.stringify(AUTH_BASE_PATH)};
const initial = new URLSearchParams(location.search);
// Parameters this page adds to its own URL; everything else is the OAuth request.
const query = new URLSearchParams(initial);
for (const name of ['provider', 'token', 'error', 'verified']) query.delete(name);
const oauthQuery = query.has('sig') ? query.toString() : undefined;
const here = SIGN_IN + (query.toString() ? '?' + query : '');
const continueUrl = document.body.dataset.continue || '';
const message = document.getElementById('message');
const notice = document.getElementById('notice');
const messages = {
  INVALID_EMAIL_OR_PASSWORD: 'Wrong e-mail or password.',
  EMAIL_NOT_VERIFIED: 'Your e-mail address is not verified yet. We sent you a new verification link.',
  USER_ALREADY_EXISTS: 'An account with this e-mail already exists. Sign in, or reset your password.',
  USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL: 'An account with this e-mail already exists. Sign in, or reset your password.',
  PASSWORD_TOO_SHORT: 'The password is too short: use at least 8 characters.',
  PASSWORD_TOO_LONG: 'The password is too long.',
  INVALID_EMAIL: 'That does not look like an e-mail address.',
  INVALID_TOKEN: 'This link has expired or was already used. Ask for a new one.',
  TOKEN_EXPIRED: 'This link has expired. Ask for a new one.',
  RATE_LIMITED: 'Too many attempts. Wait a minute and try again.',
  EMAIL_SEND_FAILED: 'We could not send the e-mail right now. Try again in a moment.',
};
function explain(code, fallback) { return messages[code] || fallback || 'Something went wrong. Try again.'; }
function show(view, text, isNotice) {
  for (const section of document.querySelectorAll('[data-view]')) section.hidden = section.dataset.view !== view;
  message.textContent = isNotice ? '' : (text || '');
  notice.textContent = isNotice ? text : '';
  const focus = document.querySelector('[data-view="' + view + '"] input');
  if (focus) focus.focus();
}
async function call(path, body, withOauth) {
  let response;
  try {
    response = await fetch(AUTH + path, {
      method: 'POST', credentials: 'include',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(withOauth && oauthQuery ? { ...body, oauth_query: oauthQuery } : body),
    });
  } catch { throw new Error('Cannot reach the server. Check your connection and try again.'); }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const code = data.code || (data.error && data.error.code);
    throw new Error(explain(code, data.message || (data.error && data.error.message) || data.error_description));
  }
  return data;
}
function submit(id, work) {
  const form = document.getElementById(id);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    message.textContent = '';
    notice.textContent = '';
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try { await work(new FormData(form)); } catch (error) { message.textContent = error.message; }
    finally { button.disabled = false; }
  });
}
submit('password-form', async (form) => {
  const data = await call('/sign-in/email', { email: form.get('email'), password: form.get('password') }, true);
  if (data.url) location.href = data.url; else show('signed-in');
});
submit('sign-up-form', async (form) => {
  if (form.get('password') !== form.get('confirm')) throw new Error('The two passwords differ.');
  const email = String(form.get('email'));
  await call('/sign-up/email', {
    email, password: form.get('password'), name: String(form.get('name') || '').trim() || email.split('@')[0],
    // After the mailed link: back into the authorization, or to this page, signed in.
    callbackURL: continueUrl || SIGN_IN + '?verified=1',
  });
  document.getElementById('inbox-address').textContent = email;
  show('inbox');
});
submit('forgot-form', async (form) => {
  await call('/request-password-reset', { email: form.get('email'), redirectTo: here });
  show('sign-in', 'If an account exists for that address, we sent it a link to choose a new password.', true);
});
submit('reset-form', async (form) => {
  if (form.get('password') !== form.get('confirm')) throw new Error('The two passwords differ.');
  await call('/reset-password', { newPassword: form.get('password'), token: initial.get('token') });
  history.replaceState(null, '', here);
  show('sign-in', 'Your password is changed. Sign in with the new one.', true);
});
document.getElementById('magic-link').addEventListener('click', async () => {
  const email = document.querySelector('#password-form input[name=email]').value;
  message.textContent = '';
  notice.textContent = '';
  if (!email) { message.textContent = 'Enter your e-mail address first.'; return; }
  try {
    await call('/sign-in/magic-link', { email, callbackURL: continueUrl || '/' }, true);
    notice.textContent = 'Check your inbox for a sign-in link.';
  } catch (error) { message.textContent = error.message; }
});
for (const link of document.querySelectorAll('[data-go]')) link.addEventListener('click', () => show(link.dataset.go));
// A dead reset link lands here with error=INVALID_TOKEN; a dead verification link with verified=1 too.
if (initial.get('error')) show(initial.get('error') === 'INVALID_TOKEN' && !initial.has('verified') ? 'forgot' : 'sign-in', explain(initial.get('error')));
else if (initial.get('token')) show('reset');
else if (initial.has('verified')) show('signed-in', 'Your e-mail address is verified and you are signed in.', true);
else show('sign-in');
`

/**
 * `GET /sign-in`: the page the OIDC provider sends a user to. With
 * `provider=google|github` it goes straight to that provider; otherwise it
 * offers the providers and an e-mail form, plus create-account and password
 * reset (a mailed reset link comes back here with `token`).
 */
export const signInPlugin: FastifyPluginAsync<SignInPluginOptions> = async (app, { api, providers }) => {
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
<p id="message" class="message" role="alert"></p>
<p id="notice" class="notice" role="status"></p>`
    return sendPage(reply, 'Sign in to AIRI', body, { script, data: { continue: continueUrl ?? '' } })
  })
}
