import type { EmailTransport } from '../adapters/email.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../metrics.ts'

export interface EmailServiceDeps {
  transport: EmailTransport
  /** The product name shown in subjects and bodies. */
  appName?: string
  logger: Logger
  /** Counts sends and failures by kind (`airi.email.send`, `airi.email.failures`). */
  metrics?: Pick<Metrics, 'emailSent' | 'emailFailures'>
}

/** What one kind of e-mail says; the layout around it is shared. */
interface EmailContent {
  subject: string
  /** Paragraphs before the button. */
  intro: string[]
  action: string
  /** Said after the link, e.g. why the reader can ignore it. */
  note: string
}

interface LinkParams { to: string, url: string }
interface ChangeEmailParams extends LinkParams { newEmail: string }

const templates = {
  verification: (app: string): EmailContent => ({
    subject: `Verify your e-mail address for ${app}`,
    intro: [`Welcome to ${app}! Confirm that this address is yours to finish creating your account.`],
    action: 'Verify e-mail address',
    note: 'If you did not sign up, you can ignore this e-mail.',
  }),
  passwordReset: (app: string): EmailContent => ({
    subject: `Reset your ${app} password`,
    intro: [`Someone asked to reset the password of your ${app} account.`],
    action: 'Choose a new password',
    note: 'If it was not you, ignore this e-mail: your password stays as it is.',
  }),
  magicLink: (app: string): EmailContent => ({
    subject: `Your ${app} sign-in link`,
    intro: [`Use this link to sign in to ${app}. It works once and expires soon.`],
    action: `Sign in to ${app}`,
    note: 'If you did not ask to sign in, you can ignore this e-mail.',
  }),
  changeEmail: (app: string, newEmail: string): EmailContent => ({
    subject: `Confirm the change of your ${app} e-mail address`,
    intro: [`Someone asked to change the e-mail address of your ${app} account to ${newEmail}.`],
    action: 'Confirm the change',
    note: 'If it was not you, ignore this e-mail and your address stays the same.',
  }),
  deleteAccount: (app: string): EmailContent => ({
    subject: `Confirm the deletion of your ${app} account`,
    intro: [`Someone asked to delete your ${app} account. This removes your characters, chats and settings and cannot be undone.`],
    action: 'Delete my account',
    note: 'If it was not you, ignore this e-mail: nothing will be deleted.',
  }),
}

type EmailKind = keyof typeof templates

const htmlEscapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\'': '&#39;' }

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, char => htmlEscapes[char]!)
}

/** Renders the shared layout: the link appears as a button and as plain text, since some clients hide buttons. */
function renderEmail(app: string, content: EmailContent, url: string): { html: string, text: string } {
  const e = escapeHtml
  const paragraph = (body: string) => `<p style="margin:0 0 16px;font-size:15px;line-height:1.5;color:#1f2937">${body}</p>`
  const html = [
    '<!doctype html>',
    '<html><body style="margin:0;padding:24px;background:#f3f4f6;font-family:-apple-system,BlinkMacSystemFont,\'Segoe UI\',Roboto,Helvetica,Arial,sans-serif">',
    '<div style="max-width:480px;margin:0 auto;padding:32px;background:#ffffff;border-radius:8px">',
    `<h1 style="margin:0 0 24px;font-size:20px;color:#111827">${e(app)}</h1>`,
    ...content.intro.map(line => paragraph(e(line))),
    `<p style="margin:24px 0"><a href="${e(url)}" style="display:inline-block;padding:12px 20px;background:#111827;color:#ffffff;text-decoration:none;border-radius:6px;font-size:15px">${e(content.action)}</a></p>`,
    paragraph('Or paste this link into your browser:'),
    `<p style="margin:0 0 16px;font-size:13px;line-height:1.5;word-break:break-all"><a href="${e(url)}" style="color:#2563eb">${e(url)}</a></p>`,
    `<p style="margin:24px 0 0;font-size:13px;line-height:1.5;color:#6b7280">${e(content.note)}</p>`,
    '</div></body></html>',
  ].join('\n')
  // The URL stands on its own line so mail clients (and tests) can pick it out.
  const text = [...content.intro, '', `${content.action}:`, url, '', content.note, '', `— ${app}`].join('\n')
  return { html, text }
}

export type EmailService = ReturnType<typeof createEmailService>

/** The account e-mails of better-auth. A transport failure rejects, so the caller (and the client) sees it. */
export function createEmailService({ transport, appName = 'AIRI', logger, metrics }: EmailServiceDeps) {
  async function send(kind: EmailKind, to: string, url: string, content: EmailContent): Promise<void> {
    const { html, text } = renderEmail(appName, content, url)
    try {
      await transport.send({ to, subject: content.subject, html, text })
      metrics?.emailSent.add(1, { 'airi.email.kind': kind })
    }
    catch (error) {
      metrics?.emailFailures.add(1, { 'airi.email.kind': kind })
      // No recipient in the log: the kind is enough to find the flow, the error says why.
      logger.warn({ err: error, kind }, 'e-mail not sent')
      throw error
    }
  }

  return {
    sendVerificationEmail: ({ to, url }: LinkParams) => send('verification', to, url, templates.verification(appName)),
    sendPasswordReset: ({ to, url }: LinkParams) => send('passwordReset', to, url, templates.passwordReset(appName)),
    sendMagicLink: ({ to, url }: LinkParams) => send('magicLink', to, url, templates.magicLink(appName)),
    sendChangeEmailVerification: ({ to, newEmail, url }: ChangeEmailParams) => send('changeEmail', to, url, templates.changeEmail(appName, newEmail)),
    sendDeleteAccountVerification: ({ to, url }: LinkParams) => send('deleteAccount', to, url, templates.deleteAccount(appName)),
  }
}
