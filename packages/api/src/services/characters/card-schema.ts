import { z } from 'zod'

import { ApiError } from '../../errors.ts'
import { findInputProblem } from '../../input-guard.ts'
import { jsonValue } from '../../routers/schemas.ts'
import { cardTexts, coverPicture, isPng, readChunks } from './card-png.ts'

// Character Card V2 (`chara_card_v2`) and V3 (`chara_card_v3`) as we accept them:
// the fields we map are checked against our limits; every other field passes
// through as it is, with a light check of the shapes the specs fix.

/** The largest card: its JSON, or the PNG that carries it. */
const MAX_CARD_BYTES = 8 * 1024 * 1024
const tooLarge = 'card larger than 8 MiB'

const MAX_PROMPT = 50_000
/** Our prompts are at most 50 per character: the seven single fields leave 43 for greetings. */
const MAX_ALTERNATE_GREETINGS = 42

const must = (what: string) => ({ error: (issue: { input: unknown }) => issue.input === undefined ? 'required' : `must be ${what}` })
const string = () => z.string(must('a string'))
/** A field that becomes one prompt; absent, null and empty all mean none. */
const promptText = string().max(MAX_PROMPT, `at most ${MAX_PROMPT} characters`).nullish()

const lorebook = z.looseObject({
  entries: z.array(z.looseObject({ keys: z.array(string(), must('a list of strings')), content: string() }, must('an object')), must('a list')),
}, must('an object'))

const asset = z.looseObject({ type: string(), uri: string(), name: string(), ext: string() }, must('an object'))

const cardData = z.looseObject({
  name: string().trim().min(1, 'required').max(200, 'at most 200 characters'),
  description: promptText,
  personality: promptText,
  scenario: promptText,
  first_mes: promptText,
  mes_example: promptText,
  system_prompt: promptText,
  post_history_instructions: promptText,
  alternate_greetings: z.array(string().max(MAX_PROMPT, `at most ${MAX_PROMPT} characters`), must('a list of strings'))
    .max(MAX_ALTERNATE_GREETINGS, `at most ${MAX_ALTERNATE_GREETINGS} greetings`).nullish(),
  tags: z.array(string().trim().max(50, 'at most 50 characters'), must('a list of strings'))
    .transform(tags => tags.filter(tag => tag.length > 0))
    .pipe(z.array(z.string()).max(20, 'at most 20 tags'))
    .nullish(),
  character_version: string().trim().max(50, 'at most 50 characters').nullish(),
  extensions: z.record(z.string(), z.unknown(), must('an object')).optional(),
  character_book: lorebook.nullish(),
  assets: z.array(asset, must('a list')).nullish(),
}, must('an object'))

const cardShape = z.looseObject({
  spec: z.enum(['chara_card_v2', 'chara_card_v3'], { error: 'must be chara_card_v2 or chara_card_v3' }),
  spec_version: z.string().optional(),
  data: cardData,
}, must('a JSON object'))

/** A card that passed the checks; fields besides the mapped ones are kept as they came. */
export type Card = z.output<typeof cardShape>

/** What `importCard` takes: the card as a JSON object, its JSON text, or a PNG (base64, or a data: URL) carrying it. */
export const cardInput = z.union([z.string(), z.record(z.string(), z.unknown())], { error: 'must be a card object, its JSON text or a base64 PNG' })

const invalid = (message: string, fieldErrors?: Record<string, string[]>) =>
  new ApiError(400, 'INVALID_CARD', message, fieldErrors ? { fieldErrors } : undefined)

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text)
  }
  catch {
    throw invalid(`${what} is not valid JSON`)
  }
}

/** The card inside a PNG: its `ccv3` chunk, else its `chara` chunk, each base64 JSON. */
function cardInPng(bytes: Uint8Array): { card: unknown, picture?: Uint8Array } {
  const chunks = readChunks(bytes)
  if (typeof chunks === 'string')
    throw invalid(chunks)
  const texts = cardTexts(chunks)
  const keyword = texts.ccv3 !== undefined ? 'ccv3' : texts.chara !== undefined ? 'chara' : undefined
  if (!keyword)
    throw invalid('PNG has no chara or ccv3 chunk')
  const text = texts[keyword]!.trim()
  if (!/^[A-Z0-9+/]*={0,2}$/i.test(text))
    throw invalid(`PNG ${keyword} chunk is not base64`)
  return { card: parseJson(Buffer.from(text, 'base64').toString('utf8'), `PNG ${keyword} chunk`), picture: coverPicture(chunks) }
}

function decodePng(text: string): Uint8Array {
  const base64 = text.replace(/^data:image\/png;base64,/i, '').replace(/\s+/g, '')
  if (!/^[A-Z0-9+/]*={0,2}$/i.test(base64) || base64.length % 4 === 1)
    throw invalid('card is neither JSON nor a base64 PNG (not valid base64)')
  if (Math.floor(base64.length * 3 / 4) - (base64.match(/=+$/)?.[0].length ?? 0) > MAX_CARD_BYTES)
    throw invalid(tooLarge)
  const bytes = Buffer.from(base64, 'base64')
  if (!isPng(bytes))
    throw invalid('card is neither JSON nor a base64 PNG (no PNG signature)')
  return bytes
}

/** The card as given: JSON as it is, a PNG unpacked (with its picture, when it may be a cover). */
function unpack(input: z.output<typeof cardInput>): { card: unknown, picture?: Uint8Array } {
  if (typeof input !== 'string') {
    if (Buffer.byteLength(JSON.stringify(input)) > MAX_CARD_BYTES)
      throw invalid(tooLarge)
    return { card: input }
  }
  const text = input.trim()
  if (text.startsWith('{')) {
    if (Buffer.byteLength(text) > MAX_CARD_BYTES)
      throw invalid(tooLarge)
    return { card: parseJson(text, 'card') }
  }
  return cardInPng(decodePng(text))
}

/** "data.name: required", and every problem by its path in the card. */
function refusal(issues: Array<{ path: PropertyKey[], message: string }>): ApiError {
  const fieldErrors: Record<string, string[]> = {}
  for (const issue of issues)
    (fieldErrors[issue.path.map(String).join('.') || 'card'] ??= []).push(issue.message)
  const [first] = Object.entries(fieldErrors)
  return invalid(`${first![0]}: ${first![1][0]}`, fieldErrors)
}

/**
 * The card `input` holds, checked, and the PNG's picture when it came in one small
 * enough to be a cover; a 400 `INVALID_CARD` naming what is wrong otherwise.
 */
export function readCard(input: z.output<typeof cardInput>): { card: Card, picture?: Uint8Array } {
  const { card, picture } = unpack(input)
  // A card from a PNG or JSON text did not pass the transport's guard: the same limits apply.
  const problem = findInputProblem(card)
  if (problem)
    throw refusal(problem.issues)
  const safe = jsonValue.safeParse(card)
  if (!safe.success)
    throw refusal(safe.error.issues)
  const parsed = cardShape.safeParse(card)
  if (!parsed.success)
    throw refusal(parsed.error.issues)
  return { card: parsed.data, picture }
}
