import { readFileSync } from 'node:fs'

import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'

import { createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

let server: TestServer
let owner: TestUser
let other: TestUser

beforeAll(async () => {
  server = await startTestServer()
  ;[owner, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
})
afterAll(() => server.close())

type Character = Awaited<ReturnType<AiriClient['characters']['get']['query']>>
type CardJson = { spec: string, spec_version: string, data: Record<string, unknown> } & Record<string, unknown>

const client = (token?: string): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => token })
const fixture = (name: string) => readFileSync(new URL(`../../../tooling/fixtures/cards/${name}`, import.meta.url))
const cardFixture = (name: string) => JSON.parse(fixture(name).toString('utf8')) as CardJson
const importCard = (card: unknown, token = owner.token, language?: string) =>
  client(token).characters.importCard.mutate({ card: card as Record<string, unknown>, ...(language ? { language } : {}) })

/** GET card.json or card.png; `token` null: no Authorization header. */
function exported(id: string, extension: 'json' | 'png', token: string | null = owner.token): Promise<Response> {
  return fetch(`${server.baseUrl}/api/v1/characters/${id}/card.${extension}`, { headers: token ? { authorization: `Bearer ${token}` } : {} })
}

async function exportedJson(id: string): Promise<CardJson> {
  const response = await exported(id, 'json')
  expect(response.status).toBe(200)
  return await response.json() as CardJson
}

async function exportedPng(id: string): Promise<Buffer> {
  const response = await exported(id, 'png')
  expect(response.status).toBe(200)
  expect(response.headers.get('content-type')).toBe('image/png')
  return Buffer.from(await response.arrayBuffer())
}

/** A PNG's chunks by name and bytes, walked by their lengths (the server checks CRCs on import). */
function chunksOf(png: Buffer): Array<{ name: string, data: Buffer }> {
  const chunks: Array<{ name: string, data: Buffer }> = []
  for (let at = 8; at < png.length;) {
    const length = png.readUInt32BE(at)
    const name = png.toString('latin1', at + 4, at + 8)
    chunks.push({ name, data: png.subarray(at + 8, at + 8 + length) })
    at += 12 + length
    if (name === 'IEND')
      break
  }
  return chunks
}

/** The tEXt chunks of a PNG, by keyword. */
function textsOf(png: Buffer): Record<string, string> {
  return Object.fromEntries(chunksOf(png).filter(chunk => chunk.name === 'tEXt').map((chunk) => {
    const end = chunk.data.indexOf(0)
    return [chunk.data.toString('latin1', 0, end), chunk.data.toString('latin1', end + 1)]
  }))
}

const cardInChunk = (text: string | undefined) => JSON.parse(Buffer.from(text!, 'base64').toString('utf8')) as CardJson

/** A PNG's picture: every chunk but the card ones, as hex. */
const pictureOf = (png: Buffer) => chunksOf(png)
  .filter(chunk => !(chunk.name === 'tEXt' && /^(?:chara|ccv3)\0/.test(chunk.data.toString('latin1'))))
  .map(chunk => `${chunk.name}:${chunk.data.toString('hex')}`)

const coverPng = (character: Character) => {
  expect(character.coverUrl).toMatch(/^data:image\/png;base64,/)
  return Buffer.from(character.coverUrl.slice('data:image/png;base64,'.length), 'base64')
}

/** What makes two characters the same character: everything but ids, owner, counts and times. */
const essence = (character: Character) => ({
  characterId: character.characterId,
  version: character.version,
  coverUrl: character.coverUrl,
  avatarUrl: character.avatarUrl,
  i18n: character.i18n.map(({ id: _, ...entry }) => entry),
  prompts: character.prompts.map(({ id: _, ...prompt }) => prompt),
  metadata: character.metadata,
})

const prompt = (type: string, content: string, language = 'en') => ({ language, type, content })

