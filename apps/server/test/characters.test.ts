import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'

import { authPost, createVerifiedUser, emailTo, startTestServer, type TestServer, type TestUser, failure, badRequestFields } from './harness.ts'

let server: TestServer
let owner: TestUser
let other: TestUser

beforeAll(async () => {
  server = await startTestServer()
  ;[owner, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
})
afterAll(() => server.close())

const client = (token?: string): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => token })

type CreateInput = Parameters<AiriClient['characters']['create']['mutate']>[0]

function characterInput(slug = 'airi', overrides: Partial<CreateInput> = {}): CreateInput {
  return {
    characterId: slug,
    version: '1.0.0',
    coverUrl: 'https://cdn.example.com/airi/cover.png',
    avatarUrl: 'https://cdn.example.com/airi/avatar.png',
    defaultVoiceId: 'voice-1',
    covers: [
      { foregroundUrl: 'https://cdn.example.com/airi/fg-1.png', backgroundUrl: 'https://cdn.example.com/airi/bg-1.png' },
      { foregroundUrl: 'https://cdn.example.com/airi/fg-2.png', backgroundUrl: 'https://cdn.example.com/airi/bg-2.png' },
    ],
    capabilities: [{ type: 'speech', config: { transport: 'streaming', voices: ['a', 'b'], rate: 1.2, nested: { on: true } } }],
    i18n: [
      { language: 'en', name: 'Airi', tagline: 'Your companion', description: 'A friendly AI.', tags: ['friendly', 'vtuber'] },
      { language: 'zh-Hans', name: '爱莉', description: '友好的 AI。' },
    ],
    prompts: [
      { language: 'en', type: 'system', content: 'You are Airi.' },
      { language: 'en', type: 'greetings', content: 'Hi!' },
    ],
    avatarModels: [{ name: 'Default', type: 'vrm', description: 'The default model', config: { url: 'https://cdn.example.com/airi.vrm', scale: 1 } }],
    ...overrides,
  }
}

async function liveRows(table: 'character_covers' | 'character_i18n' | 'character_prompts' | 'character_capabilities' | 'avatar_models', characterId: string) {
  return server.database.db.selectFrom(table).select(['id', 'deleted_at']).where('character_id', '=', characterId).execute()
}

