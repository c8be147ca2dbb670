// The script of the server-rendered /sign-in page (apps/server/src/plugins/sign-in.ts
// renders its HTML and finds this file's build through Vite's manifest). It signs in,
// signs up and resets passwords through better-auth's own endpoints, handing over the
// signed OAuth query so the provider continues the authorization afterwards. One page,
// several views; links carry the query along.

const AUTH = '/api/auth'
const SIGN_IN = window.location.pathname

type View = 'sign-in' | 'sign-up' | 'inbox' | 'forgot' | 'reset' | 'signed-in'

const initial = new URLSearchParams(window.location.search)
// Parameters this page adds to its own URL; everything else is the OAuth request.
const query = new URLSearchParams(initial)
for (const name of ['provider', 'token', 'error', 'verified'])
  query.delete(name)
const oauthQuery = query.has('sig') ? query.toString() : undefined
const here = SIGN_IN + (query.toString() ? `?${query}` : '')
// The authorization this sign-in continues (after a mailed link too); empty when opened directly.
const continueUrl = document.body.dataset.continue ?? ''

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id)
  if (!found)
    throw new Error(`the sign-in page has no #${id}`)
  return found as T
}

const message = element('message')
const notice = element('notice')

const messages: Record<string, string> = {
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
}

function explain(code: string | null | undefined, fallback?: string): string {
  return (code && messages[code]) || fallback || 'Something went wrong. Try again.'
}

function show(view: View, text = '', isNotice = false): void {
  for (const section of document.querySelectorAll<HTMLElement>('[data-view]'))
    section.hidden = section.dataset.view !== view
  message.textContent = isNotice ? '' : text
  notice.textContent = isNotice ? text : ''
  document.querySelector<HTMLInputElement>(`[data-view="${view}"] input`)?.focus()
}

interface AuthErrorBody {
  code?: string
  message?: string
  error?: string | { code?: string, message?: string }
  error_description?: string
}

/** POSTs to better-auth; throws an Error whose message is meant for the person. */
async function call(path: string, body: Record<string, unknown>, withOauth = false): Promise<{ url?: string }> {
  let response: Response
  try {
    response = await fetch(AUTH + path, {
      method: 'POST',
      credentials: 'include',
      headers: { 'content-type': 'application/json', 'accept': 'application/json' },
      body: JSON.stringify(withOauth && oauthQuery ? { ...body, oauth_query: oauthQuery } : body),
    })
  }
  catch {
    throw new Error('Cannot reach the server. Check your connection and try again.')
  }
  const data = await response.json().catch(() => ({})) as AuthErrorBody & { url?: string }
  if (!response.ok) {
    const nested = typeof data.error === 'object' ? data.error : undefined
    throw new Error(explain(data.code ?? nested?.code, data.message ?? nested?.message ?? data.error_description))
  }
  return data
}

function text(form: FormData, name: string): string {
  const value = form.get(name)
  return typeof value === 'string' ? value : ''
}

function submit(id: string, work: (form: FormData) => Promise<void>): void {
  const form = element<HTMLFormElement>(id)
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    message.textContent = ''
    notice.textContent = ''
    const button = form.querySelector<HTMLButtonElement>('button[type=submit]')
    if (button)
      button.disabled = true
    try {
      await work(new FormData(form))
    }
    catch (error) {
      message.textContent = error instanceof Error ? error.message : String(error)
    }
    finally {
      if (button)
        button.disabled = false
    }
  })
}

submit('password-form', async (form) => {
  const data = await call('/sign-in/email', { email: text(form, 'email'), password: text(form, 'password') }, true)
  if (data.url)
    window.location.href = data.url
  else
    show('signed-in')
})

submit('sign-up-form', async (form) => {
  if (text(form, 'password') !== text(form, 'confirm'))
    throw new Error('The two passwords differ.')
  const email = text(form, 'email')
  await call('/sign-up/email', {
    email,
    password: text(form, 'password'),
    name: text(form, 'name').trim() || email.split('@')[0],
    // After the mailed link: back into the authorization, or to this page, signed in.
    callbackURL: continueUrl || `${SIGN_IN}?verified=1`,
  })
  element('inbox-address').textContent = email
  show('inbox')
})

submit('forgot-form', async (form) => {
  await call('/request-password-reset', { email: text(form, 'email'), redirectTo: here })
  show('sign-in', 'If an account exists for that address, we sent it a link to choose a new password.', true)
})

submit('reset-form', async (form) => {
  if (text(form, 'password') !== text(form, 'confirm'))
    throw new Error('The two passwords differ.')
  await call('/reset-password', { newPassword: text(form, 'password'), token: initial.get('token') })
  history.replaceState(null, '', here)
  show('sign-in', 'Your password is changed. Sign in with the new one.', true)
})

element('magic-link').addEventListener('click', async () => {
  const email = document.querySelector<HTMLInputElement>('#password-form input[name=email]')?.value ?? ''
  message.textContent = ''
  notice.textContent = ''
  if (!email) {
    message.textContent = 'Enter your e-mail address first.'
    return
  }
  try {
    await call('/sign-in/magic-link', { email, callbackURL: continueUrl || '/' }, true)
    notice.textContent = 'Check your inbox for a sign-in link.'
  }
  catch (error) {
    message.textContent = error instanceof Error ? error.message : String(error)
  }
})

for (const link of document.querySelectorAll<HTMLElement>('[data-go]'))
  link.addEventListener('click', () => show(link.dataset.go as View))

// A dead reset link lands here with error=INVALID_TOKEN; a dead verification link with verified=1 too.
const error = initial.get('error')
if (error)
  show(error === 'INVALID_TOKEN' && !initial.has('verified') ? 'forgot' : 'sign-in', explain(error))
else if (initial.get('token'))
  show('reset')
else if (initial.has('verified'))
  show('signed-in', 'Your e-mail address is verified and you are signed in.', true)
else
  show('sign-in')
