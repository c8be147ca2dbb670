import type { CharacterDetail } from './characters.ts'

// The character form and what it saves: the edited language's translation and prompts
// replace theirs, everything else the character has (other languages, other prompt
// types, further greetings) goes back as it was, since a list given replaces the old one.

export interface CharacterForm {
  name: string
  avatar: string
  cover: string
  description: string
  system: string
  personality: string
  greeting: string
  model: string
  voice: string
}
export type FormField = keyof CharacterForm

/** The prompt types the form edits, by the field that holds each. */
const PROMPT_FIELDS = { system: 'system', personality: 'personality', greetings: 'greeting' } as const
type PromptType = keyof typeof PROMPT_FIELDS

/** Input fields the server may name, by the form field they come from (the slug is made from the name). */
const TOP_LEVEL: Record<string, FormField> = { avatarUrl: 'avatar', coverUrl: 'cover', defaultModelId: 'model', defaultVoiceId: 'voice', characterId: 'name' }

export function fieldOfPath(path: string, paths: Record<string, FormField>): FormField | undefined {
  return paths[path] ?? TOP_LEVEL[path]
}

interface SaveContext {
  /** The avatar to save (the form's, or one made for a character without). */
  avatar: string
  language: string
  character: CharacterDetail | null
}

/** The character's fields as the form left them, and which input path each form field became. */
export function buildSave(form: CharacterForm, { avatar, language, character }: SaveContext) {
  const paths: Record<string, FormField> = {}
  const i18n = (character?.i18n ?? []).filter(entry => entry.language !== language)
    .map(({ language, name, tagline, description, tags }) => ({ language, name, tagline, description, tags }))
  const edited = character?.i18n.find(entry => entry.language === language)
  paths[`i18n.${i18n.length}.name`] = 'name'
  paths[`i18n.${i18n.length}.description`] = 'description'
  i18n.push({ language, name: form.name.trim(), tagline: edited?.tagline ?? null, description: form.description, tags: edited?.tags ?? [] })

  const prompts: Array<{ language: string, type: string, content: string }> = []
  const replaced = new Set<PromptType>()
  const put = (type: PromptType) => {
    replaced.add(type)
    const field = PROMPT_FIELDS[type]
    if (!form[field].trim())
      return
    paths[`prompts.${prompts.length}.content`] = field
    prompts.push({ language, type, content: form[field] })
  }
  // The first prompt of each edited type in this language is the form's; it keeps its place.
  for (const prompt of character?.prompts ?? []) {
    const type = prompt.type as PromptType
    if (prompt.language === language && type in PROMPT_FIELDS && !replaced.has(type))
      put(type)
    else prompts.push({ language: prompt.language, type: prompt.type, content: prompt.content })
  }
  for (const type of Object.keys(PROMPT_FIELDS) as PromptType[]) {
    if (!replaced.has(type))
      put(type)
  }

  return {
    avatarUrl: avatar,
    coverUrl: form.cover || avatar,
    fields: { defaultModelId: form.model || null, defaultVoiceId: form.voice || null, i18n, prompts },
    paths,
  }
}
