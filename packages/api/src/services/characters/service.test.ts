import { randomUUID } from 'node:crypto'

import type { KyselyPlugin } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'

import { characterCreateInput, characterUpdateInput, createCharacterService } from './index.ts'

let database: TestDatabase
beforeAll(async () => {
  database = await createTestDatabase()
})
afterAll(() => database.drop())

/** The kinds of the statements issued through the returned db, in order. */
function recordingDb() {
  const statements: string[] = []
  const plugin: KyselyPlugin = {
    transformQuery({ node }) {
      statements.push(node.kind)
      return node
    },
    async transformResult({ result }) {
      return result
    },
  }
  return { db: database.db.withPlugin(plugin), statements }
}

async function createUser(): Promise<string> {
  const userId = `user-${randomUUID()}`
  await database.db.insertInto('user').values({ id: userId, name: 'U', email: `${userId}@example.com`, emailVerified: true, image: null, createdAt: new Date(), updatedAt: new Date() }).execute()
  return userId
}

const input = characterCreateInput.parse({
  characterId: 'ada',
  version: '1',
  coverUrl: 'https://example.com/cover.png',
  avatarUrl: 'https://example.com/avatar.png',
  covers: [{ foregroundUrl: 'https://example.com/f1.png', backgroundUrl: 'https://example.com/b1.png' }, { foregroundUrl: 'https://example.com/f2.png', backgroundUrl: 'https://example.com/b2.png' }],
  capabilities: [{ type: 'tts', config: { voice: 'a', nested: { list: [1, 2] } } }],
  i18n: [{ language: 'en', name: 'Ada', description: 'd', tags: ['x'] }, { language: 'fr', name: 'Ada FR', tagline: 't', description: 'd' }],
  prompts: [{ language: 'en', type: 'system', content: 'be kind' }],
  avatarModels: [{ name: 'm', type: 'vrm', description: 'd', config: { url: 'u' } }],
})

describe('characters service', () => {
  it('reads a character with all its parts in one query, and create answers what get reads without reading', async () => {
    const userId = await createUser()
    const { db, statements } = recordingDb()
    const characters = createCharacterService({ db })

    const created = await characters.create(userId, input)
    // The character row and its five lists, written once each; nothing read back.
    expect(statements).toEqual(Array.from({ length: 6 }, () => 'InsertQueryNode'))

    statements.length = 0
    const read = await characters.get(userId, created.id)
    expect(statements).toEqual(['SelectQueryNode'])
    expect(read).toEqual(created)
    expect(read.covers.map(cover => cover.foregroundUrl)).toEqual(['https://example.com/f1.png', 'https://example.com/f2.png'])
    expect(read.i18n.map(entry => [entry.language, entry.tagline, entry.tags])).toEqual([['en', null, ['x']], ['fr', 't', []]])
    expect(read.capabilities[0]!.config).toEqual({ voice: 'a', nested: { list: [1, 2] } })
  })

  it('shows the caller\'s like in get and list, and update answers the character as it left it', async () => {
    const owner = await createUser()
    const fan = await createUser()
    const characters = createCharacterService({ db: database.db })
    const created = await characters.create(owner, input)
    await characters.toggleLike(fan, created.id)

    expect(await characters.get(fan, created.id)).toMatchObject({ liked: true, bookmarked: false, likesCount: 1 })
    expect(await characters.get(owner, created.id)).toMatchObject({ liked: false, likesCount: 1 })
    const page = await characters.list(fan, { all: true, limit: 100 })
    expect(page.items.find(item => item.id === created.id)).toMatchObject({ liked: true, i18n: created.i18n, covers: created.covers })

    const updated = await characters.update(owner, characterUpdateInput.parse({ id: created.id, version: '2', prompts: [] }))
    expect(updated).toMatchObject({ version: '2', prompts: [], i18n: created.i18n, capabilities: created.capabilities, likesCount: 1 })
    expect(await characters.get(owner, created.id)).toEqual(updated)
  })

  it('tells which characters exist, leaving out deleted ones', async () => {
    const owner = await createUser()
    const characters = createCharacterService({ db: database.db })
    const kept = await characters.create(owner, input)
    const gone = await characters.create(owner, input)
    await characters.delete(owner, gone.id)
    expect(await characters.existing([kept.id, gone.id, randomUUID()])).toEqual(new Set([kept.id]))
  })
})
