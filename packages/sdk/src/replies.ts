import type { inferRouterOutputs } from '@trpc/server'

import type { AppRouter } from '@airi/api'

import type { AiriClient } from './client.ts'
import { AiriError, toAiriError } from './errors.ts'

type Outputs = inferRouterOutputs<AppRouter>
type TrackedEvent = Outputs['chats']['onMessages'] extends AsyncIterable<infer Event> ? Event : never

/** One event of `chats.onMessages` (the `data` of what `onData` receives). */
export type ChatEvent = TrackedEvent extends { data: infer Data } ? Data : never
/** Text of a reply being made: `delta` follows the first `offset` characters. */
export type ReplyEvent = Extract<ChatEvent, { type: 'reply' }>
/** A reply ended: `complete` or `stopped` (stored as `messageId`) or `failed` (nothing stored). */
export type ReplyEndEvent = Extract<ChatEvent, { type: 'reply.end' }>
/** A stored message, as reads and live events carry it. */
export type ChatMessage = Extract<ChatEvent, { type: 'messages' }>['messages'][number]
/** What `chats.getReply` answers. */
export type ReplyState = Outputs['chats']['getReply']

const PAGE = 500

export interface ReplyFollowerOptions {
  chatId: string
  replyId: string
  /** The reply's whole text each time it grows, and the part just added (what a voice speaks next). */
  onText?: (text: string, added: string) => void
  /**
   * A seq the reply comes after (e.g. its user message's): where to look for the stored
   * reply when its `messages` event was missed. Without it the chat is read from the start.
   */
  afterSeq?: number
}

export interface ReplyFollower {
  /** Feeds one event of a `chats.onMessages` subscription; other chats' and replies' events are ignored. */
  push: (event: ChatEvent) => void
  /** Reads the reply (`chats.getReply`) and continues from its text: on joining late or after a reconnect. */
  sync: () => Promise<void>
  /** The text held so far. */
  readonly text: string
  /** The stored message; rejects with an AiriError when the reply failed. */
  readonly done: Promise<ChatMessage>
  /** Stops following; `done` rejects with `reason`. */
  cancel: (reason?: unknown) => void
}

const replyIdOf = (message: ChatMessage) => (message.metadata as { replyId?: unknown } | null)?.replyId

/**
 * Follows one reply through events the caller feeds in (from the app's one
 * `chats.onMessages` subscription): deltas become the growing text, a gap in
 * `offset` is repaired with `chats.getReply`, and `done` settles with the stored
 * message. Nothing is subscribed here; `followReply` is the self-contained form.
 */
