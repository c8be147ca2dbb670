import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'

import { authPost, badRequestFields, createVerifiedUser, emailTo, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

let server: TestServer
let owner: TestUser
let other: TestUser

beforeAll(async () => {
  server = await startTestServer()
  ;[owner, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
})
afterAll(() => server.close())

const sdk = (user?: TestUser): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => user?.token })

/** A character of `user`'s own; memories may be of any live character. */
async function character(user: TestUser, slug = 'memo'): Promise<string> {
  const created = await sdk(user).characters.create.mutate({
    characterId: slug,
    version: '1',
    coverUrl: 'https://example.com/cover.png',
    avatarUrl: 'https://example.com/avatar.png',
    i18n: [{ language: 'en', name: 'Memo', description: 'Remembers things.' }],
  })
  return created.id
}

const memoryRows = (where: { characterId?: string, userId?: string }) => server.database.db.selectFrom('memory').select(['id', 'content'])
  .$if(where.characterId !== undefined, query => query.where('character_id', '=', where.characterId!))
  .$if(where.userId !== undefined, query => query.where('user_id', '=', where.userId!))
  .execute()

describe('memory: the caller\'s own', () => {
  it('adds, lists newest first with a cursor, updates and deletes', async () => {
    const characterId = await character(owner)
    const client = sdk(owner)
    const first = await client.memory.add.mutate({ characterId, content: '  Likes green tea  ' })
    expect(first).toMatchObject({ characterId, content: 'Likes green tea', importance: 3, source: 'user', lastUsedAt: null })
    const second = await client.memory.add.mutate({ characterId, content: 'Works as a nurse', importance: 5 })

    const page = await client.memory.list.query({ characterId, limit: 1 })
    expect(page.items.map(item => item.id)).toEqual([second.id])
    const rest = await client.memory.list.query({ characterId, limit: 1, cursor: page.nextCursor! })
    expect(rest).toEqual({ items: [expect.objectContaining({ id: first.id })], nextCursor: null, total: 2, limit: 2000 })

    const updated = await client.memory.update.mutate({ id: first.id, content: 'Likes oolong tea', importance: 4 })
    expect(updated).toMatchObject({ id: first.id, content: 'Likes oolong tea', importance: 4 })
    expect((await client.memory.search.query({ characterId, query: 'oolong' })).map(item => item.id)).toEqual([first.id])

    expect(await client.memory.delete.mutate({ id: second.id })).toEqual({ id: second.id })
    expect((await client.memory.list.query({ characterId })).items.map(item => item.id)).toEqual([first.id])
  })

  it('is 404 to anyone else, for every procedure, and lists only the caller\'s', async () => {
    const characterId = await character(owner)
    const mine = await sdk(owner).memory.add.mutate({ characterId, content: 'A secret of the owner' })
    const intruder = sdk(other)
    for (const call of [() => intruder.memory.update.mutate({ id: mine.id, content: 'changed' }), () => intruder.memory.delete.mutate({ id: mine.id })])
      expect((await failure(call())).data).toMatchObject({ httpStatus: 404, apiCode: 'MEMORY_NOT_FOUND' })
    expect((await intruder.memory.list.query({ characterId })).items).toEqual([])
    expect(await intruder.memory.search.query({ characterId, query: 'secret owner' })).toEqual([])
    expect(await memoryRows({ characterId })).toEqual([{ id: mine.id, content: 'A secret of the owner' }])

    const missing = 'no-such-character'
    // Calls made one at a time: a batch would carry rejections nobody awaits yet.
    for (const call of [
      () => intruder.memory.list.query({ characterId: missing }),
      () => intruder.memory.add.mutate({ characterId: missing, content: 'x' }),
      () => intruder.memory.search.query({ characterId: missing, query: 'x' }),
      () => intruder.memory.settings.query({ characterId: missing }),
      () => intruder.memory.setSettings.mutate({ characterId: missing, enabled: false }),
    ])
      expect((await failure(call())).data).toMatchObject({ httpStatus: 404, apiCode: 'CHARACTER_NOT_FOUND' })
    for (const call of [() => sdk().memory.list.query({ characterId }), () => sdk().memory.add.mutate({ characterId, content: 'x' })])
      expect((await failure(call())).data).toMatchObject({ httpStatus: 401 })
  })

  it('refuses bad input with 400 naming the field', async () => {
    const characterId = await character(owner)
    const client = sdk(owner)
    expect(await badRequestFields(client.memory.add.mutate({ characterId, content: '   ' }))).toEqual(['content'])
    expect(await badRequestFields(client.memory.add.mutate({ characterId, content: 'x'.repeat(2001) }))).toEqual(['content'])
    expect(await badRequestFields(client.memory.add.mutate({ characterId, content: 'ok', importance: 0 }))).toEqual(['importance'])
    expect(await badRequestFields(client.memory.add.mutate({ characterId, content: 'ok', importance: 6 }))).toEqual(['importance'])
    expect(await badRequestFields(client.memory.update.mutate({ id: 'x', content: '' }))).toEqual(['content'])
    expect((await failure(client.memory.list.query({ characterId, cursor: 'not-a-cursor' }))).data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CURSOR' })
    expect((await client.memory.add.mutate({ characterId, content: 'x'.repeat(2000) })).content).toHaveLength(2000)
  })
})

describe('memory: search', () => {
  it('finds Chinese by its character bigrams', async () => {
    const characterId = await character(owner)
    const client = sdk(owner)
    await client.memory.add.mutate({ characterId, content: '我喜欢吃火锅' })
    const shanghai = await client.memory.add.mutate({ characterId, content: '我住在上海' })
    const found = await client.memory.search.query({ characterId, query: '上海的天气' })
    expect(found.map(item => item.id)).toEqual([shanghai.id])
    expect(found[0]!.score).toBeGreaterThan(0)
  })

  it('finds English by its words, stopwords aside', async () => {
    const characterId = await character(owner)
    const client = sdk(owner)
    await client.memory.add.mutate({ characterId, content: 'My sister is a teacher' })
    const cat = await client.memory.add.mutate({ characterId, content: 'My cat is called Miso' })
    await client.memory.add.mutate({ characterId, content: 'What I like is jazz' })
    const found = await client.memory.search.query({ characterId, query: 'what is my cat\'s name' })
    expect(found.map(item => item.id)).toEqual([cat.id])
    expect(await client.memory.search.query({ characterId, query: 'is it?' })).toEqual([])
    // tsquery syntax and odd letters in a query are words or nothing, never a 500.
    expect(await client.memory.search.query({ characterId, query: `ª½ x² O'Brien \\ ' :* & | ! (cat` })).toEqual([expect.objectContaining({ id: cat.id })])
  })

  it('breaks equal text ranks by importance, then by how recently a memory was written', async () => {
    const characterId = await character(owner)
    const client = sdk(owner)
    const low = await client.memory.add.mutate({ characterId, content: 'Plays the piano', importance: 2 })
    const high = await client.memory.add.mutate({ characterId, content: 'Plays the piano', importance: 4 })
    expect((await client.memory.search.query({ characterId, query: 'piano' })).map(item => item.id)).toEqual([high.id, low.id])

    // Same importance and text: the one written 60 days ago comes after the fresh one, although it was created later.
    const fresh = await client.memory.add.mutate({ characterId, content: 'Plays the violin' })
    const stale = await client.memory.add.mutate({ characterId, content: 'Plays the violin' })
    await server.database.db.updateTable('memory').set({ updated_at: sql`now() - interval '60 days'` }).where('id', '=', stale.id).execute()
    expect((await client.memory.search.query({ characterId, query: 'violin' })).map(item => item.id)).toEqual([fresh.id, stale.id])
  })
})

describe('memory: settings', () => {
  it('is on by default, can be turned off and reads back', async () => {
    const characterId = await character(owner)
    const client = sdk(owner)
    expect(await client.memory.settings.query({ characterId })).toEqual({ characterId, enabled: true })
    expect(await client.memory.setSettings.mutate({ characterId, enabled: false })).toEqual({ characterId, enabled: false })
    expect(await client.memory.settings.query({ characterId })).toEqual({ characterId, enabled: false })
    expect(await sdk(other).memory.settings.query({ characterId })).toEqual({ characterId, enabled: true })
  })
})

describe('memory: limits and lifetime', () => {
  it('refuses the 2 001st memory of a character with 409 MEMORY_LIMIT_REACHED', async () => {
    const characterId = await character(owner)
    await sql`INSERT INTO memory (user_id, character_id, content, source, search_vector)
      SELECT ${owner.id}, ${characterId}, 'filler ' || n, 'user', to_tsvector('simple', 'filler ' || n) FROM generate_series(1, 2000) AS n`.execute(server.database.db)
    const refused = await failure(sdk(owner).memory.add.mutate({ characterId, content: 'one too many' }))
    expect(refused.data).toMatchObject({ httpStatus: 409, apiCode: 'MEMORY_LIMIT_REACHED', details: { limit: 2000 } })
    // Another user's count is their own.
    expect(await sdk(other).memory.add.mutate({ characterId, content: 'mine' })).toMatchObject({ content: 'mine' })
  })

  it('deleting the character deletes every user\'s memories and settings of it', async () => {
    const characterId = await character(owner)
    await sdk(owner).memory.add.mutate({ characterId, content: 'The owner\'s memory' })
    await sdk(other).memory.add.mutate({ characterId, content: 'Another user\'s memory' })
    await sdk(other).memory.setSettings.mutate({ characterId, enabled: false })
    await sdk(owner).characters.delete.mutate({ id: characterId })
    expect(await memoryRows({ characterId })).toEqual([])
    expect(await server.database.db.selectFrom('memory_settings').select('user_id').where('character_id', '=', characterId).execute()).toEqual([])
    expect((await failure(sdk(other).memory.list.query({ characterId }))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHARACTER_NOT_FOUND' })
  })

  it('is in the account export, and goes with the account', async () => {
    const user = await createVerifiedUser(server)
    const characterId = await character(owner)
    const memory = await sdk(user).memory.add.mutate({ characterId, content: 'A memory the export must keep' })
    await sdk(user).memory.setSettings.mutate({ characterId, enabled: false })

    const response = await fetch(`${server.baseUrl}/api/v1/account/export`, { headers: { authorization: `Bearer ${user.token}` } })
    expect(response.status).toBe(200)
    const { tables } = await response.json() as { tables: Record<string, Array<Record<string, unknown>>> }
    expect(tables.memory).toEqual([expect.objectContaining({ id: memory.id, user_id: user.id, character_id: characterId, content: 'A memory the export must keep', importance: 3, source: 'user' })])
    expect(tables.memory![0]).not.toHaveProperty('search_vector')
    expect(tables.memory_settings).toEqual([expect.objectContaining({ user_id: user.id, character_id: characterId, enabled: false })])

    const requested = await authPost(server, '/delete-user', { callbackURL: '/goodbye' }, user.token)
    expect(requested.status).toBe(200)
    const mail = await emailTo(server, user.email, /deletion/i)
    const confirmed = await fetch(server.resend.linkIn(mail), { redirect: 'manual', headers: { authorization: `Bearer ${user.token}` } })
    expect(confirmed.status).toBeLessThan(400)
    expect(await memoryRows({ userId: user.id })).toEqual([])
    expect(await server.database.db.selectFrom('memory_settings').select('character_id').where('user_id', '=', user.id).execute()).toEqual([])
  })
})
