import { toAiriError } from '@airi/sdk'
import { ref } from 'vue'
import { useI18n } from 'vue-i18n'

import { client, errorMessage } from '../../client.ts'
import type { CharacterDetail } from './characters.ts'

// Character Cards (SPEC §4.14): import a V2/V3 card from a PNG or JSON file, export one
// as either. What happened is said in `status` or, in words, in `error`.

/** The server refuses larger cards; saying so here spares the upload. */
const MAX_CARD_BYTES = 8 * 1024 * 1024

function readAsDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader()
    reader.onload = () => resolve(reader.result as string)
    reader.onerror = () => reject(reader.error ?? new Error('The file could not be read.'))
    reader.readAsDataURL(file)
  })
}

/** A PNG goes as a data: URL, anything else as the JSON text it should be; the server says what is wrong with either. */
async function cardOf(file: File): Promise<string> {
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer())
  const png = head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4E && head[3] === 0x47
  return png ? readAsDataUrl(file) : file.text()
}

export function useCards() {
  const { t } = useI18n()
  const busy = ref(false)
  const status = ref('')
  const error = ref('')

  function clear() {
    status.value = ''
    error.value = ''
  }

  /** The character a card file makes, or undefined when it was refused (and `error` says why). */
  async function importCard(file: File): Promise<CharacterDetail | undefined> {
    if (busy.value)
      return undefined
    clear()
    if (file.size > MAX_CARD_BYTES) {
      error.value = t('characters.cards.tooLarge', { file: file.name })
      return undefined
    }
    busy.value = true
    try {
      const created = await client.characters.importCard.mutate({ card: await cardOf(file) })
      status.value = t('characters.cards.imported', { name: created.i18n[0]?.name ?? created.characterId })
      return created
    }
    catch (cause) {
      // A refused card's message names what is wrong with it, for the person who made it.
      const failure = toAiriError(cause)
      error.value = t('characters.cards.failed', { file: file.name, reason: failure.code === 'INVALID_CARD' ? failure.message : errorMessage(cause) })
      return undefined
    }
    finally {
      busy.value = false
    }
  }

  async function exportCard(character: { id: string, name: string }, extension: 'json' | 'png') {
    clear()
    try {
      const { fileName, blob } = await client.rest.characterCard(character.id, extension)
      const url = URL.createObjectURL(blob)
      const link = document.createElement('a')
      link.href = url
      link.download = fileName
      link.click()
      // The download has started from the URL; it is not needed after this turn.
      setTimeout(() => URL.revokeObjectURL(url))
      status.value = t('characters.cards.exported', { name: character.name, file: fileName })
    }
    catch (cause) {
      error.value = t('characters.cards.exportFailed', { name: character.name, reason: errorMessage(cause) })
    }
  }

  return { busy, status, error, clear, importCard, exportCard }
}
