import type { MessageHandler, Unsubscribe } from './ports.ts'

interface Channel {
  handlers: Set<MessageHandler>
  /** Settles when the channel is subscribed (or refused). */
  confirmed: Promise<void>
  live: boolean
}

export interface ChannelJoins {
  /** Adds `handler` to `channel`, resolving once the channel's subscription is in force. */
  join: (channel: string, handler: MessageHandler) => Promise<Unsubscribe>
  /** The handlers to deliver a message of `channel` to; with `confirmedOnly`, none before its subscription is in force. */
  handlers: (channel: string, confirmedOnly?: boolean) => MessageHandler[]
  /** Every channel joined now (its subscription in force or under way): what a new connection subscribes to again. */
  names: () => string[]
}

/**
 * The local side of pub/sub, one for every adapter: the first handler to join a
 * channel runs `open` (the broker's SUBSCRIBE) and every handler joining meanwhile
 * waits for that one; the last to leave runs `close`. A refused `open` leaves no
 * channel behind, so the next join tries again.
 */
export function createChannelJoins({ open, close }: { open: (channel: string) => Promise<void>, close?: (channel: string) => Promise<void> }): ChannelJoins {
  const channels = new Map<string, Channel>()

  function opened(channel: string): Channel {
    const existing = channels.get(channel)
    if (existing)
      return existing
    const created: Channel = { handlers: new Set(), confirmed: (async () => open(channel))(), live: false }
    created.confirmed.then(() => {
      created.live = true
    }, () => {
      if (channels.get(channel) === created)
        channels.delete(channel)
    })
    channels.set(channel, created)
    return created
  }

  return {
    async join(channel, handler) {
      // Wrap so the same function subscribed twice is two subscriptions.
      const subscription: MessageHandler = message => handler(message)
      const joined = opened(channel)
      // Joined before confirmation, so an unsubscribe in between cannot drop the channel under us.
      joined.handlers.add(subscription)
      try {
        await joined.confirmed
      }
      catch (error) {
        joined.handlers.delete(subscription)
        throw error
      }
      let active = true
      return async () => {
        if (!active)
          return
        active = false
        joined.handlers.delete(subscription)
        if (joined.handlers.size === 0 && channels.get(channel) === joined) {
          channels.delete(channel)
          await close?.(channel)
        }
      }
    },
    handlers(channel, confirmedOnly = false) {
      const entry = channels.get(channel)
      return entry && (entry.live || !confirmedOnly) ? [...entry.handlers] : []
    },
    names: () => [...channels.keys()],
  }
}

/** Runs `handler`; its failure must not stop delivery to the others. */
export function deliver(handler: MessageHandler, message: string): void {
  try {
    handler(message)
  }
  catch {
    // Delivery goes on to the other handlers.
  }
}
