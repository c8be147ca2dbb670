import type { ChatEvent } from '@airi/sdk'
import { getCurrentScope, onScopeDispose, ref } from 'vue'

import { client } from '../client.ts'

// The app's one live feed: `chats.onMessages` without a chat carries everything of the
// user (messages, edits, deletions, replies as they are written, balance changes, chats
// created, renamed or deleted) to every device. The shell starts it once signed in;
// screens listen to it.

type FeedHandler = (event: ChatEvent) => void

const handlers = new Set<FeedHandler>()
const readyHandlers = new Set<() => void>()
/** True while the feed is connected (its `ready` came and no error since). */
const live = ref(false)
let subscription: { unsubscribe: () => void } | undefined

function listen<T>(set: Set<T>, handler: T): () => void {
  set.add(handler)
  const stop = () => void set.delete(handler)
  // Registered in a component's setup: removed with the component.
  if (getCurrentScope())
    onScopeDispose(stop)
  return stop
}

export function startFeed(): void {
  if (subscription)
    return
  subscription = client.chats.onMessages.subscribe(undefined, {
    onData: ({ data }) => {
      if (data.type === 'ready') {
        live.value = true
        for (const handler of readyHandlers)
          handler()
        return
      }
      for (const handler of handlers)
        handler(data)
    },
    // The SDK reconnects and resumes by itself; an error here ends the feed (e.g. signed out).
    onError: () => {
      live.value = false
      subscription = undefined
    },
  })
}

export function stopFeed(): void {
  subscription?.unsubscribe()
  subscription = undefined
  live.value = false
}

export function useFeed() {
  return {
    live,
    /** Every event of the feed but `ready`. */
    onFeed: (handler: FeedHandler) => listen(handlers, handler),
    /** On each (re)connection: time to re-read what may have been missed. */
    onReady: (handler: () => void) => listen(readyHandlers, handler),
  }
}
