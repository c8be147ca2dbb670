import { createI18n, type LocaleMessageValue, type VueMessageType } from 'vue-i18n'

type Messages = Record<string, LocaleMessageValue<VueMessageType>>

// One message file per domain and language (`locales/<language>/<domain>.ts`); the file
// name is the key prefix, so `t('chat.send')` reads `locales/en/chat.ts` → `send`.
const modules = import.meta.glob<{ default: Messages }>('./locales/*/*.ts', { eager: true })

export const LOCALES = ['en', 'zh-CN'] as const
export type Locale = typeof LOCALES[number]
const LOCALE_KEY = 'airi.locale'

function messagesOf(locale: Locale): Messages {
  const messages: Messages = {}
  for (const [path, module] of Object.entries(modules)) {
    const [, language, domain] = /^\.\/locales\/([^/]+)\/([^/]+)\.ts$/.exec(path) ?? []
    if (language === locale && domain)
      messages[domain] = module.default
  }
  return messages
}

/** The person's choice, else the browser's first language we speak, else English. */
function initialLocale(): Locale {
  const stored = localStorage.getItem(LOCALE_KEY)
  if (LOCALES.includes(stored as Locale))
    return stored as Locale
  const preferred = navigator.languages.find(language => /^(?:en|zh)\b/i.test(language))
  return preferred?.toLowerCase().startsWith('zh') ? 'zh-CN' : 'en'
}

export const i18n = createI18n({
  legacy: false,
  locale: initialLocale() as string,
  fallbackLocale: 'en',
  messages: Object.fromEntries(LOCALES.map(locale => [locale, messagesOf(locale)])),
})

export function setLocale(locale: Locale): void {
  i18n.global.locale.value = locale
  localStorage.setItem(LOCALE_KEY, locale)
  document.documentElement.lang = locale
}

document.documentElement.lang = i18n.global.locale.value
