import { z } from 'zod'

import { id, isSafeText, jsonObject, text, unsafeTextMessage } from '../../routers/schemas.ts'
import { cardInput } from './card-schema.ts'

// The inputs of `characters.*`: the router validates with these, and the service's input types are inferred from them.

// The URL parser percent-encodes what the stored original string would still carry.
const url = z.url({ protocol: /^https?$/, message: 'Must be an http(s) URL' }).max(2048).refine(isSafeText, unsafeTextMessage)
const language = text().trim().regex(/^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$/i, 'Must be a language tag such as en or zh-Hans').max(35)

const coverInput = z.object({ foregroundUrl: url, backgroundUrl: url })
const capabilityInput = z.object({ type: text().trim().min(1).max(100), config: jsonObject })
const i18nInput = z.object({
  language,
  name: text().trim().min(1).max(200),
  tagline: text().trim().max(500).nullish(),
  description: text().max(10_000),
  tags: z.array(text().trim().min(1).max(50)).max(20).optional(),
})
const promptInput = z.object({ language, type: text().trim().min(1).max(50), content: text().min(1).max(50_000) })
const avatarModelInput = z.object({
  name: text().trim().min(1).max(200),
  type: text().trim().min(1).max(50),
  description: text().max(10_000),
  config: jsonObject,
})

/** At least one translation, and one per language: the field error names the repeated entry. */
const i18nList = z.array(i18nInput).min(1).max(50).superRefine((entries, ctx) => {
  const seen = new Set<string>()
  entries.forEach((entry, index) => {
    if (seen.has(entry.language))
      ctx.addIssue({ code: 'custom', path: [index, 'language'], message: `Language ${entry.language} appears more than once` })
    seen.add(entry.language)
  })
})

const characterFields = {
  /** Human-readable slug. */
  characterId: text().trim().min(1).max(100).regex(/^[a-z0-9][a-z0-9_-]*$/, 'Lower-case letters, digits, - and _ only'),
  version: text().trim().min(1).max(50),
  coverUrl: url,
  avatarUrl: url,
  defaultVoiceId: text().trim().min(1).max(200).nullish(),
  defaultModelId: text().trim().min(1).max(200).nullish(),
  priority: z.number().int().min(-10_000).max(10_000).optional(),
  covers: z.array(coverInput).max(20),
  capabilities: z.array(capabilityInput).max(50),
  i18n: i18nList,
  prompts: z.array(promptInput).max(50),
  avatarModels: z.array(avatarModelInput).max(20),
}

export const characterListInput = z.object({
  all: z.boolean().default(false),
  cursor: text().min(1).max(500).nullish(),
  limit: z.number().int().min(1).max(100).default(20),
})

export const characterCreateInput = z.object({
  ...characterFields,
  covers: characterFields.covers.default([]),
  capabilities: characterFields.capabilities.default([]),
  prompts: characterFields.prompts.default([]),
  avatarModels: characterFields.avatarModels.default([]),
})

export const characterUpdateInput = z.object({ id, ...characterFields }).partial().required({ id: true })

/** A Character Card to import; cards say no language, so the caller may (default 'en'). */
export const characterImportCardInput = z.object({ card: cardInput, language: language.optional() })
