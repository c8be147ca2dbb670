import { computed, ref, watch, type Ref } from 'vue'
import { useI18n } from 'vue-i18n'

import { client, errorMessage } from '../client.ts'
import { isNotFound, textsFor } from '../components/chats/chat-list.ts'

type Character = Awaited<ReturnType<typeof client.characters.get.query>>

/**
 * One character, read again whenever `characterId` changes, with its texts in the
 * reader's language: what a screen about one character (its chats, its memory) shows
 * at the top. `state` says whether it is there, gone (404) or could not be read.
 */
export function useCharacter(characterId: Ref<string>) {
  const { locale } = useI18n()
  const character = ref<Character | null>(null)
  const state = ref<'loading' | 'ready' | 'missing' | 'error'>('loading')
  const error = ref('')

  async function load() {
    state.value = 'loading'
    try {
      character.value = await client.characters.get.query({ id: characterId.value })
      state.value = 'ready'
    }
    catch (failure) {
      state.value = isNotFound(failure) ? 'missing' : 'error'
      error.value = errorMessage(failure)
    }
  }
  watch(characterId, load, { immediate: true })

  const texts = computed(() => character.value && textsFor(character.value.i18n, locale.value))
  const name = computed(() => texts.value?.name ?? character.value?.characterId ?? '')
  return { character, state, error, texts, name, load }
}
