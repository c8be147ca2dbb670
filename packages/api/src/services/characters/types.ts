import type { z } from 'zod'

import type { JsonObject, JsonValue } from '@airi/db'

import type { characterCreateInput, characterImportCardInput, characterListInput, characterUpdateInput } from './schema.ts'

// Shapes callers send (inferred from the router's schemas) and see.

export type CreateCharacterInput = z.infer<typeof characterCreateInput>

/** Every field but `id` is optional; a child list that is present replaces the old one. */
export type UpdateCharacterInput = z.infer<typeof characterUpdateInput>

export type ImportCardInput = z.infer<typeof characterImportCardInput>

/** What the router passes after defaults; other callers may leave them out. */
export type ListCharactersInput = z.input<typeof characterListInput>

export interface CharacterCoverEntry { id: string, foregroundUrl: string, backgroundUrl: string }
export interface CharacterCapabilityEntry { id: string, type: string, config: JsonValue }
export interface CharacterI18nEntry { id: string, language: string, name: string, tagline: string | null, description: string, tags: string[] }
export interface CharacterPromptEntry { id: string, language: string, type: string, content: string }
export interface AvatarModelEntry { id: string, name: string, type: string, description: string, config: JsonValue }

/** A character as lists show it: the row, its translations and covers, and the caller's flags. */
export interface CharacterSummary {
  id: string
  characterId: string
  version: string
  coverUrl: string
  avatarUrl: string
  creatorId: string
  ownerId: string
  priority: number
  defaultVoiceId: string | null
  defaultModelId: string | null
  likesCount: number
  bookmarksCount: number
  interactionsCount: number
  forksCount: number
  createdAt: Date
  updatedAt: Date
  /** Whether the caller likes / bookmarked it. */
  liked: boolean
  bookmarked: boolean
  i18n: CharacterI18nEntry[]
  covers: CharacterCoverEntry[]
}

/** A character with everything it is made of. */
export interface CharacterDetail extends CharacterSummary {
  capabilities: CharacterCapabilityEntry[]
  prompts: CharacterPromptEntry[]
  avatarModels: AvatarModelEntry[]
  /** What has no field of its own; `characterCard`: the fields of the card it was imported from that no field holds. */
  metadata: JsonObject
}

export interface CharacterPage {
  items: CharacterSummary[]
  /** Pass back to get the next (older) page; null on the last page. */
  nextCursor: string | null
}
