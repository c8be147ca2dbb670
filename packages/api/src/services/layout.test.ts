import { readdirSync } from 'node:fs'

import { describe, expect, it } from 'vitest'

interface Entry { name: string, isDirectory: boolean }

/**
 * Entries of `services/` that belong inside a domain folder: `x.ts` beside an `x/` folder,
 * or a name that starts with a folder's domain (`chat-fanout.ts` beside `chats/`).
 */
function misplaced(entries: Entry[]): string[] {
  const domains = entries.filter(entry => entry.isDirectory).map(entry => entry.name)
  return entries.filter((entry) => {
    const stem = entry.name.replace(/(\.test)?\.ts$/, '')
    return domains.some((domain) => {
      if (entry.isDirectory && entry.name === domain)
        return false
      // `chats/` claims `chats-…` and `chat-…`.
      const prefixes = [domain, domain.replace(/s$/, '')]
      return stem === domain || prefixes.some(prefix => stem.startsWith(`${prefix}-`))
    })
  }).map(entry => entry.name)
}

describe('services/ layout', () => {
  it('keeps every file of a multi-file domain inside its folder', () => {
    const entries = readdirSync(import.meta.dirname, { withFileTypes: true })
      .map(entry => ({ name: entry.name, isDirectory: entry.isDirectory() }))
    expect(entries.some(entry => entry.isDirectory)).toBe(true)
    expect(misplaced(entries)).toEqual([])
  })

  it('refuses a file beside its same-named folder and a domain file outside its folder', () => {
    const entries: Entry[] = [
      { name: 'chats', isDirectory: true },
      { name: 'llm-gateway', isDirectory: true },
      { name: 'llm-gateway.ts', isDirectory: false },
      { name: 'chat-fanout.ts', isDirectory: false },
      { name: 'chat-fanout.test.ts', isDirectory: false },
      { name: 'chats-archive', isDirectory: true },
      { name: 'config.ts', isDirectory: false },
      { name: 'index.ts', isDirectory: false },
    ]
    expect(misplaced(entries)).toEqual(['llm-gateway.ts', 'chat-fanout.ts', 'chat-fanout.test.ts', 'chats-archive'])
  })
})
