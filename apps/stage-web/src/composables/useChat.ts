import { toAiriError, type ChatEvent, type ChatMessage } from '@airi/sdk'
import { computed, onScopeDispose, reactive, ref, watch, type Ref } from 'vue'

import { client } from '../client.ts'
import { createLiveReplies } from '../live-replies.ts'
import { noticeFor, noticeForFailedReply, noticeForSend, type Notice } from '../notices.ts'
import type { ReplyVoice } from '../voice.ts'
import { useBalance } from './useBalance.ts'
import { useFeed } from './useFeed.ts'
import { useSession } from './useSession.ts'

// One chat's messages (docs/stage-web.md, "The chat flow"): pulled when it opens and
// after each reconnect, kept true by the app's one feed (new, edited and deleted
// messages, replies as they are written, the chat renamed or deleted on another
// device), and the turns a person takes: send
// (`chats.respond`), stop, regenerate, edit, delete, try again.

export type ChatInfo = Awaited<ReturnType<typeof client.chats.get.query>>
type Message = ChatMessage & { pending?: boolean }

/** A message as the list shows it. */
export interface ShownMessage {
  id: string
  role: string
  content: string
  /** Unset while sent and not stored yet. */
  createdAt?: Date
  /** `stopped` when the reply was stopped before its end. */
  status?: string
  pending?: boolean
  /** The person's own user message (they may edit it). */
  mine: boolean
  /** What the character remembered from the turn this reply answered (seen live on this screen). */
  remembered?: RememberedNote
}

/** Memories extraction kept from one turn, shown under its reply (docs/stage-web.md#memory). */
export interface RememberedNote {
  characterId: string
  memories: Array<{ id: string, content: string }>
}

/** What speaks the replies this device asks for (useVoice). */
export interface ReplySpeaker {
  unlock: () => void
  begin: () => ReplyVoice | null
  cancel: () => void
}

const PENDING_SEQ = Number.MAX_SAFE_INTEGER
const PAGE = 500
// Outlive the screen: a person who leaves to top up comes back to what they wrote.
const drafts = reactive(new Map<string, string>())

const metadataOf = (message: Message) => (message.metadata ?? {}) as { status?: string, answers?: string, regenerates?: string }

