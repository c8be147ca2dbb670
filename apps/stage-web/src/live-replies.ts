import { createReplyFollower, type AiriError, type ChatEvent, type ChatMessage, type ReplyFollower } from '@airi/sdk'
import { ref } from 'vue'

import { client } from './client.ts'
import type { ReplyVoice } from './voice.ts'

/** A reply the server is making in the open chat, as this device has it so far. */
export interface LiveReply {
  id: string
  text: string
}

export interface LiveRepliesOptions {
  /** The open chat (replies of other chats are not followed). */
  chatId: () => string
  /** The last seq this device holds: where a missed stored reply is looked for. */
  lastSeq: () => number
  /** A reply of the open chat failed (from any device's turn). */
  onFailed: (replyId: string, error: AiriError) => void
  /** A reply ended, whichever way: its stored message (it came on the feed too), or null when it failed. */
  onEnded: (replyId: string, message: ChatMessage | null) => void
}

/**
 * The replies streaming in the open chat, fed by the app's one `chats.onMessages`
 * subscription: each one is an SDK reply follower (gaps repaired with
 * `chats.getReply`); it leaves the list once its stored message arrived. A reply
 * this device asked for can be spoken: its new text goes to the voice as it comes.
 */
export function createLiveReplies(options: LiveRepliesOptions) {
  const replies = ref<LiveReply[]>([])
  const followers = new Map<string, ReplyFollower>()
  const voices = new Map<string, ReplyVoice>()
  // Replies already over here (with their stored text), so a late event does not start following them again.
  const over = new Map<string, string>()

  function end(replyId: string, message: ChatMessage | null) {
    followers.delete(replyId)
    over.set(replyId, message?.content ?? '')
    replies.value = replies.value.filter(reply => reply.id !== replyId)
    const voice = voices.get(replyId)
    voices.delete(replyId)
    if (message)
      voice?.finish()
    else
      voice?.cancel()
    options.onEnded(replyId, message)
  }

  function follow(replyId: string): ReplyFollower | undefined {
    if (over.has(replyId))
      return undefined
    const existing = followers.get(replyId)
    if (existing)
      return existing
    const chatId = options.chatId()
    replies.value = [...replies.value, { id: replyId, text: '' }]
    const follower = createReplyFollower(client, {
      chatId,
      replyId,
      afterSeq: options.lastSeq(),
      onText: (text, added) => {
        const reply = replies.value.find(item => item.id === replyId)
        if (reply)
          reply.text = text
        if (added)
          voices.get(replyId)?.appendText(added)
      },
    })
    followers.set(replyId, follower)
    follower.done.then(
      message => end(replyId, message),
      (error: AiriError) => {
        // Following stopped because the chat closed: nothing to tell.
        if (followers.get(replyId) !== follower)
          return
        end(replyId, null)
        options.onFailed(replyId, error)
      },
    )
    return follower
  }

  return {
    replies,
    /** Feeds one event of the subscription. */
    push(event: ChatEvent) {
      if (!('chatId' in event) || event.chatId !== options.chatId())
        return
      // Another device's turn (or ours, before `respond` answered): follow it from its first event.
      if (event.type === 'reply' || event.type === 'reply.end')
        follow(event.replyId)?.push(event)
      else
        for (const follower of [...followers.values()]) follower.push(event)
    },
    /**
     * A reply this device asked for (`respond`, `regenerate`): followed even if its
     * events came before the answer, and spoken by `voice` from its first word.
     */
    own(replyId: string, voice: ReplyVoice | null) {
      const fresh = !followers.has(replyId)
      const follower = follow(replyId)
      if (!follower) {
        // The whole reply came before `respond` answered: speak what was stored.
        voice?.appendText(over.get(replyId) ?? '')
        voice?.finish()
        return
      }
      if (voice) {
        voices.set(replyId, voice)
        if (follower.text)
          voice.appendText(follower.text)
      }
      // It may have ended before `respond` answered: one read settles that.
      if (fresh)
        void follower.sync()
    },
    /** After a reconnect: deltas were lost while the socket was down. */
    syncAll() {
      for (const follower of followers.values())
        void follower.sync()
    },
    /** Stops speaking every reply (the replies go on). */
    silence() {
      for (const voice of voices.values())
        voice.cancel()
      voices.clear()
    },
    /** Forgets every reply (another chat opened). */
    reset() {
      const following = [...followers.values()]
      followers.clear()
      for (const follower of following)
        follower.cancel()
      for (const voice of voices.values())
        voice.cancel()
      voices.clear()
      over.clear()
      replies.value = []
    },
  }
}
