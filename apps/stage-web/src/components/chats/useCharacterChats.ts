import type { ChatEvent } from '@airi/sdk'
import { onScopeDispose, ref, watch, type Ref } from 'vue'

import { client, errorMessage } from '../../client.ts'
import { useFeed } from '../../composables/useFeed.ts'
import { byActivity, isChatWith, newer, rowOf, type Chat, type ChatRow, type Message } from './chat-list.ts'

type ChatChange = Extract<ChatEvent, { type: 'chat' }>

/**
 * The person's chats with one character, newest activity first, kept current.
 *
 * One `chats.list({ characterId })` brings the chats with their newest messages; after
 * that the feed keeps them true without reading again: `chat` events add, rename and
 * remove rows, new messages become a row's preview and move it up. The list is read
 * again on every (re)connection of the feed, because `chat` events are not replayed on
 * resume; nothing else is missed, so the window coming back to the front reads nothing.
 */
export function useCharacterChats(characterId: Ref<string>) {
  const rows = ref<ChatRow[]>([])
  const loaded = ref(false)
  const error = ref<string | null>(null)

  /** Only the latest read lands (an older one may answer after it). */
  let generation = 0
  /** Events that arrived while a read was on its way: applied again on what it returns. */
  let during: ChatEvent[] | null = null

  async function reload(): Promise<void> {
    const current = ++generation
    const events: ChatEvent[] = []
    during = events
    try {
      const chats = await client.chats.list.query({ characterId: characterId.value })
      if (current !== generation)
        return
      during = null
      rows.value = chats.map(rowOf).sort(byActivity)
      events.forEach(apply)
      error.value = null
      loaded.value = true
    }
    catch (failure) {
      if (current === generation) {
        during = null
        error.value = errorMessage(failure)
      }
    }
  }

  const rowOfChat = (chatId: string) => rows.value.find(row => row.chat.id === chatId)

  function show(next: ChatRow[]): void {
    rows.value = next.sort(byActivity)
  }

  function applyChat(event: ChatChange): void {
    const shown = rowOfChat(event.chatId)
    if (!event.chat || !isChatWith(event.chat, characterId.value)) {
      if (shown)
        remove(event.chatId)
      return
    }
    if (shown)
      replace(event.chat)
    // Its first message (a greeting) follows the event: the server announces a chat before its messages.
    else if (event.change === 'created')
      show([...rows.value, { chat: event.chat, last: null }])
    // A chat that became one with this character (a member added): its newest message is unknown.
    else
      void reload()
  }

  function applyMessages(chatId: string, messages: Message[]): void {
    if (!rowOfChat(chatId))
      return
    const newest = messages.reduce<Message | null>(newer, null)
    show(rows.value.map(row => row.chat.id === chatId ? { ...row, last: newer(row.last, newest) } : row))
  }

  function apply(event: ChatEvent): void {
    if (event.type === 'chat')
      applyChat(event)
    else if (event.type === 'messages')
      applyMessages(event.chatId, event.messages)
    else if (event.type === 'edited')
      // Only the preview's own message changes it (an edit of an older one leaves it).
      rows.value = rows.value.map(row => row.chat.id === event.chatId && row.last ? { ...row, last: event.messages.find(message => message.id === row.last!.id) ?? row.last } : row)
    else if (event.type === 'deleted' && event.messages.some(message => message.id === rowOfChat(event.chatId)?.last?.id))
      // The message before it is not on this device: the list has it.
      void reload()
  }

  const { onFeed, onReady } = useFeed()
  onFeed((event) => {
    during?.push(event)
    apply(event)
  })
  onReady(() => void reload())
  onScopeDispose(() => {
    generation++
  })

  watch(characterId, () => {
    rows.value = []
    loaded.value = false
    error.value = null
    void reload()
  }, { immediate: true })

  /** The chat as the server returned it after a change (here, or on another device): its preview stays. */
  function replace(chat: Chat): void {
    rows.value = rows.value.map(row => row.chat.id === chat.id ? { ...row, chat } : row)
  }

  function remove(chatId: string): void {
    rows.value = rows.value.filter(row => row.chat.id !== chatId)
  }

  return { rows, loaded, error, reload, replace, remove }
}
