import type { AiriError } from '@airi/sdk'

import { errorMessage } from './client.ts'

/** Something went wrong that the person can do something about, with the way out when there is one. */
export interface Notice { text: string, action?: 'top-up' | 'retry' }

const OUT_OF_FLUX: Notice = { text: 'You are out of Flux. Top up to keep talking.', action: 'top-up' }

/** What a failed chat call means for the person (never a config entry's name). */
export function noticeFor(cause: unknown): Notice {
  const data = (cause as { data?: { apiCode?: string, httpStatus?: number } }).data
  if (data?.apiCode === 'INSUFFICIENT_FLUX' || data?.httpStatus === 402)
    return OUT_OF_FLUX
  if (data?.apiCode === 'REPLY_IN_PROGRESS')
    return { text: 'A reply is still being written. Wait for it, or stop it first.' }
  if (data?.apiCode === 'CONFIG_NOT_SET')
    return { text: 'The service has no language model configured yet — ask the operator.' }
  if (data?.apiCode === 'RATE_LIMITED')
    return { text: 'Too many messages at once. Wait a moment and try again.' }
  return { text: errorMessage(cause) }
}

/** A reply that ended `failed` (on any device): answered again with `chats.regenerate`. */
export function noticeForFailedReply(cause: AiriError): Notice {
  return cause.code === 'INSUFFICIENT_FLUX' ? OUT_OF_FLUX : { text: 'The reply failed — try again.', action: 'retry' }
}