describe('characters: access', () => {
  it('every procedure needs a user', async () => {
    const anonymous = client()
    const calls: Promise<unknown>[] = [
      anonymous.characters.list.query({}),
      anonymous.characters.get.query({ id: 'x' }),
      anonymous.characters.create.mutate(characterInput()),
      anonymous.characters.update.mutate({ id: 'x', version: '2' }),
      anonymous.characters.delete.mutate({ id: 'x' }),
      anonymous.characters.toggleLike.mutate({ id: 'x' }),
      anonymous.characters.toggleBookmark.mutate({ id: 'x' }),
    ]
    for (const call of calls)
      expect((await failure(call)).data).toMatchObject({ httpStatus: 401, apiCode: 'UNAUTHORIZED' })
  })

  it('answers bad input with 400 naming the field, for every procedure', async () => {
    const sdk = client(owner.token)
    expect(await badRequestFields(sdk.characters.list.query({ limit: 1000 }))).toEqual(['limit'])
    expect(await badRequestFields(sdk.characters.get.query({ id: '' }))).toEqual(['id'])
    expect(await badRequestFields(sdk.characters.create.mutate(characterInput('Not A Slug')))).toEqual(['characterId'])
    expect(await badRequestFields(sdk.characters.create.mutate(characterInput('airi', { i18n: [] })))).toEqual(['i18n'])
    expect(await badRequestFields(sdk.characters.create.mutate(characterInput('airi', {
      i18n: [{ language: 'en', name: 'A', description: '' }, { language: 'en', name: 'B', description: '' }],
    })))).toEqual(['i18n.1.language'])
    expect(await badRequestFields(sdk.characters.create.mutate(characterInput('airi', {
      coverUrl: 'javascript:alert(1)',
      covers: Array.from({ length: 21 }, () => ({ foregroundUrl: 'https://a.example/f.png', backgroundUrl: 'https://a.example/b.png' })),
    })))).toEqual(['coverUrl', 'covers'])
    expect(await badRequestFields(sdk.characters.update.mutate({ id: 'x', avatarUrl: 'not a url', priority: 1.5 }))).toEqual(['avatarUrl', 'priority'])
    expect(await badRequestFields(sdk.characters.delete.mutate({ id: 'x'.repeat(101) }))).toEqual(['id'])
    expect(await badRequestFields(sdk.characters.toggleLike.mutate({ id: '' }))).toEqual(['id'])
    expect(await badRequestFields(sdk.characters.toggleBookmark.mutate({ id: '' }))).toEqual(['id'])

    const cursor = await failure(sdk.characters.list.query({ cursor: 'not-ours' }))
    expect(cursor.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CURSOR' })
  })

  it('answers 404 CHARACTER_NOT_FOUND for an unknown id, for every procedure that takes one', async () => {
    const sdk = client(owner.token)
    const calls: Promise<unknown>[] = [
      sdk.characters.get.query({ id: 'no-such-character' }),
      sdk.characters.update.mutate({ id: 'no-such-character', version: '2' }),
      sdk.characters.delete.mutate({ id: 'no-such-character' }),
      sdk.characters.toggleLike.mutate({ id: 'no-such-character' }),
      sdk.characters.toggleBookmark.mutate({ id: 'no-such-character' }),
    ]
    for (const call of calls)
      expect((await failure(call)).data).toMatchObject({ httpStatus: 404, apiCode: 'CHARACTER_NOT_FOUND' })
  })
})

describe('characters.create and characters.get', () => {
  it('stores the character with all its parts, in the order given, owned and created by the caller', async () => {
    const created = await client(owner.token).characters.create.mutate(characterInput('airi-create'))
    expect(created).toMatchObject({
      characterId: 'airi-create',
      version: '1.0.0',
      creatorId: owner.id,
      ownerId: owner.id,
      priority: 0,
      defaultVoiceId: 'voice-1',
      defaultModelId: null,
      likesCount: 0,
      bookmarksCount: 0,
      liked: false,
      bookmarked: false,
    })
    expect(created.createdAt).toBeInstanceOf(Date)

    // Anyone signed in may read it.
    const seen = await client(other.token).characters.get.query({ id: created.id })
    expect(seen).toEqual(created)
    expect(seen.covers.map(cover => cover.foregroundUrl)).toEqual(['https://cdn.example.com/airi/fg-1.png', 'https://cdn.example.com/airi/fg-2.png'])
    expect(seen.i18n.map(entry => [entry.language, entry.name, entry.tagline, entry.tags])).toEqual([
      ['en', 'Airi', 'Your companion', ['friendly', 'vtuber']],
      ['zh-Hans', '爱莉', null, []],
    ])
    expect(seen.capabilities).toEqual([{ id: expect.any(String), type: 'speech', config: { transport: 'streaming', voices: ['a', 'b'], rate: 1.2, nested: { on: true } } }])
    expect(seen.prompts.map(prompt => [prompt.type, prompt.content])).toEqual([['system', 'You are Airi.'], ['greetings', 'Hi!']])
    expect(seen.avatarModels).toEqual([{ id: expect.any(String), name: 'Default', type: 'vrm', description: 'The default model', config: { url: 'https://cdn.example.com/airi.vrm', scale: 1 } }])
  })

  it('accepts a character with only its translations, the other lists defaulting to empty', async () => {
    const { covers: _c, capabilities: _a, prompts: _p, avatarModels: _m, ...minimal } = characterInput('minimal')
    const created = await client(owner.token).characters.create.mutate(minimal)
    expect([created.covers, created.capabilities, created.prompts, created.avatarModels]).toEqual([[], [], [], []])
    expect(created.i18n).toHaveLength(2)
  })

  it('writes nothing when any part fails: one transaction', async () => {
    const user = await createVerifiedUser(server)
    await sql.raw(`
      CREATE FUNCTION refuse_broken_model() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.name = 'broken' THEN RAISE EXCEPTION 'avatar storage unavailable'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_broken_model BEFORE INSERT ON avatar_models FOR EACH ROW EXECUTE FUNCTION refuse_broken_model();
    `).execute(server.database.db)
    try {
      const error = await failure(client(user.token).characters.create.mutate(characterInput('atomic', {
        avatarModels: [{ name: 'broken', type: 'vrm', description: '', config: {} }],
      })))
      expect(error.data?.httpStatus).toBe(500)
    }
    finally {
      await sql.raw('DROP TRIGGER refuse_broken_model ON avatar_models; DROP FUNCTION refuse_broken_model();').execute(server.database.db)
    }
    const rows = await server.database.db.selectFrom('characters').select('id').where('owner_id', '=', user.id).execute()
    expect(rows).toEqual([])
    const orphans = await sql<{ n: string }>`SELECT count(*) AS n FROM character_i18n i LEFT JOIN characters c ON c.id = i.character_id WHERE c.id IS NULL`.execute(server.database.db)
    expect(Number(orphans.rows[0]!.n)).toBe(0)
  })
})

describe('characters.list', () => {
  it('lists only the caller\'s own characters by default, newest first, cursor-paged, with translations, covers and flags', async () => {
    const user = await createVerifiedUser(server)
    const sdk = client(user.token)
    const first = await sdk.characters.create.mutate(characterInput('first'))
    const second = await sdk.characters.create.mutate(characterInput('second'))
    const third = await sdk.characters.create.mutate(characterInput('third'))
    const foreign = await client(other.token).characters.create.mutate(characterInput('foreign'))
    await sdk.characters.toggleLike.mutate({ id: second.id })

    const page1 = await sdk.characters.list.query({ limit: 2 })
    expect(page1.items.map(item => item.id)).toEqual([third.id, second.id])
    expect(page1.nextCursor).toEqual(expect.any(String))
    expect(page1.items[1]).toMatchObject({ liked: true, likesCount: 1, bookmarked: false, bookmarksCount: 0 })
    expect(page1.items[0]!.i18n.map(entry => entry.language)).toEqual(['en', 'zh-Hans'])
    expect(page1.items[0]!.covers).toHaveLength(2)
    expect(page1.items[0]).not.toHaveProperty('prompts')

    const page2 = await sdk.characters.list.query({ limit: 2, cursor: page1.nextCursor })
    expect(page2.items.map(item => item.id)).toEqual([first.id])
    expect(page2.nextCursor).toBeNull()

    const own = await sdk.characters.list.query({})
    expect(own.items.map(item => item.id)).not.toContain(foreign.id)
    expect(own.items.every(item => item.ownerId === user.id)).toBe(true)
  })

  it('lists every user\'s characters with all: true', async () => {
    const foreign = await client(other.token).characters.create.mutate(characterInput('everyone-sees-me'))
    const mine = await client(owner.token).characters.create.mutate(characterInput('mine-too'))
    const all = await client(owner.token).characters.list.query({ all: true, limit: 100 })
    const ids = all.items.map(item => item.id)
    expect(ids).toContain(foreign.id)
    expect(ids).toContain(mine.id)
    expect(ids.indexOf(mine.id)).toBeLessThan(ids.indexOf(foreign.id))
    expect(all.items.some(item => item.ownerId === other.id)).toBe(true)
  })
})

describe('characters.update', () => {
  it('is for the owner only: 403 FORBIDDEN for anyone else, nothing changed', async () => {
    const created = await client(owner.token).characters.create.mutate(characterInput('guarded'))
    const error = await failure(client(other.token).characters.update.mutate({ id: created.id, version: 'hacked', i18n: [{ language: 'en', name: 'X', description: '' }] }))
    expect(error.data).toMatchObject({ httpStatus: 403, apiCode: 'FORBIDDEN' })
    const after = await client(owner.token).characters.get.query({ id: created.id })
    expect(after.version).toBe('1.0.0')
    expect(after.i18n).toEqual(created.i18n)
  })

  it('sets the fields given and leaves the rest, child lists included', async () => {
    const created = await client(owner.token).characters.create.mutate(characterInput('partial'))
    const updated = await client(owner.token).characters.update.mutate({ id: created.id, version: '1.1.0', defaultVoiceId: null, defaultModelId: 'gpt-x', priority: 5 })
    expect(updated).toMatchObject({ version: '1.1.0', defaultVoiceId: null, defaultModelId: 'gpt-x', priority: 5, characterId: 'partial' })
    expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(created.updatedAt.getTime())
    expect([updated.covers, updated.i18n, updated.prompts, updated.capabilities, updated.avatarModels])
      .toEqual([created.covers, created.i18n, created.prompts, created.capabilities, created.avatarModels])
  })

  it('replaces a child list given, soft-deleting the old rows, and may reuse a language', async () => {
    const created = await client(owner.token).characters.create.mutate(characterInput('replace'))
    const updated = await client(owner.token).characters.update.mutate({
      id: created.id,
      covers: [{ foregroundUrl: 'https://cdn.example.com/new-fg.png', backgroundUrl: 'https://cdn.example.com/new-bg.png' }],
      i18n: [{ language: 'en', name: 'Airi 2', description: 'Renamed.' }],
      prompts: [],
    })
    expect(updated.covers.map(cover => cover.foregroundUrl)).toEqual(['https://cdn.example.com/new-fg.png'])
    expect(updated.i18n.map(entry => [entry.language, entry.name])).toEqual([['en', 'Airi 2']])
    expect(updated.prompts).toEqual([])
    expect(updated.capabilities).toEqual(created.capabilities)

    const covers = await liveRows('character_covers', created.id)
    expect(covers).toHaveLength(3)
    expect(covers.filter(row => row.deleted_at !== null).map(row => row.id).sort()).toEqual(created.covers.map(cover => cover.id).sort())
    const prompts = await liveRows('character_prompts', created.id)
    expect(prompts.every(row => row.deleted_at !== null)).toBe(true)
  })
})

describe('characters.delete', () => {
  it('is for the owner only, soft-deletes the character and its parts, which then vanish from list and get', async () => {
    const created = await client(owner.token).characters.create.mutate(characterInput('doomed'))
    await client(other.token).characters.toggleLike.mutate({ id: created.id })

    const refused = await failure(client(other.token).characters.delete.mutate({ id: created.id }))
    expect(refused.data).toMatchObject({ httpStatus: 403, apiCode: 'FORBIDDEN' })
    expect((await client(owner.token).characters.get.query({ id: created.id })).id).toBe(created.id)

    expect(await client(owner.token).characters.delete.mutate({ id: created.id })).toEqual({ id: created.id })

    const row = await server.database.db.selectFrom('characters').select('deleted_at').where('id', '=', created.id).executeTakeFirstOrThrow()
    expect(row.deleted_at).toBeInstanceOf(Date)
    for (const table of ['character_covers', 'character_i18n', 'character_prompts', 'character_capabilities', 'avatar_models'] as const)
      expect((await liveRows(table, created.id)).every(child => child.deleted_at !== null)).toBe(true)

    for (const sdk of [client(owner.token), client(other.token)]) {
      expect((await failure(sdk.characters.get.query({ id: created.id }))).data).toMatchObject({ httpStatus: 404, apiCode: 'CHARACTER_NOT_FOUND' })
      expect((await sdk.characters.list.query({ all: true, limit: 100 })).items.map(item => item.id)).not.toContain(created.id)
      expect((await failure(sdk.characters.toggleLike.mutate({ id: created.id }))).data?.apiCode).toBe('CHARACTER_NOT_FOUND')
    }
    expect((await client(owner.token).characters.list.query({ limit: 100 })).items.map(item => item.id)).not.toContain(created.id)
    expect((await failure(client(owner.token).characters.update.mutate({ id: created.id, version: '2' }))).data?.httpStatus).toBe(404)
    expect((await failure(client(owner.token).characters.delete.mutate({ id: created.id }))).data?.httpStatus).toBe(404)
  })
})

describe('characters.toggleLike and characters.toggleBookmark', () => {
  it('flip the caller\'s like and bookmark on anyone\'s character and keep the counts', async () => {
    const created = await client(owner.token).characters.create.mutate(characterInput('likeable'))
    const fan = client(other.token)
    expect(await fan.characters.toggleLike.mutate({ id: created.id })).toEqual({ liked: true, likesCount: 1 })
    expect(await client(owner.token).characters.toggleLike.mutate({ id: created.id })).toEqual({ liked: true, likesCount: 2 })
    expect(await fan.characters.toggleBookmark.mutate({ id: created.id })).toEqual({ bookmarked: true, bookmarksCount: 1 })

    expect(await fan.characters.get.query({ id: created.id })).toMatchObject({ liked: true, bookmarked: true, likesCount: 2, bookmarksCount: 1 })
    expect(await client(owner.token).characters.get.query({ id: created.id })).toMatchObject({ liked: true, bookmarked: false })

    expect(await fan.characters.toggleLike.mutate({ id: created.id })).toEqual({ liked: false, likesCount: 1 })
    expect(await fan.characters.toggleBookmark.mutate({ id: created.id })).toEqual({ bookmarked: false, bookmarksCount: 0 })
    expect(await fan.characters.get.query({ id: created.id })).toMatchObject({ liked: false, bookmarked: false, likesCount: 1, bookmarksCount: 0 })
  })

  it('keep likesCount exact under 20 concurrent likes, then 20 concurrent unlikes, by 20 users', async () => {
    const created = await client(owner.token).characters.create.mutate(characterInput('popular'))
    const fans = await Promise.all(Array.from({ length: 20 }, () => createVerifiedUser(server)))

    const likes = await Promise.all(fans.map(fan => client(fan.token).characters.toggleLike.mutate({ id: created.id })))
    expect(likes.every(result => result.liked)).toBe(true)
    expect(likes.map(result => result.likesCount).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    expect((await client(owner.token).characters.get.query({ id: created.id })).likesCount).toBe(20)

    const unlikes = await Promise.all(fans.map(fan => client(fan.token).characters.toggleLike.mutate({ id: created.id })))
    expect(unlikes.every(result => !result.liked)).toBe(true)
    expect((await client(owner.token).characters.get.query({ id: created.id })).likesCount).toBe(0)
    const rows = await server.database.db.selectFrom('user_character_likes').select('user_id').where('character_id', '=', created.id).execute()
    expect(rows).toEqual([])
  })
})

describe('deleting an account', () => {
  it('deleteAllForUser soft-deletes the user\'s characters, removes their likes and bookmarks with the counts, and is idempotent', async () => {
    const leaving = await createVerifiedUser(server)
    const staying = await createVerifiedUser(server)
    const theirs = await client(leaving.token).characters.create.mutate(characterInput('leaving'))
    const kept = await client(staying.token).characters.create.mutate(characterInput('kept'))
    await client(leaving.token).characters.toggleLike.mutate({ id: kept.id })
    await client(leaving.token).characters.toggleBookmark.mutate({ id: kept.id })
    await client(staying.token).characters.toggleLike.mutate({ id: kept.id })
    await client(staying.token).characters.toggleLike.mutate({ id: theirs.id })

    for (let run = 0; run < 2; run++) {
      await server.api.services.characters.deleteAllForUser(leaving.id)
      expect((await failure(client(staying.token).characters.get.query({ id: theirs.id }))).data?.apiCode).toBe('CHARACTER_NOT_FOUND')
      expect(await client(staying.token).characters.get.query({ id: kept.id })).toMatchObject({ likesCount: 1, bookmarksCount: 0, liked: true })
      expect((await liveRows('character_i18n', theirs.id)).every(row => row.deleted_at !== null)).toBe(true)
      const likes = await server.database.db.selectFrom('user_character_likes').select('character_id').where('user_id', '=', leaving.id).execute()
      const bookmarks = await server.database.db.selectFrom('user_character_bookmarks').select('character_id').where('user_id', '=', leaving.id).execute()
      expect([likes, bookmarks]).toEqual([[], []])
    }
  })

  it('runs as part of the account-deletion flow', async () => {
    const leaving = await createVerifiedUser(server)
    const created = await client(leaving.token).characters.create.mutate(characterInput('flow'))
    const requested = await authPost(server, '/delete-user', { callbackURL: '/goodbye' }, leaving.token)
    expect(requested.status).toBe(200)
    const mail = await emailTo(server, leaving.email, /deletion/i)
    const callback = await fetch(server.resend.linkIn(mail), { redirect: 'manual', headers: { authorization: `Bearer ${leaving.token}` } })
    expect(callback.status).toBe(302)

    expect((await failure(client(owner.token).characters.get.query({ id: created.id }))).data?.apiCode).toBe('CHARACTER_NOT_FOUND')
    const row = await server.database.db.selectFrom('characters').select('deleted_at').where('id', '=', created.id).executeTakeFirstOrThrow()
    expect(row.deleted_at).toBeInstanceOf(Date)
  })
})
