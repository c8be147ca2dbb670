import type { JsonObject, JsonValue } from '@airi/db'

import type { Card } from './card-schema.ts'
import { pickLanguage } from './read.ts'
import type { CharacterDetail, CreateCharacterInput } from './types.ts'

// A Character Card's fields and our character's parts, both ways. The card's prose
// becomes prompts in one language (a card has none: 'en' unless the caller says),
// its name and tags the translation in that language, `character_version` the
// version; every other field is kept in `metadata.characterCard` and written back
// on export. docs/api.md ("Character cards") has the table.

/** Card fields that become one prompt each, in this order, and the prompt type each becomes. */
const PROMPT_FIELDS = [
  ['system_prompt', 'system'],
  ['description', 'description'],
  ['personality', 'personality'],
  ['scenario', 'scenario'],
  ['mes_example', 'example_dialogue'],
  ['post_history_instructions', 'post_history_instructions'],
] as const

/** Greetings: `first_mes`, then `alternate_greetings`, become prompts of this type in order. */
const GREETINGS = 'greetings'

/** Fields of `data` that map onto the character; the rest is metadata. */
const MAPPED_DATA = new Set(['name', 'tags', 'character_version', 'first_mes', 'alternate_greetings', ...PROMPT_FIELDS.map(([field]) => field)])

/** The copies of mapped fields that V2 cards repeat at the top level, for V1 readers. */
const V1_COPIES = ['name', 'description', 'personality', 'scenario', 'first_mes', 'mes_example', 'tags'] as const

/** Top-level fields that are ours to write: the spec's, and the V1 copies. */
const MAPPED_ROOT = new Set(['spec', 'spec_version', 'data', ...V1_COPIES])

/** V3 fields every card has; at these values they say nothing, so they are not stored and export writes them back. */
const DATA_DEFAULTS: Record<string, JsonValue> = { creator: '', creator_notes: '', extensions: {}, group_only_greetings: [] }

/** Our translation's description bound (characters' schema). */
const MAX_BLURB = 10_000

/** A version for cards that give none (ours is required). */
const DEFAULT_VERSION = '1.0'

function isDefault(key: string, value: unknown): boolean {
  return key in DATA_DEFAULTS && JSON.stringify(value) === JSON.stringify(DATA_DEFAULTS[key])
}

function leftovers(source: Record<string, unknown>, mapped: Set<string>, dropDefaults: boolean): JsonObject {
  return Object.fromEntries(Object.entries(source)
    .filter(([key, value]) => !mapped.has(key) && value !== undefined && !(dropDefaults && isDefault(key, value)))) as JsonObject
}

/** What the character keeps of a card beyond what it maps: `{}` when nothing. */
function cardMetadata(card: Card): JsonObject {
  const data = leftovers(card.data, MAPPED_DATA, true)
  const root = leftovers(card, MAPPED_ROOT, false)
  const kept: JsonObject = {
    ...(Object.keys(data).length > 0 ? { data } : {}),
    ...(Object.keys(root).length > 0 ? { root } : {}),
  }
  return Object.keys(kept).length > 0 ? { characterCard: kept } : {}
}

/** A slug from the card's name (ours must be lower-case letters, digits, - and _). */
function slugOf(name: string): string {
  const slug = name.normalize('NFKD').toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 100).replace(/^-+|-+$/g, '')
  return slug || 'character'
}

/** The line a gallery shows: the card's notes for people, else its description (the card keeps both as they are). */
function blurbOf(data: Card['data']): string {
  const notes = typeof data.creator_notes === 'string' ? data.creator_notes.trim() : ''
  return (notes || data.description?.trim() || '').slice(0, MAX_BLURB)
}

export interface ImportedCharacter {
  input: Omit<CreateCharacterInput, 'coverUrl' | 'avatarUrl'>
  metadata: JsonObject
}

/** The character a card describes, in `language`. */
export function characterFromCard(card: Card, language: string): ImportedCharacter {
  const { data } = card
  const prompts = PROMPT_FIELDS.flatMap(([field, type]) => data[field] ? [{ language, type, content: data[field] }] : [])
  const greetings = [data.first_mes, ...(data.alternate_greetings ?? [])].filter((greeting): greeting is string => !!greeting)
  return {
    input: {
      characterId: slugOf(data.name),
      version: data.character_version || DEFAULT_VERSION,
      covers: [],
      capabilities: [],
      avatarModels: [],
      i18n: [{ language, name: data.name, description: blurbOf(data), tags: data.tags ?? [] }],
      prompts: [...prompts, ...greetings.map(content => ({ language, type: GREETINGS, content }))],
    },
    metadata: cardMetadata(card),
  }
}

function asObject(value: JsonValue | undefined): JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value : {}
}

/**
 * The character as a V3 card: its first translation's name and tags, its prompts in
 * that language (several of one type joined by a blank line), and the card fields it
 * keeps in metadata. Prompt types no card field holds are left out.
 */
export function cardFromCharacter(character: CharacterDetail): JsonObject {
  const translation = character.i18n[0]
  const language = pickLanguage([...new Set(character.prompts.map(prompt => prompt.language))], translation ? [translation.language] : [])
  const inLanguage = character.prompts.filter(prompt => prompt.language === language)
  const joined = (type: string) => inLanguage.filter(prompt => prompt.type === type).map(prompt => prompt.content).join('\n\n')
  const greetings = inLanguage.filter(prompt => prompt.type === GREETINGS).map(prompt => prompt.content)
  const kept = asObject(asObject(character.metadata).characterCard)
  return {
    ...asObject(kept.root),
    spec: 'chara_card_v3',
    spec_version: '3.0',
    data: {
      ...DATA_DEFAULTS,
      ...asObject(kept.data),
      name: translation?.name ?? character.characterId,
      ...Object.fromEntries(PROMPT_FIELDS.map(([field, type]) => [field, joined(type)])),
      first_mes: greetings[0] ?? '',
      alternate_greetings: greetings.slice(1),
      tags: translation?.tags ?? [],
      character_version: character.version,
    },
  }
}

/** The same card for V2 readers (a PNG's `chara` chunk): V2's spec, and the V1 fields older tools read at the top. */
export function v2Rendering(card: JsonObject): JsonObject {
  const data = asObject(card.data)
  const v1 = Object.fromEntries(V1_COPIES.map(field => [field, data[field] ?? '']))
  return { ...card, ...v1, spec: 'chara_card_v2', spec_version: '2.0', data }
}

/** A file name for a character's card: its slug, which is safe in a header. */
export function cardFileName(character: CharacterDetail, extension: 'json' | 'png'): string {
  return `${character.characterId}.card.${extension}`
}
