import { toAiriError, type AiriError } from '@airi/sdk'

import { errorMessage } from './client.ts'
import { i18n } from './i18n.ts'

/**
 * Something went wrong that the person can do something about, with the way out when
 * there is one: `top-up` opens the Flux screen, `retry` answers the last message again,
 * `resend` sends the draft again.
 */
export interface Notice { text: string, action?: 'top-up' | 'retry' | 'resend' }

const t = (key: string, values?: Record<string, unknown>) => values ? i18n.global.t(key, values) : i18n.global.t(key)
const outOfFlux = (): Notice => ({ text: t('chat.notices.outOfFlux'), action: 'top-up' })

/** What a failed chat call means for the person (never a config entry's name). */
export function noticeFor(cause: unknown): Notice {
  const { code, status } = toAiriError(cause)
  if (code === 'INSUFFICIENT_FLUX' || status === 402)
    return outOfFlux()
  if (code === 'REPLY_IN_PROGRESS')
    return { text: t('chat.notices.replyInProgress') }
  if (code === 'CONFIG_NOT_SET')
    return { text: t('chat.notices.notConfigured') }
  if (code === 'RATE_LIMITED' || status === 429)
    return { text: t('chat.notices.rateLimited') }
  return { text: errorMessage(cause) }
}

/** `respond` failed: nothing was stored, the message is back in the draft, and sending it again may work. */
export function noticeForSend(cause: unknown): Notice {
  const notice = noticeFor(cause)
  if (notice.action || toAiriError(cause).code === 'CONFIG_NOT_SET')
    return notice
  return { text: t('chat.notices.notSent', { reason: notice.text }), action: 'resend' }
}

/** A reply that ended `failed` (on any device): answered again with `chats.regenerate`. */
export function noticeForFailedReply(cause: AiriError): Notice {
  return cause.code === 'INSUFFICIENT_FLUX' ? outOfFlux() : { text: t('chat.notices.replyFailed'), action: 'retry' }
}

/** Voice input's own problems that need the chat's notice (the way to top up). */
export function noticeForVoiceInput(code: string, message: string): Notice {
  return code === 'insufficient_flux'
    ? { text: t('chat.input.outOfFlux'), action: 'top-up' }
    : { text: t('chat.input.stopped', { message }) }
}
