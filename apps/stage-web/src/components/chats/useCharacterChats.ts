import { onScopeDispose, ref, watch, type Ref } from 'vue'

import { client, errorMessage } from '../../client.ts'
import { useFeed } from '../../composables/useFeed.ts'
import { byActivity, isChatWith, lastMessageOf, type Chat, type ChatRow, type Message } from './chat-list.ts'

/** How long feed events are gathered before the list is read again (a reply is several events). */
const RELOAD_DELAY_MS = 300

/**
 * The person's chats with one character, newest activity first, kept current.
 *
 * The feed carries messages (new, edited, deleted) but nothing about chats themselves:
 * a chat renamed, deleted or created (without a greeting) on another device sends no
 * event. So the list is read again on every (re)connection of the feed and whenever the
 * window comes back to the front, besides after feed events about these chats.
 */
export function useCharacterChats(characterId: Ref<string>) {
  const rows = ref<ChatRow[]>([])
  const loaded = ref(false)
  const error = ref<string | null>(null)

  /** The newest message of each chat, as of the chat's lastSeq when it was read. */
  const previews = new Map<string, { seq: number, message: Message | null }>()
  /** The person's other chats: their events change nothing here. */
  let others = new Set<string>()
  /** Only the latest read lands (an older one may answer after it). */
  let generation = 0
  let timer: ReturnType<typeof setTimeout> | undefined

  async function reload(): Promise<void> {
    clearTimeout(timer)
    const current = ++generation
    try {
      const all = await client.chats.list.query()
      const mine = all.filter(chat => isChatWith(chat, characterId.value))
      const stale = mine.filter(chat => previews.get(chat.id)?.seq !== chat.lastSeq)
      const fetched = await Promise.all(stale.map(lastMessageOf))
      if (current !== generation)
        return
      stale.forEach((chat, index) => previews.set(chat.id, { seq: chat.lastSeq, message: fetched[index]! }))
      others = new Set(all.filter(chat => !isChatWith(chat, characterId.value)).map(chat => chat.id))
      rows.value = mine.map(chat => ({ chat, last: previews.get(chat.id)!.message })).sort(byActivity)
      error.value = null
      loaded.value = true
    }
    catch (failure) {
      if (current === generation)
        error.value = errorMessage(failure)
    }
  }

  function reloadSoon(): void {
    clearTimeout(timer)
    timer = setTimeout(() => void reload(), RELOAD_DELAY_MS)
  }

  const { onFeed, onReady } = useFeed()
  onFeed((event) => {
    if (event.type !== 'messages' && event.type !== 'edited' && event.type !== 'deleted')
      return
    if (others.has(event.chatId))
      return
    // An edit or a deletion may be of the message shown; lastSeq does not tell.
    if (event.type !== 'messages')
      previews.delete(event.chatId)
    reloadSoon()
  })
  onReady(reloadSoon)

  function onVisible(): void {
    if (document.visibilityState === 'visible')
      reloadSoon()
  }
  window.addEventListener('focus', reloadSoon)
  document.addEventListener('visibilitychange', onVisible)
  onScopeDispose(() => {
    clearTimeout(timer)
    generation++
    window.removeEventListener('focus', reloadSoon)
    document.removeEventListener('visibilitychange', onVisible)
  })

  watch(characterId, () => {
    rows.value = []
    loaded.value = false
    error.value = null
    void reload()
  }, { immediate: true })

  /** The chat as the server returned it after a change made here. */
  function replace(chat: Chat): void {
    rows.value = rows.value.map(row => row.chat.id === chat.id ? { ...row, chat } : row)
  }

  function remove(chatId: string): void {
    rows.value = rows.value.filter(row => row.chat.id !== chatId)
    previews.delete(chatId)
  }

  return { rows, loaded, error, reload, replace, remove }
}
