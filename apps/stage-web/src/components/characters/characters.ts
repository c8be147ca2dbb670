import { client } from '../../client.ts'

// What the characters screens share: the shapes the server answers with, a character's
// words in the reader's language, and a new character's slug.

export type CharacterSummary = Awaited<ReturnType<typeof client.characters.list.query>>['items'][number]
export type CharacterDetail = Awaited<ReturnType<typeof client.characters.get.query>>

/**
 * Of `available` languages, the one to show for `wanted`: exactly (case aside),
 * else one with the same primary subtag (`zh` for `zh-CN`), else the first. The
 * server picks a character's prompts the same way.
 */
export function pickLanguage(available: string[], wanted: string): string | undefined {
  const lower = available.map(language => language.toLowerCase())
  const exact = lower.indexOf(wanted.toLowerCase())
  if (exact >= 0)
    return available[exact]
  const primary = wanted.toLowerCase().split('-')[0]
  return available[lower.findIndex(language => language.split('-')[0] === primary)] ?? available[0]
}

/** A character's name and description in `locale`, or the nearest language it has. */
export function localized(character: Pick<CharacterSummary, 'i18n' | 'characterId'>, locale: string): { name: string, description: string } {
  const language = pickLanguage(character.i18n.map(entry => entry.language), locale)
  const entry = character.i18n.find(each => each.language === language)
  return { name: entry?.name ?? character.characterId, description: entry?.description ?? '' }
}

/** The human-readable slug of a new character: its name in lower-case ASCII, else a random one. */
export function slugFor(name: string): string {
  const slug = name.normalize('NFKD').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60)
  return slug || `character-${crypto.randomUUID().slice(0, 8)}`
}

/** Opens a new bot chat with `characterId` (it starts with the character's greeting); its id. */
export async function newChatWith(characterId: string): Promise<string> {
  const chat = await client.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: characterId }] })
  return chat.id
}
