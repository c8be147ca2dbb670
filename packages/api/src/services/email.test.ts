import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { startFakeResend, type FakeResend } from '@airi/tooling/fakes/resend'

import { createLogTransport, createResendTransport } from '../adapters/email.ts'
import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { silentLogger } from '../logger.ts'
import { createEmailService, type EmailService } from './email.ts'

const FROM = 'AIRI <noreply@airi.test>'

interface LogEntry { level: keyof Logger, obj: object, msg?: string }

function recordingLogger(): Logger & { entries: LogEntry[] } {
  const entries: LogEntry[] = []
  const at = (level: keyof Logger) => (obj: object, msg?: string) => {
    entries.push({ level, obj, msg })
  }
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

let fake: FakeResend
let email: EmailService

beforeAll(async () => {
  fake = await startFakeResend()
  email = createEmailService({ transport: createResendTransport({ apiKey: fake.apiKey, from: FROM, baseUrl: fake.url }), logger: silentLogger })
})
afterAll(async () => {
  await fake.close()
})

describe('e-mail service through Resend', () => {
  const cases: Array<{ name: string, send: (to: string, url: string) => Promise<void>, subject: RegExp }> = [
    { name: 'verification', send: (to, url) => email.sendVerificationEmail({ to, url }), subject: /verify your e-mail address for AIRI/i },
    { name: 'password reset', send: (to, url) => email.sendPasswordReset({ to, url }), subject: /reset your AIRI password/i },
    { name: 'magic link', send: (to, url) => email.sendMagicLink({ to, url }), subject: /AIRI sign-in link/i },
    { name: 'change e-mail', send: (to, url) => email.sendChangeEmailVerification({ to, newEmail: 'new@airi.test', url }), subject: /change of your AIRI e-mail/i },
    { name: 'delete account', send: (to, url) => email.sendDeleteAccountVerification({ to, url }), subject: /deletion of your AIRI account/i },
  ]

  for (const { name, send, subject } of cases) {
    it(`delivers the ${name} e-mail with its link in the text and the HTML`, async () => {
      const to = `${name.replace(/\W/g, '-')}@airi.test`
      const url = `https://airi.test/api/auth/${name.replace(/\W/g, '-')}?token=abc123&callbackURL=%2F`
      await send(to, url)

      const received = await fake.waitForEmail(e => e.to.includes(to))
      expect(received.to).toEqual([to])
      expect(received.from).toBe(FROM)
      expect(received.subject).toMatch(subject)
      expect(fake.linkIn(received)).toBe(url)
      expect(received.text.split('\n')).toContain(url)
      // In HTML the `&` of the query string is escaped, in the button and in the plain link.
      const escaped = url.replaceAll('&', '&amp;')
      expect(received.html).toContain(`href="${escaped}"`)
      expect(received.html.split(`>${escaped}<`)).toHaveLength(2)
    })
  }

  it('names the new address in the change-e-mail message, escaped in the HTML', async () => {
    await email.sendChangeEmailVerification({ to: 'old@airi.test', newEmail: '<b>new</b>@airi.test', url: 'https://airi.test/confirm' })
    const received = await fake.waitForEmail(e => e.to.includes('old@airi.test'))
    expect(received.text).toContain('<b>new</b>@airi.test')
    expect(received.html).toContain('&lt;b&gt;new&lt;/b&gt;@airi.test')
    expect(received.html).not.toContain('<b>new</b>')
  })

  it('escapes a hostile URL in the HTML and keeps it verbatim in the text', async () => {
    const url = 'https://airi.test/verify?token="><script>alert(1)</script>'
    await email.sendVerificationEmail({ to: 'hostile@airi.test', url })
    const received = await fake.waitForEmail(e => e.to.includes('hostile@airi.test'))
    expect(received.html).not.toContain('<script>')
    expect(received.html).toContain('href="https://airi.test/verify?token=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"')
    expect(received.text.split('\n')).toContain(url)
  })

  it('rejects with EMAIL_SEND_FAILED when Resend fails, and sends nothing', async () => {
    const before = fake.emails.length
    fake.failNext(500)
    const error = await email.sendPasswordReset({ to: 'fail@airi.test', url: 'https://airi.test/reset' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ status: 502, code: 'EMAIL_SEND_FAILED', details: { statusCode: 500 } })
    expect(JSON.stringify((error as ApiError).details)).not.toContain('fail@airi.test')
    expect(fake.emails).toHaveLength(before)
  })

  it('rejects with EMAIL_SEND_FAILED when the API key is wrong', async () => {
    const logger = recordingLogger()
    const wrongKey = createEmailService({ transport: createResendTransport({ apiKey: 're_wrong', from: FROM, baseUrl: fake.url }), logger })
    const error = await wrongKey.sendMagicLink({ to: 'key@airi.test', url: 'https://airi.test/magic' }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ApiError)
    expect(error).toMatchObject({ code: 'EMAIL_SEND_FAILED', details: { statusCode: 401, reason: 'invalid_api_key' } })
    expect(JSON.stringify(error)).not.toContain('re_wrong')
    expect(logger.entries).toMatchObject([{ level: 'warn', obj: { kind: 'magicLink' } }])
  })

  it('rejects with EMAIL_SEND_FAILED when Resend cannot be reached', async () => {
    const gone = await startFakeResend()
    await gone.close()
    const unreachable = createEmailService({ transport: createResendTransport({ apiKey: gone.apiKey, from: FROM, baseUrl: gone.url }), logger: silentLogger })
    await expect(unreachable.sendVerificationEmail({ to: 'down@airi.test', url: 'https://airi.test/v' })).rejects.toMatchObject({ code: 'EMAIL_SEND_FAILED' })
  })
})

describe('e-mail service through the dev log transport', () => {
  it('logs the recipient, subject and link instead of sending', async () => {
    const logger = recordingLogger()
    const service = createEmailService({ transport: createLogTransport(logger), logger })
    const url = 'https://airi.test/api/auth/magic-link/verify?token=xyz'
    await service.sendMagicLink({ to: 'dev@airi.test', url })

    expect(logger.entries).toHaveLength(1)
    const [entry] = logger.entries
    expect(entry).toMatchObject({ level: 'info', msg: expect.stringContaining('dev transport'), obj: { to: 'dev@airi.test', subject: expect.stringMatching(/sign-in link/) } })
    expect((entry!.obj as { text: string }).text.split('\n')).toContain(url)
  })
})
