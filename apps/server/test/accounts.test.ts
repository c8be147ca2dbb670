import { createAuthClient } from 'better-auth/client'
import { magicLinkClient } from 'better-auth/client/plugins'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, TRPCClientError } from '@airi/sdk'

import { emailTo, startTestServer, uniqueEmail, type TestServer } from './harness.ts'

let server: TestServer

beforeAll(async () => {
  server = await startTestServer()
})
afterAll(() => server.close())

/**
 * better-auth's own client, as a browser-less app uses it: the session travels as a
 * bearer token, captured from the `set-auth-token` header the bearer plugin sends.
 */
function authClient() {
  const session = { token: undefined as string | undefined }
  const client = createAuthClient({
    baseURL: server.baseUrl,
    plugins: [magicLinkClient()],
    fetchOptions: {
      auth: { type: 'Bearer', token: () => session.token },
      onSuccess: (context) => {
        const token = context.response.headers.get('set-auth-token')
        if (token)
          session.token = token
      },
    },
  })
  return { client, session }
}

/** Follows an e-mailed link as a browser would (without following redirects), keeping the session it sets. */
async function openLink(link: string): Promise<{ status: number, location: string | null, token: string | null }> {
  const response = await fetch(link, { redirect: 'manual' })
  return { status: response.status, location: response.headers.get('location'), token: response.headers.get('set-auth-token') }
}

function me(token: string | undefined) {
  return createAiriClient({ baseUrl: server.baseUrl, getToken: () => token }).auth.me.query()
}

const password = 'a long enough password'

