import { computed, onScopeDispose, ref, watch, type Ref } from 'vue'

import { client, errorMessage } from '../../client.ts'
import { useFeed } from '../../composables/useFeed.ts'
import { isNotFound } from '../chats/chat-list.ts'
import { applyChange, toMemory, uniqueById, type Memory, type MemoryEvent } from './memories.ts'

// One character's memories as the Memory screen shows them: the list newest first,
// paged by the server's cursor, or the results of a search; kept true by the `memory`
// events of the user's feed and read again after every reconnection (those events
// are not replayed).

const PAGE = 50
const SEARCH_LIMIT = 50
const SEARCH_DELAY_MS = 250

export function useMemories(characterId: Ref<string>) {
  const { onFeed, onReady } = useFeed()

  const items = ref<Memory[]>([])
  const cursor = ref<string | null>(null)
  const state = ref<'loading' | 'ready' | 'missing' | 'error'>('loading')
  const error = ref('')
  const loadingMore = ref(false)
  const moreError = ref('')

  const query = ref('')
  /** Null while not searching. */
  const results = ref<Memory[] | null>(null)
  const searching = ref(false)
  const searchError = ref('')

  /** How many the character keeps: the server's count at the last read, moved by the changes since. */
  const counted = ref<number | null>(null)
  /** Ids whose deletion was counted already (this device's own and the feed's event are one deletion). */
  const gone = new Set<string>()
  const total = computed(() => (state.value === 'ready' ? counted.value : null))

  // Events that arrive while a read is on its way are applied again to what it returns.
  const inFlight = new Set<MemoryEvent[]>()
  let generation = 0

  /** Runs a read, collecting the events that arrive meanwhile. */
  async function collecting<T>(read: () => Promise<T>): Promise<{ value: T, meanwhile: MemoryEvent[] }> {
    const meanwhile: MemoryEvent[] = []
    inFlight.add(meanwhile)
    try {
      return { value: await read(), meanwhile }
    }
    finally {
      inFlight.delete(meanwhile)
    }
  }
  const replay = (list: Memory[], meanwhile: MemoryEvent[]) => meanwhile.reduce((shown, change) => applyChange(shown, change), uniqueById(list))

  async function readPages(id: string, atLeast: number): Promise<{ list: Memory[], next: string | null }> {
    let list: Memory[] = []
    let next: string | null = null
    do {
      const page = await client.memory.list.query({ characterId: id, cursor: next ?? undefined, limit: PAGE })
      list = [...list, ...page.items.map(toMemory)]
      counted.value = page.total
      next = page.nextCursor
    } while (next !== null && list.length < atLeast)
    return { list, next }
  }

  /** Reads the list again from its start, as far down as it was read (a reconnect keeps the place). */
  async function load(atLeast = PAGE) {
    const id = characterId.value
    const mine = ++generation
    if (state.value !== 'ready')
      state.value = 'loading'
    try {
      const { value: { list, next }, meanwhile } = await collecting(() => readPages(id, atLeast))
      if (mine !== generation)
        return
      items.value = replay(list, meanwhile)
      cursor.value = next
      state.value = 'ready'
      error.value = ''
    }
    catch (cause) {
      if (mine !== generation)
        return
      state.value = isNotFound(cause) ? 'missing' : 'error'
      error.value = errorMessage(cause)
    }
  }

  async function loadMore() {
    if (cursor.value === null || loadingMore.value)
      return
    const id = characterId.value
    const mine = generation
    loadingMore.value = true
    moreError.value = ''
    try {
      const from = cursor.value
      const { value: page, meanwhile } = await collecting(() => client.memory.list.query({ characterId: id, cursor: from, limit: PAGE }))
      if (mine !== generation)
        return
      items.value = replay([...items.value, ...page.items.map(toMemory)], meanwhile)
      cursor.value = page.nextCursor
      counted.value = page.total
    }
    catch (cause) {
      moreError.value = errorMessage(cause)
    }
    finally {
      loadingMore.value = false
    }
  }

  let searchTimer: ReturnType<typeof setTimeout> | undefined
  let searchGeneration = 0
  async function search() {
    clearTimeout(searchTimer)
    const text = query.value.trim()
    const mine = ++searchGeneration
    if (!text) {
      results.value = null
      searching.value = false
      searchError.value = ''
      return
    }
    searching.value = true
    try {
      const found = await client.memory.search.query({ characterId: characterId.value, query: text, limit: SEARCH_LIMIT })
      if (mine === searchGeneration) {
        results.value = found.map(toMemory)
        searchError.value = ''
      }
    }
    catch (cause) {
      if (mine === searchGeneration)
        searchError.value = errorMessage(cause)
    }
    finally {
      if (mine === searchGeneration)
        searching.value = false
    }
  }
  // As the person types, once they pause; an emptied box is the list again at once.
  watch(query, (text) => {
    clearTimeout(searchTimer)
    if (!text.trim())
      void search()
    else
      searchTimer = setTimeout(() => void search(), SEARCH_DELAY_MS)
  })
  onScopeDispose(() => clearTimeout(searchTimer))

  function apply(change: Pick<MemoryEvent, 'change' | 'memories' | 'ids'>) {
    if (counted.value !== null) {
      if (change.change === 'added')
        counted.value += change.ids.filter(id => !items.value.some(item => item.id === id)).length
      else if (change.change === 'deleted')
        counted.value -= change.ids.filter(id => !gone.has(id) && gone.add(id)).length
    }
    items.value = applyChange(items.value, change)
    // A search shows what matched; a new memory joins it only when searched again.
    if (results.value)
      results.value = applyChange(results.value, change, { add: false })
  }

  onFeed((event) => {
    if (event.type !== 'memory' || event.characterId !== characterId.value)
      return
    for (const meanwhile of inFlight)
      meanwhile.push(event)
    apply(event)
  })
  // Also the first connection: a read that began before it may have missed a change.
  onReady(() => {
    if (state.value !== 'missing')
      void load(Math.max(PAGE, items.value.length))
    if (results.value)
      void search()
  })

  watch(characterId, () => {
    query.value = ''
    results.value = null
    items.value = []
    state.value = 'loading'
    void load()
  }, { immediate: true })

  return {
    items,
    total,
    hasMore: computed(() => cursor.value !== null),
    state,
    error,
    loadingMore,
    moreError,
    query,
    results,
    searching,
    searchError,
    load: () => load(),
    loadMore,
    search,
    /** What this device changed itself (the feed says it too; applying twice changes nothing). */
    added: (memory: Memory) => apply({ change: 'added', memories: [memory], ids: [memory.id] }),
    updated: (memory: Memory) => apply({ change: 'updated', memories: [memory], ids: [memory.id] }),
    deleted: (id: string) => apply({ change: 'deleted', memories: [], ids: [id] }),
  }
}
