import { describe, expect, it } from 'vitest'

import type { CharacterDetail } from './characters.ts'
import { buildSave, fieldOfPath, type CharacterForm } from './form.ts'

const form: CharacterForm = { name: ' Mirelle ', avatar: '', cover: '', description: 'Keeper of the lighthouse.', system: 'You are Mirelle.', personality: '', greeting: 'Come in!', model: '', voice: 'v1' }

/** A card-imported character with a Chinese translation and prompts the form does not show. */
const character = {
  i18n: [
    { id: 'a', language: 'zh-CN', name: '米蕾', tagline: null, description: '灯塔看守人。', tags: [] },
    { id: 'b', language: 'en', name: 'Mirelle', tagline: 'Lighthouse keeper', description: '', tags: ['sea'] },
  ],
  prompts: [
    { id: '1', language: 'en', type: 'scenario', content: 'A stormy night.' },
    { id: '2', language: 'en', type: 'greetings', content: 'Old greeting.' },
    { id: '3', language: 'en', type: 'greetings', content: 'Second greeting.' },
    { id: '4', language: 'en', type: 'personality', content: 'Gruff.' },
    { id: '5', language: 'zh-CN', type: 'system', content: '你是米蕾。' },
  ],
} as unknown as CharacterDetail

describe('the character form', () => {
  it('replaces the edited language\'s translation and first prompts, and sends back everything else', () => {
    const { fields, paths, coverUrl } = buildSave(form, { avatar: 'data:image/webp;base64,AAAA', language: 'en', character })
    expect(coverUrl).toBe('data:image/webp;base64,AAAA')
    expect(fields).toEqual({
      defaultModelId: null,
      defaultVoiceId: 'v1',
      i18n: [
        { language: 'zh-CN', name: '米蕾', tagline: null, description: '灯塔看守人。', tags: [] },
        { language: 'en', name: 'Mirelle', tagline: 'Lighthouse keeper', description: 'Keeper of the lighthouse.', tags: ['sea'] },
      ],
      prompts: [
        { language: 'en', type: 'scenario', content: 'A stormy night.' },
        { language: 'en', type: 'greetings', content: 'Come in!' },
        { language: 'en', type: 'greetings', content: 'Second greeting.' },
        // Personality emptied: that prompt goes.
        { language: 'zh-CN', type: 'system', content: '你是米蕾。' },
        { language: 'en', type: 'system', content: 'You are Mirelle.' },
      ],
    })
    expect(paths).toEqual({ 'i18n.1.name': 'name', 'i18n.1.description': 'description', 'prompts.1.content': 'greeting', 'prompts.4.content': 'system' })
    expect(fieldOfPath('coverUrl', paths)).toBe('cover')
    expect(fieldOfPath('prompts.0.content', paths)).toBeUndefined()
  })

  it('makes a new character of the form alone', () => {
    const { fields } = buildSave({ ...form, cover: 'https://example.com/c.png', model: 'deluxe' }, { avatar: 'https://example.com/a.png', language: 'zh-CN', character: null })
    expect(fields.i18n).toEqual([{ language: 'zh-CN', name: 'Mirelle', tagline: null, description: 'Keeper of the lighthouse.', tags: [] }])
    expect(fields.prompts.map(prompt => prompt.type)).toEqual(['system', 'greetings'])
    expect(fields.defaultModelId).toBe('deluxe')
  })
})