export function createReplyFollower(client: AiriClient, { chatId, replyId, onText, afterSeq = 0 }: ReplyFollowerOptions): ReplyFollower {
  let text = ''
  let settled = false
  let repairing: Promise<void> | null = null
  // Deltas that arrived while a repair was in flight (or that a repair did not reach yet).
  let held: ReplyEvent[] = []
  let resolve!: (message: ChatMessage) => void
  let reject!: (reason: unknown) => void
  const done = new Promise<ChatMessage>((ok, fail) => {
    resolve = ok
    reject = fail
  })
  // A follower nobody awaits must not be an unhandled rejection.
  done.catch(() => undefined)

  function setText(next: string) {
    if (next === text)
      return
    const added = next.startsWith(text) ? next.slice(text.length) : ''
    text = next
    onText?.(text, added)
  }

  function finish(message: ChatMessage) {
    if (settled)
      return
    // The stored content is the text that was generated (all of it, or up to the stop).
    setText(message.content)
    settled = true
    resolve(message)
  }

  function fail(reason: unknown) {
    if (settled)
      return
    settled = true
    reject(reason)
  }

  /** Takes the part of `event` past the text held; false when there is a gap before it. */
  function take(event: ReplyEvent): boolean {
    if (event.offset > text.length)
      return false
    const end = event.offset + event.delta.length
    if (end > text.length)
      setText(text + event.delta.slice(text.length - event.offset))
    return true
  }

  function onDelta(event: ReplyEvent) {
    if (repairing) {
      held.push(event)
    }
    else if (!take(event)) {
      held.push(event)
      void sync()
    }
  }

  async function findStored(messageId: string): Promise<void> {
    for (let after = afterSeq; !settled;) {
      const page = await client.chats.pullMessages.query({ chatId, afterSeq: after, limit: PAGE })
      const found = page.messages.find(message => message.id === messageId)
      if (found)
        return finish(found)
      if (page.messages.length < PAGE)
        return fail(new AiriError(404, 'MESSAGE_NOT_FOUND', 'The reply was stored but is no longer in the chat.', { replyId, messageId }))
      after = page.messages.at(-1)!.seq
    }
  }

  async function ended(end: Pick<ReplyState, 'status' | 'messageId' | 'error'>): Promise<void> {
    if (end.status === 'failed')
      return fail(new AiriError(502, end.error?.code ?? 'REPLY_FAILED', end.error?.message ?? 'The reply failed.', { replyId }))
    if (!end.messageId)
      return fail(new AiriError(500, 'REPLY_NOT_STORED', 'The reply ended without a stored message.', { replyId }))
    await findStored(end.messageId)
  }

  function sync(): Promise<void> {
    if (settled)
      return Promise.resolve()
    repairing ??= (async () => {
      try {
        const state = await client.chats.getReply.query({ chatId, replyId })
        if (state.text.length > text.length)
          setText(state.text)
        if (state.status !== 'streaming')
          await ended(state)
      }
      catch (error) {
        fail(toAiriError(error))
      }
      finally {
        repairing = null
        // What arrived meanwhile; a delta still past the text waits for the next repair.
        held = held.filter(event => !take(event))
      }
    })()
    return repairing
  }

  return {
    push(event) {
      if (settled || !('chatId' in event) || event.chatId !== chatId)
        return
      if (event.type === 'reply' && event.replyId === replyId) {
        onDelta(event)
      }
      else if (event.type === 'messages') {
        const stored = event.messages.find(message => replyIdOf(message) === replyId)
        if (stored)
          finish(stored)
      }
      else if (event.type === 'reply.end' && event.replyId === replyId) {
        // The stored message's event comes first on the same subscription; this finds it if it was missed.
        void ended(event).catch(error => fail(toAiriError(error)))
      }
    },
    sync,
    get text() {
      return text
    },
    done,
    cancel: reason => fail(reason ?? new AiriError(499, 'CANCELLED', 'Stopped following the reply.', { replyId })),
  }
}

export interface FollowReplyOptions extends ReplyFollowerOptions {
  /** Stops following (the reply goes on; `chats.stopReply` stops it). */
  signal?: AbortSignal
}

/**
 * Follows one reply on a subscription of its own: calls `onText` as the text grows
 * and resolves with the stored message (`role: 'assistant'`, `metadata.replyId`);
 * rejects with an AiriError when the reply fails, or with the signal's reason.
 * Works whether the reply is starting, half-way or already over.
 */
export function followReply(client: AiriClient, options: FollowReplyOptions): Promise<ChatMessage> {
  const { signal } = options
  if (signal?.aborted)
    return Promise.reject(signal.reason)
  const follower = createReplyFollower(client, options)
  const subscription = client.chats.onMessages.subscribe(undefined, {
    onData: ({ data }) => {
      // `ready` comes first (and again after a reconnect): read what was made before it.
      if (data.type === 'ready')
        void follower.sync()
      else
        follower.push(data)
    },
    onError: error => follower.cancel(toAiriError(error)),
  })
  const abort = () => follower.cancel(signal!.reason)
  signal?.addEventListener('abort', abort, { once: true })
  return follower.done.finally(() => {
    signal?.removeEventListener('abort', abort)
    subscription.unsubscribe()
  })
}
