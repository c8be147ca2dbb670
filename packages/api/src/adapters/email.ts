import { Resend } from 'resend'

import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'

interface EmailMessage {
  to: string
  subject: string
  html: string
  text: string
}

/** The port the e-mail service sends through; a failed send rejects. */
export interface EmailTransport {
  send: (message: EmailMessage) => Promise<void>
}

export interface ResendTransportOptions {
  apiKey: string
  /** The sender, e.g. `AIRI <noreply@example.com>`; its domain must be verified at Resend. */
  from: string
  /** Resend's API origin; tests point it at the local fake. */
  baseUrl?: string
}

export function createResendTransport({ apiKey, from, baseUrl }: ResendTransportOptions): EmailTransport {
  // Without a key the SDK silently falls back to RESEND_API_KEY; we want config to be explicit.
  if (!apiKey)
    throw new Error('createResendTransport: apiKey is required')
  // The SDK appends paths as-is, so a trailing slash would produce `//emails`.
  const resend = new Resend(apiKey, { baseUrl: baseUrl?.replace(/\/+$/, '') })

  return {
    async send(message) {
      // The SDK answers `{ data, error }` and turns network failures into an error too,
      // so only something unexpected (a bug in the SDK) ever throws here.
      let result: Awaited<ReturnType<typeof resend.emails.send>>
      try {
        result = await resend.emails.send({ from, to: message.to, subject: message.subject, html: message.html, text: message.text })
      }
      catch {
        throw sendFailed({ statusCode: null, reason: 'exception' })
      }
      // Resend's messages can quote addresses, so only its status and error name go into details.
      if (result.error)
        throw sendFailed({ statusCode: result.error.statusCode, reason: result.error.name })
    },
  }
}

function sendFailed(details: { statusCode: number | null, reason: string }): ApiError {
  return new ApiError(502, 'EMAIL_SEND_FAILED', 'Could not send the e-mail', { provider: 'resend', ...details })
}

/** Development transport: nothing leaves the machine, the message (and its links) goes to the log. */
export function createLogTransport(logger: Logger): EmailTransport {
  return {
    async send({ to, subject, text }) {
      logger.info({ to, subject, text }, 'e-mail (dev transport: not sent)')
    },
  }
}