describe('characters.importCard', () => {
  it('maps a V2 card with extensions and alternate greetings, keeping placeholders and every unmapped field', async () => {
    const card = cardFixture('v2-extensions.json')
    const character = await importCard(card)
    expect(character).toMatchObject({ characterId: 'mirelle', version: '1.2', creatorId: owner.id, ownerId: owner.id })
    expect(character.i18n.map(({ id: _, ...entry }) => entry)).toEqual([
      { language: 'en', name: 'Mirelle', tagline: null, description: 'Slow-burn, cosy. Works best with a short system prompt.', tags: ['lighthouse', 'slow burn', 'original character'] },
    ])
    expect(character.prompts.map(({ id: _, ...entry }) => entry)).toEqual([
      prompt('system', '{{original}}\nWrite {{char}}\'s replies in British English.'),
      prompt('description', '{{char}} keeps the lighthouse on Gull Rock and has not left the island in nine years.'),
      prompt('personality', 'dry, patient, quietly curious about {{user}}'),
      prompt('scenario', 'A storm has stranded {{user}} on Gull Rock for the night.'),
      prompt('example_dialogue', '<START>\n{{user}}: How long have you been out here?\n{{char}}: Long enough to name the gulls. Short enough to still hate them.'),
      prompt('post_history_instructions', 'Keep {{char}} terse unless {{user}} asks about the sea.'),
      prompt('greetings', '*{{char}} holds the lantern up to your face.* You\'re lucky the tide didn\'t take you. Come in, {{user}}, and mind the third step.'),
      prompt('greetings', '*The foghorn sounds twice.* That\'ll be the supply boat. Or it won\'t. Help me with the crates, {{user}}?'),
      prompt('greetings', '*{{char}} doesn\'t look up from the logbook.* Wind from the north-east, force seven. Tea\'s on the stove.'),
    ])
    // The V1 copies at the top are the mapped fields again; everything else is kept as it came.
    expect(character.metadata).toEqual({
      characterCard: {
        data: { creator_notes: card.data.creator_notes, creator: 'saltwater_scribe', extensions: card.data.extensions },
        root: { creatorcomment: card.creatorcomment, avatar: 'none', chat: card.chat, talkativeness: '0.4', fav: true, create_date: card.create_date },
      },
    })
    // A JSON card has no picture: the cover is the placeholder PNG.
    expect(chunksOf(coverPng(character)).map(chunk => chunk.name)).toEqual(['IHDR', 'IDAT', 'IEND'])
    expect(await client(owner.token).characters.get.query({ id: character.id })).toEqual(character)
  })

  it('keeps a V3 card\'s assets, lorebook and V3 fields verbatim, and leaves out empty prompts', async () => {
    const card = cardFixture('v3-lorebook.json')
    const character = await importCard(card)
    expect(character.characterId).toBe('captain-orrin-vale')
    expect(character.prompts.map(entry => entry.type)).toEqual(['description', 'personality', 'scenario', 'example_dialogue', 'greetings', 'greetings'])
    const { name: _n, description: _d, personality: _p, scenario: _s, first_mes: _f, alternate_greetings: _a, mes_example: _m, system_prompt: _sp, post_history_instructions: _ph, tags: _t, character_version: _v, ...kept } = card.data
    expect(character.metadata).toEqual({ characterCard: { data: kept, root: { x_exported_by: 'card-editor 2.4' } } })
    const book = (character.metadata as { characterCard: { data: { character_book: { entries: unknown[] } } } }).characterCard.data.character_book
    expect(book).toEqual(card.data.character_book)
    expect(book.entries).toHaveLength(4)
  })

  it('reads a PNG\'s chara chunk, and keeps the picture without its card as the cover', async () => {
    const png = fixture('v2-chara.png')
    const fromPng = await importCard(png.toString('base64'))
    const fromJson = await importCard(cardFixture('v2-extensions.json'))
    expect({ ...essence(fromPng), coverUrl: '', avatarUrl: '' }).toEqual({ ...essence(fromJson), coverUrl: '', avatarUrl: '' })
    expect(pictureOf(coverPng(fromPng))).toEqual(pictureOf(png))
    expect(Object.keys(textsOf(coverPng(fromPng)))).toEqual(['Software'])
    expect(fromPng.avatarUrl).toBe(fromPng.coverUrl)
  })

  it('prefers a PNG\'s ccv3 chunk to its chara chunk, and takes a data: URL as well', async () => {
    const png = fixture('v3-ccv3.png')
    expect(Object.keys(textsOf(png))).toEqual(['chara', 'ccv3'])
    const character = await importCard(`data:image/png;base64,${png.toString('base64')}`)
    expect(character.i18n[0]!.name).toBe('Captain Orrin Vale')
    expect(pictureOf(coverPng(character))).toEqual(pictureOf(png))
  })

  it('puts the prompts in the language the caller gives', async () => {
    const character = await importCard(cardFixture('v3-lorebook.json'), owner.token, 'fr')
    expect(new Set([...character.i18n, ...character.prompts].map(entry => entry.language))).toEqual(new Set(['fr']))
  })

  it('takes a PNG of nearly 8 MiB (past the 1 MiB other calls are held to)', async () => {
    // Bytes after IEND are no part of a PNG; the picture kept is the PNG alone.
    const png = Buffer.concat([fixture('v2-chara.png'), Buffer.alloc(8 * 1024 * 1024 - 10_000)])
    const character = await importCard(png.toString('base64'))
    expect(character.i18n[0]!.name).toBe('Mirelle')
    expect(pictureOf(coverPng(character))).toEqual(pictureOf(fixture('v2-chara.png')))
  })
})

