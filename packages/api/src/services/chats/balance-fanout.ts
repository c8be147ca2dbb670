import { z } from 'zod'

import { channels } from '../../adapters/keys.ts'
import { pubsubMessage } from '../../adapters/messages.ts'
import { createNoticeChannel } from '../../adapters/notice-channel.ts'
import type { PubSub } from '../../adapters/ports.ts'
import type { Logger } from '../../logger.ts'

/** "`userId`'s balance is now `balance`": one per announced write, for every instance. */
export interface BalanceNotice {
  /** The instance that published it (it has told its own subscribers already). */
  origin: string
  userId: string
  balance: number
}

const notice = pubsubMessage<BalanceNotice>(z.object({
  origin: z.string().min(1),
  userId: z.string().min(1),
  balance: z.number().int().min(0),
}), 'balance notice')
export const createBalanceNoticeMessage = notice.create
/** The notice in a pub/sub message, or undefined (logged) when malformed. */
export const parseBalanceNoticeMessage = notice.parse

/**
 * Carries balance notices between instances over one pub/sub channel, subscribed
 * once per instance while anyone listens. Of the notices pub/sub refuses only the
 * newest per user is kept for another try: it is the balance that matters.
 */
export function createBalanceFanout({ pubsub, logger, retryMs = 1000 }: { pubsub: PubSub, logger: Logger, retryMs?: number }) {
  const channel = createNoticeChannel<BalanceNotice>({
    pubsub,
    logger,
    channel: channels.balance(),
    message: notice,
    what: 'balance notice',
    logFields: value => ({ userId: value.userId }),
    keyOf: value => value.userId,
    retryMs,
  })
  return {
    /** Publishes `userId`'s new balance (from this instance); a refused one is retried until it goes through. */
    publish: (userId: string, balance: number): Promise<void> => channel.publish({ userId, balance }),
    /** Calls `listener` with every notice another instance publishes, until the returned function is called. */
    listen: channel.listen,
  }
}

export type BalanceFanout = ReturnType<typeof createBalanceFanout>