export function useChat(chatId: Ref<string>, options: { voice: ReplySpeaker, onReplyEnded?: (message: ChatMessage) => void }) {
  const { user } = useSession()
  const { refreshBalance } = useBalance()
  const { onFeed, onReady } = useFeed()
  const { voice } = options

  const chat = ref<ChatInfo | null>(null)
  const messages = ref<Message[]>([])
  const loading = ref(true)
  const notFound = ref(false)
  // Deleted (or the person removed from it) on another device while it was open here.
  const deleted = ref(false)
  const notice = ref<Notice | null>(null)
  // Between a click and the server's answer (`respond`, `regenerate`).
  const sending = ref(false)
  // Stop pressed before `respond` said which reply it started.
  let stopRequested = false
  // By reply id. Live only: memory events are not replayed, so a reload shows none.
  const remembered = ref(new Map<string, RememberedNote>())

  const replies = createLiveReplies({
    chatId: () => chatId.value,
    lastSeq: () => messages.value.filter(message => !message.pending).at(-1)?.seq ?? 0,
    onFailed: (_replyId, cause) => (notice.value = noticeForFailedReply(cause)),
    onEnded: (_replyId, message) => {
      if (message)
        options.onReplyEnded?.(message)
      // The reply was billed (or refunded) on the server before it ended.
      void refreshBalance().catch(() => undefined)
    },
  })
  const streaming = replies.replies
  const busy = computed(() => sending.value || streaming.value.length > 0)

  const draft = computed({
    get: () => drafts.get(chatId.value) ?? '',
    set: value => void drafts.set(chatId.value, value),
  })

  // A regenerated reply stays stored; the newest answer is the one shown.
  const shown = computed<ShownMessage[]>(() => {
    const replaced = new Set(messages.value.map(message => metadataOf(message).regenerates).filter(Boolean))
    return messages.value.filter(message => !replaced.has(message.id)).map(message => ({
      id: message.id,
      role: message.role,
      content: message.content,
      createdAt: message.pending ? undefined : new Date(message.createdAt),
      status: metadataOf(message).status,
      pending: message.pending,
      mine: message.role === 'user' && message.senderId === user.value?.id,
      remembered: remembered.value.get(message.id),
    }))
  })
  // Only the chat's last reply made by the server can be made again.
  const regenerable = computed(() => {
    const last = messages.value.filter(message => !message.pending && message.role !== 'system').at(-1)
    return last?.role === 'assistant' && metadataOf(last).answers ? last.id : null
  })

  function merge(incoming: Message[]) {
    const byId = new Map(messages.value.map(message => [message.id, message]))
    for (const message of incoming)
      byId.set(message.id, message)
    messages.value = [...byId.values()].sort((a, b) => a.seq - b.seq)
  }

  function drop(ids: string[]) {
    const gone = new Set(ids)
    messages.value = messages.value.filter(message => !gone.has(message.id))
  }

  async function pullAll(id: string) {
    let afterSeq = 0
    for (;;) {
      const page = await client.chats.pullMessages.query({ chatId: id, afterSeq, limit: PAGE })
      if (chatId.value === id)
        merge(page.messages)
      if (page.messages.length < PAGE)
        break
      afterSeq = page.messages.at(-1)!.seq
    }
  }

  /** Keeps the notes true: new memories of a shown reply's turn, and later edits and deletions of them. */
  function noteMemories(event: Extract<ChatEvent, { type: 'memory' }>) {
    const notes = remembered.value
    if (event.change === 'added') {
      if (!event.messageId || !messages.value.some(message => message.id === event.messageId))
        return
      const known = notes.get(event.messageId)?.memories ?? []
      const fresh = event.memories.filter(memory => !known.some(each => each.id === memory.id)).map(({ id, content }) => ({ id, content }))
      notes.set(event.messageId, { characterId: event.characterId, memories: [...known, ...fresh] })
      return
    }
    const changed = new Map(event.memories.map(memory => [memory.id, memory.content]))
    const gone = new Set(event.change === 'deleted' ? event.ids : [])
    for (const [messageId, note] of notes) {
      if (!note.memories.some(memory => gone.has(memory.id) || changed.has(memory.id)))
        continue
      const memories = note.memories.filter(memory => !gone.has(memory.id)).map(memory => ({ id: memory.id, content: changed.get(memory.id) ?? memory.content }))
      if (memories.length === 0)
        notes.delete(messageId)
      else
        notes.set(messageId, { ...note, memories })
    }
  }

  async function load(id: string) {
    replies.reset()
    remembered.value = new Map()
    voice.cancel()
    chat.value = null
    messages.value = []
    notice.value = null
    notFound.value = false
    deleted.value = false
    loading.value = true
    try {
      const [info] = await Promise.all([client.chats.get.query({ chatId: id }), pullAll(id)])
      if (chatId.value === id)
        chat.value = info
    }
    catch (cause) {
      if (chatId.value !== id)
        return
      if (toAiriError(cause).status === 404)
        notFound.value = true
      else
        notice.value = noticeFor(cause)
    }
    finally {
      if (chatId.value === id)
        loading.value = false
    }
  }

  watch(chatId, id => void load(id), { immediate: true })

  /** The chat is gone for this person: what was going on in it stops, and the screen says so. */
  function markDeleted() {
    replies.reset()
    voice.cancel()
    notice.value = null
    drafts.delete(chatId.value)
    deleted.value = true
  }

  onFeed((event) => {
    if ('chatId' in event && event.chatId === chatId.value && !deleted.value) {
      if (event.type === 'messages' || event.type === 'edited')
        merge(event.messages)
      else if (event.type === 'deleted')
        drop(event.messages.map(message => message.id))
      else if (event.type === 'chat' && event.chat && chat.value)
        chat.value = event.chat
      else if (event.type === 'chat' && event.change === 'deleted' && chat.value)
        markDeleted()
    }
    if (event.type === 'memory')
      noteMemories(event)
    replies.push(event)
  })
  // Whatever was stored, and written, while this device was not listening; a rename or a
  // deletion meanwhile too (`chat` events are not replayed).
  onReady(() => {
    const id = chat.value?.id
    if (id && !deleted.value) {
      Promise.all([client.chats.get.query({ chatId: id }), pullAll(id)]).then(([info]) => {
        if (chatId.value === id)
          chat.value = info
      }, (cause: unknown) => {
        if (chatId.value === id && toAiriError(cause).status === 404)
          markDeleted()
      })
    }
    replies.syncAll()
  })

  /** Stops speaking (the reply goes on). */
  function silence() {
    replies.silence()
    voice.cancel()
  }

  /** Runs one turn that starts a reply (`respond`, `regenerate`) and follows it here, spoken. */
  async function startReply(call: () => Promise<{ reply: { id: string } }>, onError = noticeFor): Promise<boolean> {
    voice.unlock()
    silence()
    sending.value = true
    stopRequested = false
    notice.value = null
    try {
      const { reply } = await call()
      replies.own(reply.id, voice.begin())
      if (stopRequested)
        await client.chats.stopReply.mutate({ chatId: chatId.value, replyId: reply.id })
      return true
    }
    catch (cause) {
      notice.value = onError(cause)
      return false
    }
    finally {
      sending.value = false
    }
  }

  /**
   * Sends `spoken` (what voice input heard), or the draft; the message is shown at once
   * and, when `respond` fails (nothing was stored), goes back into the draft.
   */
  async function send(spoken?: string): Promise<void> {
    const content = (spoken ?? draft.value).trim()
    const id = chatId.value
    if (!content || !chat.value || busy.value)
      return
    if (spoken === undefined)
      draft.value = ''
    const messageId = crypto.randomUUID()
    // The stored message (same id) takes this one's place.
    merge([{ id: messageId, chatId: id, seq: PENDING_SEQ, senderId: user.value?.id ?? '', role: 'user', content, metadata: null, createdAt: new Date(), pending: true }])
    const started = await startReply(async () => {
      const answer = await client.chats.respond.mutate({ chatId: id, message: { id: messageId, content } })
      if (chatId.value === id)
        merge([answer.message])
      return answer
    }, noticeForSend)
    if (!started) {
      drop([messageId])
      if (!drafts.get(id))
        drafts.set(id, content)
    }
  }

  function regenerate(messageId: string) {
    const id = chatId.value
    void startReply(() => client.chats.regenerate.mutate({ chatId: id, messageId }))
  }

  /** A failed reply is answered again: the last user message, whose reply was not stored. */
  function retry() {
    const last = messages.value.filter(message => !message.pending && message.role === 'user').at(-1)
    if (last)
      regenerate(last.id)
  }

  async function edit(messageId: string, content: string) {
    try {
      const { message } = await client.chats.editMessage.mutate({ chatId: chatId.value, messageId, content })
      merge([message])
    }
    catch (cause) {
      notice.value = noticeFor(cause)
    }
  }

  async function remove(messageId: string) {
    try {
      await client.chats.deleteMessages.mutate({ chatId: chatId.value, messageIds: [messageId] })
      drop([messageId])
    }
    catch (cause) {
      notice.value = noticeFor(cause)
    }
  }

  /** Stops the streaming reply on the server (from any device); what was written so far stays. */
  async function stop() {
    silence()
    if (streaming.value.length === 0)
      stopRequested = sending.value
    for (const reply of streaming.value)
      await client.chats.stopReply.mutate({ chatId: chatId.value, replyId: reply.id }).catch((cause: unknown) => (notice.value = noticeFor(cause)))
  }

  onScopeDispose(() => {
    replies.reset()
    voice.cancel()
  })

  return { chat, messages, shown, regenerable, streaming, loading, notFound, deleted, notice, busy, draft, send, stop, silence, regenerate, retry, edit, remove }
}