describe('card export and round trips', () => {
  it('exports a V3 card.json that gives the card\'s fields back and imports to an equal character', async () => {
    for (const name of ['v2-extensions.json', 'v3-lorebook.json']) {
      const original = cardFixture(name)
      const first = await importCard(original)
      const response = await exported(first.id, 'json')
      expect(response.headers.get('content-type')).toMatch(/^application\/json/)
      expect(response.headers.get('content-disposition')).toBe(`attachment; filename="${first.characterId}.card.json"`)
      const card = await response.json() as CardJson
      expect(card).toMatchObject({ spec: 'chara_card_v3', spec_version: '3.0' })
      // Every field of the original's data comes back as it was, placeholders included.
      expect(card.data).toMatchObject(original.data)
      const second = await importCard(card)
      expect(second.id).not.toBe(first.id)
      expect(essence(second)).toEqual(essence(first))
      expect(await exportedJson(second.id)).toEqual(card)
    }
  })

  it('exports a card.png (the cover, with ccv3 and a V2 chara) that imports to an equal character, cover included', async () => {
    const first = await importCard(fixture('v3-ccv3.png').toString('base64'))
    const png = await exportedPng(first.id)
    expect(pictureOf(png)).toEqual(pictureOf(coverPng(first)))
    const texts = textsOf(png)
    expect(Object.keys(texts)).toEqual(['ccv3', 'chara'])
    const v3 = cardInChunk(texts.ccv3)
    expect(v3).toEqual(await exportedJson(first.id))
    const v2 = cardInChunk(texts.chara)
    expect(v2).toMatchObject({ spec: 'chara_card_v2', spec_version: '2.0', name: 'Captain Orrin Vale', first_mes: v3.data.first_mes, data: v3.data })

    const second = await importCard(png.toString('base64'))
    expect(essence(second)).toEqual(essence(first))
  })

  it('exports a character without a PNG cover on the placeholder picture, and a character made here as a card too', async () => {
    const fromJson = await importCard(cardFixture('v2-extensions.json'))
    const png = await exportedPng(fromJson.id)
    expect(pictureOf(png)).toEqual(pictureOf(coverPng(fromJson)))
    expect(essence(await importCard(png.toString('base64')))).toEqual(essence(fromJson))

    const made = await client(owner.token).characters.create.mutate({
      characterId: 'airi-native',
      version: '2',
      coverUrl: 'https://cdn.example.com/airi/cover.png',
      avatarUrl: 'https://cdn.example.com/airi/avatar.png',
      i18n: [{ language: 'en', name: 'Airi', description: 'A friendly AI.', tags: ['friendly'] }],
      prompts: [prompt('system', 'You are {{char}}.'), prompt('personality', 'cheerful'), prompt('greetings', 'Hi, {{user}}!'), prompt('greetings', 'Hello again!')],
    })
    const card = cardInChunk(textsOf(await exportedPng(made.id)).ccv3)
    expect(card.data).toMatchObject({ name: 'Airi', system_prompt: 'You are {{char}}.', personality: 'cheerful', first_mes: 'Hi, {{user}}!', alternate_greetings: ['Hello again!'], tags: ['friendly'], character_version: '2' })
    const back = await importCard(card)
    expect(back.prompts.map(({ id: _, ...entry }) => entry)).toEqual(made.prompts.map(({ id: _, ...entry }) => entry))
    expect(back.i18n[0]).toMatchObject({ name: 'Airi', tags: ['friendly'] })
  })

  it('keeps the language a card was imported in when it is imported back in it', async () => {
    const first = await importCard(cardFixture('v2-extensions.json'), owner.token, 'ja')
    const second = await importCard(await exportedJson(first.id), owner.token, 'ja')
    expect(essence(second)).toEqual(essence(first))
  })
})

