import { z } from 'zod'

import { id, isSafeText, jsonObject, text, unsafeTextMessage } from '../../routers/schemas.ts'
import { MAX_COVER_BYTES } from './card-png.ts'
import { cardInput } from './card-schema.ts'

// The inputs of `characters.*`: the router validates with these, and the service's input types are inferred from them.

// The URL parser percent-encodes what the stored original string would still carry.
const url = z.url({ protocol: /^https?$/, message: 'Must be an http(s) URL' }).max(2048).refine(isSafeText, unsafeTextMessage)

/**
 * The most a picture sent inline may hold, decoded: what card import keeps as a cover.
 * Pictures live in the character row (no upload store yet) and every list carries them.
 */
export const MAX_PICTURE_BYTES = MAX_COVER_BYTES
const PICTURE_DATA_URL = /^data:image\/(png|jpeg|webp);base64,([A-Za-z\d+/]+={0,2})$/
const PICTURE_PREFIX = 'data:image/jpeg;base64,'.length
/** What each allowed type's bytes start with (WebP: `RIFF`, a size, `WEBP`); a mislabelled file is refused. */
const SIGNATURES: Record<string, (bytes: Buffer) => boolean> = {
  png: bytes => bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])),
  jpeg: bytes => bytes[0] === 0xFF && bytes[1] === 0xD8 && bytes[2] === 0xFF,
  webp: bytes => bytes.toString('latin1', 0, 4) === 'RIFF' && bytes.toString('latin1', 8, 12) === 'WEBP',
}

/** Why a `data:` URL is not a picture we keep, or undefined when it is one. */
function dataPictureProblem(value: string): string | undefined {
  // Measured before the pattern runs, so an oversized string costs one comparison.
  if (value.length > PICTURE_PREFIX + Math.ceil(MAX_PICTURE_BYTES / 3) * 4)
    return `Picture is too large: at most ${MAX_PICTURE_BYTES / 1024} KiB`
  const match = PICTURE_DATA_URL.exec(value)
  if (!match || match[2]!.length % 4 !== 0)
    return 'Must be a PNG, JPEG or WebP picture as data:image/…;base64,…'
  const [, type, base64] = match as unknown as [string, string, string]
  if (base64.length * 3 / 4 - (base64.endsWith('==') ? 2 : base64.endsWith('=') ? 1 : 0) > MAX_PICTURE_BYTES)
    return `Picture is too large: at most ${MAX_PICTURE_BYTES / 1024} KiB`
  if (!SIGNATURES[type]!(Buffer.from(base64.slice(0, 16), 'base64')))
    return `Is not a ${type.toUpperCase()} picture`
  return undefined
}

/** An avatar or cover: an http(s) URL, or a small PNG, JPEG or WebP picture inline as a base64 `data:` URL. */
const pictureUrl = z.string().superRefine((value, ctx) => {
  if (value.startsWith('data:')) {
    const problem = dataPictureProblem(value)
    if (problem)
      ctx.addIssue({ code: 'custom', message: problem })
    return
  }
  const parsed = url.safeParse(value)
  if (!parsed.success)
    ctx.addIssue({ code: 'custom', message: parsed.error.issues[0]!.message })
})
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
  coverUrl: pictureUrl,
  avatarUrl: pictureUrl,
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
