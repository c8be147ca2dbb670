import { computed, ref, watch, type Ref } from 'vue'

import { i18n } from '../i18n.ts'
import { loadVoiceCatalogue, startReplyVoice, unlockAudio, type ReplyVoice, type Voice, type VoiceStats } from '../voice.ts'

const SPEAK_KEY = 'airi.speak'
const voiceKey = (characterId: string) => `airi.voice.${characterId}`

/** "Speak replies", one switch for every chat on this device. */
const speak = ref(localStorage.getItem(SPEAK_KEY) !== 'off')
watch(speak, value => localStorage.setItem(SPEAK_KEY, value ? 'on' : 'off'))

/**
 * The voice of a chat: whether the server can speak at all (`available`: null while
 * the catalogue loads), the voices, the one chosen for `character` (kept per character
 * on this device; else its `defaultVoiceId`, else the first voice), "Speak replies",
 * and the reply being spoken now with what its audio pipeline received.
 */
export function useVoice(character: Ref<{ id: string, defaultVoiceId: string | null } | null>, onError: (message: string) => void) {
  const available = ref<boolean | null>(null)
  const model = ref('')
  const voices = ref<Voice[]>([])
  const chosen = ref<string | null>(null)
  const speaking = ref(false)
  const stats = ref<VoiceStats>({ bytes: 0, chunks: 0 })
  let current: ReplyVoice | null = null

  void loadVoiceCatalogue().then((catalogue) => {
    available.value = catalogue !== null
    model.value = catalogue?.model ?? ''
    voices.value = catalogue?.voices ?? []
  })

  watch(() => character.value?.id, (id) => {
    chosen.value = id ? localStorage.getItem(voiceKey(id)) : null
  }, { immediate: true })

  /** The voice replies of this character are spoken in ('default': the upstream's own when nothing is listed). */
  const voice = computed<string>({
    get: () => {
      const listed = (id: string | null | undefined) => id && (voices.value.length === 0 || voices.value.some(each => each.id === id)) ? id : null
      return listed(chosen.value) ?? listed(character.value?.defaultVoiceId) ?? voices.value[0]?.id ?? 'default'
    },
    set: (id) => {
      chosen.value = id
      if (character.value)
        localStorage.setItem(voiceKey(character.value.id), id)
    },
  })

  function cancel() {
    current?.cancel()
    current = null
    speaking.value = false
  }

  return {
    available,
    voices,
    voice,
    speak,
    speaking,
    stats,
    /** Call inside the click that asks for a reply: browsers only let audio start from a gesture. */
    unlock() {
      if (speak.value && available.value)
        unlockAudio()
    },
    /** A voice for a reply this device asked for, or null when replies are not spoken. */
    begin(): ReplyVoice | null {
      if (!speak.value || !available.value)
        return null
      cancel()
      stats.value = { bytes: 0, chunks: 0 }
      const started = startReplyVoice({ model: model.value, voice: voice.value }, {
        onStats: next => (stats.value = next),
        onError: message => onError(i18n.global.t('chat.voice.stopped', { message })),
      })
      current = started
      speaking.value = true
      void started.done.then(() => {
        if (current === started) {
          current = null
          speaking.value = false
        }
      })
      return started
    },
    /** Stops the sound at once (the reply goes on being written). */
    cancel,
  }
}
