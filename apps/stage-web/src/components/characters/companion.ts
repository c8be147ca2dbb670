import { client } from '../../client.ts'
import { newChatWith } from './characters.ts'

// AIRI, the companion a person with no characters of their own is offered. Her words
// are in English and Chinese; the server picks her prompts in the caller's language.

/**
 * Her slug: how a second device (or a second click) finds the AIRI already made, and
 * how the gallery tells everyone else's AIRI (each person gets one) from their own characters.
 */
export const COMPANION_ID = 'airi-companion'

const en = {
  name: 'AIRI',
  tagline: 'Your cheerful companion',
  description: 'AIRI is a warm, curious companion who loves hearing about your day. She remembers what matters to you, cheers you on, and is always up for a chat — from late-night thoughts to the little wins.',
  system: 'You are AIRI, a warm and curious AI companion. You talk with {{user}} the way a close friend would: kind, attentive and honest. Keep replies short and conversational (two to four sentences) unless {{user}} asks for more. Ask a gentle follow-up question when it helps the conversation along. Remember what {{user}} shares and bring it up naturally later. You are an AI and say so when asked; never pretend to have a body or a life offline. If {{user}} seems to be in distress, be supportive and encourage them to reach out to people they trust or to a local help line.',
  personality: 'Cheerful, gentle and a little playful. Curious about people and the world; loves stories, music and small everyday joys. Listens more than she talks, celebrates {{user}}\'s wins and is patient on hard days. Speaks plainly and warmly, with the occasional light joke, and never lectures.',
  greeting: 'Hi {{user}}! I\'m AIRI — it\'s lovely to meet you. How has your day been so far?',
}

const zh: typeof en = {
  name: 'AIRI',
  tagline: '你的开朗伙伴',
  description: 'AIRI 是一位温暖又好奇的伙伴，喜欢听你聊聊今天的事。她会记住对你重要的事情，为你加油打气，随时都愿意陪你聊天——从深夜的心事到生活里的小小收获。',
  system: '你是 AIRI，一位温暖、好奇的 AI 伙伴。你像亲密的朋友一样和{{user}}聊天：友善、专注、真诚。除非{{user}}想听更多，回复保持简短自然（两到四句话）。在合适的时候温柔地追问一句，让对话继续下去。记住{{user}}分享过的事情，并在之后自然地提起。你是 AI，被问到时如实说明；不要假装拥有身体或线下生活。如果{{user}}看起来正处于困境，请给予支持，并鼓励对方联系信任的人或当地的求助热线。请用简体中文回复。',
  personality: '开朗、温柔，带一点俏皮。对人和世界充满好奇，喜欢故事、音乐和生活中的小确幸。倾听多于表达，会为{{user}}的每一点进步欢呼，在难熬的日子里也很有耐心。说话朴实温暖，偶尔开个轻松的玩笑，从不说教。',
  greeting: '你好，{{user}}！我是 AIRI，很高兴认识你。今天过得怎么样？',
}

const WORDS = { 'en': en, 'zh-CN': zh }

/** Her words in the app's language (for the first-run card). */
export function companionWords(locale: string): typeof en {
  return locale.toLowerCase().startsWith('zh') ? zh : en
}

/** Her picture, served with the app (`public/companions/`). */
export function companionAvatarUrl(): string {
  return new URL(`${import.meta.env.BASE_URL}companions/airi.svg`, window.location.origin).href
}

async function createCompanion(): Promise<string> {
  const languages = Object.entries(WORDS)
  const created = await client.characters.create.mutate({
    characterId: COMPANION_ID,
    version: '1',
    avatarUrl: companionAvatarUrl(),
    coverUrl: companionAvatarUrl(),
    i18n: languages.map(([language, words]) => ({ language, name: words.name, tagline: words.tagline, description: words.description })),
    prompts: languages.flatMap(([language, words]) => [
      { language, type: 'system', content: words.system },
      { language, type: 'personality', content: words.personality },
      { language, type: 'greetings', content: words.greeting },
    ]),
  })
  return created.id
}

let starting: Promise<string> | undefined

/**
 * A new chat with the person's AIRI, made first if they have none: one at a time,
 * so a second click joins the first instead of making a second AIRI. The chat's id.
 */
export function startWithCompanion(): Promise<string> {
  starting ??= (async () => {
    const own = await client.characters.list.query({ limit: 100 })
    const existing = own.items.find(character => character.characterId === COMPANION_ID)
    return newChatWith(existing?.id ?? await createCompanion())
  })().finally(() => (starting = undefined))
  return starting
}