describe('e-mail and password', () => {
  it('sign-up → verification e-mail → verify → sign-in → auth.me', async () => {
    const email = uniqueEmail('signup')
    const { client, session } = authClient()

    const signUp = await client.signUp.email({ email, password, name: 'New User' })
    expect(signUp.error).toBeNull()
    expect(signUp.data?.token).toBeNull()

    const mail = await emailTo(server, email, /verify/i)
    expect(mail.html).toContain(server.resend.linkIn(mail).replaceAll('&', '&amp;'))
    const verified = await openLink(server.resend.linkIn(mail))
    expect(verified.status).toBe(302)

    const signIn = await client.signIn.email({ email, password })
    expect(signIn.error).toBeNull()
    expect(session.token).toEqual(expect.any(String))
    const result = await me(session.token)
    expect(result.user).toMatchObject({ email, emailVerified: true, name: 'New User' })

    // The session also reaches better-auth's own endpoints.
    expect((await client.getSession()).data?.user.email).toBe(email)
  })

  it('refuses to sign in an unverified address, and sends the verification again', async () => {
    const email = uniqueEmail('unverified')
    const { client, session } = authClient()
    await client.signUp.email({ email, password, name: 'Unverified' })
    await emailTo(server, email, /verify/i)
    const before = server.resend.emails.filter(mail => mail.to.includes(email)).length

    const signIn = await client.signIn.email({ email, password })
    expect(signIn.error).toMatchObject({ status: 403, code: 'EMAIL_NOT_VERIFIED' })
    expect(session.token).toBeUndefined()
    await expect.poll(() => server.resend.emails.filter(mail => mail.to.includes(email)).length).toBe(before + 1)
  })

  it('refuses a wrong password without saying whether the account exists', async () => {
    const email = uniqueEmail('known')
    const { client } = authClient()
    await client.signUp.email({ email, password, name: 'Known' })
    await openLink(server.resend.linkIn(await emailTo(server, email, /verify/i)))

    const unknown = await client.signIn.email({ email: uniqueEmail('nobody'), password })
    const wrong = await client.signIn.email({ email, password: 'not the password at all' })
    expect(unknown.error).toMatchObject({ status: 401 })
    expect(wrong.error).toMatchObject({ status: 401 })
    expect(wrong.error?.code).toBe(unknown.error?.code)
    expect(wrong.error?.message).toBe(unknown.error?.message)
  })

  it('resets a forgotten password through the e-mailed link, revoking old sessions', async () => {
    const email = uniqueEmail('reset')
    const { client, session } = authClient()
    await client.signUp.email({ email, password, name: 'Forgetful' })
    await openLink(server.resend.linkIn(await emailTo(server, email, /verify/i)))
    await client.signIn.email({ email, password })
    const oldToken = session.token
    expect((await me(oldToken)).user.email).toBe(email)

    const { client: anonymous } = authClient()
    expect((await anonymous.requestPasswordReset({ email, redirectTo: '/reset-password' })).error).toBeNull()
    const link = await openLink(server.resend.linkIn(await emailTo(server, email, /reset/i)))
    expect(link.status).toBe(302)
    const token = new URL(link.location!, server.baseUrl).searchParams.get('token')!
    expect(token).toEqual(expect.any(String))

    const newPassword = 'an entirely new password'
    expect((await anonymous.resetPassword({ newPassword, token })).error).toBeNull()
    expect((await anonymous.signIn.email({ email, password })).error).toMatchObject({ status: 401 })
    expect((await anonymous.signIn.email({ email, password: newPassword })).error).toBeNull()
    await expect(me(oldToken)).rejects.toBeInstanceOf(TRPCClientError)
    // A reset link works once.
    expect((await anonymous.resetPassword({ newPassword: 'yet another password', token })).error).toMatchObject({ status: 400 })
  })

  it('signs in with a magic link', async () => {
    const email = uniqueEmail('magic')
    const { client } = authClient()
    expect((await client.signIn.magicLink({ email, callbackURL: '/' })).error).toBeNull()
    const link = await openLink(server.resend.linkIn(await emailTo(server, email, /sign-in link/i)))
    expect(link.status).toBe(302)
    expect(link.token).toEqual(expect.any(String))
    // A magic link proves the address.
    expect((await me(link.token!)).user).toMatchObject({ email, emailVerified: true })
    // And works once.
    const again = await openLink(server.resend.linkIn(server.resend.emails.findLast(mail => mail.to.includes(email))!))
    expect(again.token).toBeNull()
  })

  it('changes the e-mail address after confirmation from the old one and verification of the new one', async () => {
    const email = uniqueEmail('old')
    const newEmail = uniqueEmail('new')
    const { client, session } = authClient()
    await client.signUp.email({ email, password, name: 'Mover' })
    await openLink(server.resend.linkIn(await emailTo(server, email, /verify/i)))
    await client.signIn.email({ email, password })

    expect((await client.changeEmail({ newEmail, callbackURL: '/' })).error).toBeNull()
    const confirmation = await emailTo(server, email, /change/i)
    expect(confirmation.text).toContain(newEmail)
    expect((await me(session.token)).user.email).toBe(email)

    await openLink(server.resend.linkIn(confirmation))
    await openLink(server.resend.linkIn(await emailTo(server, newEmail, /verify/i)))
    expect((await me(session.token)).user).toMatchObject({ email: newEmail, emailVerified: true })
  })

  it('reports an e-mail that could not be sent as an error the client sees', async () => {
    const { client } = authClient()
    server.resend.failNext(500)
    const result = await client.signIn.magicLink({ email: uniqueEmail('undeliverable'), callbackURL: '/' })
    expect(result.error).toMatchObject({ status: 502, code: 'EMAIL_SEND_FAILED' })
  })
})

describe('rate limit on /api/auth/*', () => {
  it('answers 429 past the per-IP limit, through the shared counter, and leaves other routes alone', async () => {
    const limited = await startTestServer({ authRateLimitPerMinute: 5 })
    try {
      const statuses: number[] = []
      for (let i = 0; i < 7; i++)
        statuses.push((await fetch(`${limited.baseUrl}/api/auth/ok`)).status)
      expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200])
      expect(statuses.slice(5)).toEqual([429, 429])

      const blocked = await fetch(`${limited.baseUrl}/api/auth/sign-in/email`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
      expect(blocked.status).toBe(429)
      expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0)
      expect(await blocked.json()).toEqual({
        error: { code: 'RATE_LIMITED', message: expect.stringMatching(/at most 5 sign-in requests per minute/), details: { retryAfterSeconds: expect.any(Number), limit: 5 } },
      })

      expect((await fetch(`${limited.baseUrl}/trpc/meta.info`)).status).toBe(200)
    }
    finally {
      await limited.close()
    }
  })
})