describe('malformed cards', () => {
  async function refusal(card: unknown): Promise<{ message: string, fields: string[] }> {
    const error = await failure(importCard(card))
    expect(error.data).toMatchObject({ httpStatus: 400, apiCode: 'INVALID_CARD' })
    const fieldErrors = (error.data?.details as { fieldErrors?: Record<string, string[]> } | undefined)?.fieldErrors ?? {}
    return { message: error.message, fields: Object.keys(fieldErrors) }
  }

  const v3 = () => cardFixture('v3-lorebook.json')

  it('answers 400 INVALID_CARD naming what is wrong in the JSON', async () => {
    expect((await refusal('{"spec": "chara_card_v3", "data": {')).message).toBe('card is not valid JSON')
    expect((await refusal({ ...v3(), spec: 'chara_card_v1' })).message).toBe('spec: must be chara_card_v2 or chara_card_v3')
    const { name: _, ...nameless } = v3().data
    expect(await refusal({ ...v3(), data: nameless })).toEqual({ message: 'data.name: required', fields: ['data.name'] })
    expect((await refusal({ ...v3(), data: { ...v3().data, name: '   ' } })).message).toBe('data.name: required')
    expect((await refusal({ spec: 'chara_card_v2' })).message).toBe('data: required')
    expect((await refusal({ ...v3(), data: { ...v3().data, alternate_greetings: 'hello' } })).message).toBe('data.alternate_greetings: must be a list of strings')
    const book = v3().data.character_book as { entries: Array<Record<string, unknown>> }
    book.entries[2]!.content = 42
    expect(await refusal({ ...v3(), data: { ...v3().data, character_book: book, tags: Array.from({ length: 21 }, (_, i) => `tag-${i}`) } })).toEqual({
      message: 'data.tags: at most 20 tags',
      fields: ['data.tags', 'data.character_book.entries.2.content'],
    })
    expect((await refusal({ ...v3(), data: { ...v3().data, description: 'x'.repeat(50_001) } })).message).toBe('data.description: at most 50000 characters')
    expect((await refusal({ ...v3(), data: { ...v3().data, description: 'bad \0 text' } })).message).toMatch(/^data\.description: Must not contain NUL/)
  })

  it('answers 400 INVALID_CARD naming what is wrong with a PNG', async () => {
    expect((await refusal(fixture('no-card.png').toString('base64'))).message).toBe('PNG has no chara or ccv3 chunk')
    expect((await refusal(fixture('chara-not-json.png').toString('base64'))).message).toBe('PNG chara chunk is not valid JSON')
    expect((await refusal('this is not base64!')).message).toBe('card is neither JSON nor a base64 PNG (not valid base64)')
    expect((await refusal(Buffer.from('GIF89a, not a PNG').toString('base64'))).message).toBe('card is neither JSON nor a base64 PNG (no PNG signature)')
    const png = fixture('v2-chara.png')
    expect((await refusal(png.subarray(0, 200).toString('base64'))).message).toMatch(/^PNG is damaged: the IDAT chunk runs past the end of the file/)
    const corrupt = Buffer.from(png)
    // A byte inside the IDAT chunk's data (after the signature, IHDR and IDAT's own header).
    corrupt[60] = corrupt[60]! ^ 0xFF
    expect((await refusal(corrupt.toString('base64'))).message).toMatch(/^PNG is damaged: CRC values for IDAT/)
  })

  it('answers 400 INVALID_CARD for a card larger than 8 MiB, as a PNG or as JSON', async () => {
    const png = Buffer.concat([fixture('v2-chara.png'), Buffer.alloc(8 * 1024 * 1024)])
    expect((await refusal(png.toString('base64'))).message).toBe('card larger than 8 MiB')
    const json = { ...v3(), data: { ...v3().data, creator_notes: 'x'.repeat(8 * 1024 * 1024) } }
    expect((await refusal(json)).message).toBe('card larger than 8 MiB')
    expect((await refusal(JSON.stringify(json))).message).toBe('card larger than 8 MiB')
  })

  it('answers 400 with fieldErrors for input that is no card at all', async () => {
    const error = await failure(client(owner.token).characters.importCard.mutate({ card: 42 as unknown as string, language: 'not a language!' }))
    expect(error.data?.httpStatus).toBe(400)
    expect(Object.keys(error.data?.fieldErrors ?? {}).sort()).toEqual(['card', 'language'])
  })
})

describe('card access', () => {
  it('needs a user: 401 without a bearer token, for import and both exports', async () => {
    const character = await importCard(cardFixture('v2-extensions.json'))
    expect((await failure(importCard(cardFixture('v2-extensions.json'), ''))).data).toMatchObject({ httpStatus: 401, apiCode: 'UNAUTHORIZED' })
    for (const extension of ['json', 'png'] as const) {
      const response = await exported(character.id, extension, null)
      expect(response.status).toBe(401)
      expect(await response.json()).toMatchObject({ error: { code: 'UNAUTHORIZED' } })
      expect((await exported(character.id, extension, 'not-a-token')).status).toBe(401)
    }
  })

  it('exports what characters.get shows: anyone\'s live character, and 404 for a deleted or unknown one', async () => {
    const theirs = await importCard(cardFixture('v3-lorebook.json'), other.token)
    expect((await exported(theirs.id, 'json', owner.token)).status).toBe(200)
    await client(other.token).characters.delete.mutate({ id: theirs.id })
    for (const id of [theirs.id, 'no-such-character']) {
      for (const extension of ['json', 'png'] as const) {
        const response = await exported(id, extension, owner.token)
        expect(response.status).toBe(404)
        expect(await response.json()).toMatchObject({ error: { code: 'CHARACTER_NOT_FOUND' } })
      }
    }
    expect((await exported(theirs.id, 'json', other.token)).status).toBe(404)
  })
})
