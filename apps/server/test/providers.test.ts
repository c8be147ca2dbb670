import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'

import { createVerifiedUser, startTestServer, type TestServer, type TestUser, failure, badRequestFields } from './harness.ts'

let server: TestServer
let owner: TestUser
let other: TestUser
let systemId: string

beforeAll(async () => {
  server = await startTestServer()
  ;[owner, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
  const system = await server.database.db.insertInto('system_provider_configs').values({
    definition_id: 'openai-compatible',
    name: 'AIRI official',
    config: JSON.stringify({ baseUrl: 'https://api.example.com/v1', models: ['airi-1'] }),
    validated: true,
  }).returning('id').executeTakeFirstOrThrow()
  systemId = system.id
  // A retired operator row: never listed.
  await server.database.db.insertInto('system_provider_configs').values({
    definition_id: 'retired',
    name: 'Retired',
    config: '{}',
    deleted_at: new Date(),
  }).execute()
})
afterAll(() => server.close())

const client = (token?: string): AiriClient => createAiriClient({ baseUrl: server.baseUrl, getToken: () => token })

const openai = { definitionId: 'openai', name: 'My OpenAI', config: { apiKey: 'sk-test', baseUrl: 'https://api.openai.com/v1', headers: { 'x-org': 'me' }, models: ['a', 'b'] } }

describe('providers: access', () => {
  it('every procedure needs a user', async () => {
    const anonymous = client()
    const calls: Promise<unknown>[] = [
      anonymous.providers.list.query(),
      anonymous.providers.create.mutate(openai),
      anonymous.providers.update.mutate({ id: 'x', name: 'y' }),
      anonymous.providers.delete.mutate({ id: 'x' }),
    ]
    for (const call of calls)
      expect((await failure(call)).data).toMatchObject({ httpStatus: 401, apiCode: 'UNAUTHORIZED' })
  })

  it('answers bad input with 400 naming the field, for every procedure', async () => {
    const sdk = client(owner.token)
    expect(await badRequestFields(sdk.providers.create.mutate({ ...openai, name: '  ' }))).toEqual(['name'])
    expect(await badRequestFields(sdk.providers.create.mutate({ ...openai, definitionId: 'x'.repeat(101), config: ['not', 'an', 'object'] as never }))).toEqual(['config', 'definitionId'])
    expect(await badRequestFields(sdk.providers.create.mutate({ ...openai, config: { when: new Date() } as never }))).toEqual(['config.when'])
    expect(await badRequestFields(sdk.providers.update.mutate({ id: '', config: { blob: 'x'.repeat(70_000) } }))).toEqual(['config', 'id'])
    expect(await badRequestFields(sdk.providers.update.mutate({ id: 'x', validated: 'yes' as never }))).toEqual(['validated'])
    expect(await badRequestFields(sdk.providers.delete.mutate({ id: 'x'.repeat(101) }))).toEqual(['id'])
  })
})

describe('providers.create and providers.list', () => {
  it('creates the caller\'s own config, stored as given', async () => {
    const created = await client(owner.token).providers.create.mutate(openai)
    expect(created).toEqual({
      scope: 'user',
      id: expect.any(String),
      definitionId: 'openai',
      name: 'My OpenAI',
      config: openai.config,
      validated: false,
      validationBypassed: false,
      createdAt: expect.any(Date),
      updatedAt: expect.any(Date),
    })
    const row = await server.database.db.selectFrom('user_provider_configs').selectAll().where('id', '=', created.id).executeTakeFirstOrThrow()
    expect(row).toMatchObject({ owner_id: owner.id, config: openai.config })
  })

  it('lists the system configs first, then the caller\'s own newest first, and never another user\'s', async () => {
    const user = await createVerifiedUser(server)
    const sdk = client(user.token)
    const older = await sdk.providers.create.mutate({ definitionId: 'elevenlabs', name: 'Voices', config: {}, validated: true, validationBypassed: true })
    const newer = await sdk.providers.create.mutate({ definitionId: 'ollama', name: 'Local', config: { baseUrl: 'http://127.0.0.1:11434' } })
    const foreign = await client(other.token).providers.create.mutate({ definitionId: 'openai', name: 'Not yours', config: { apiKey: 'sk-other' } })

    const list = await sdk.providers.list.query()
    expect(list.map(entry => [entry.scope, entry.id])).toEqual([['system', systemId], ['user', newer.id], ['user', older.id]])
    expect(list[0]).toMatchObject({ definitionId: 'openai-compatible', name: 'AIRI official', config: { baseUrl: 'https://api.example.com/v1', models: ['airi-1'] }, validated: true })
    expect(list[2]).toMatchObject({ validated: true, validationBypassed: true })

    const theirs = await client(other.token).providers.list.query()
    expect(theirs.map(entry => entry.id)).toContain(foreign.id)
    expect(theirs.map(entry => entry.id)).not.toContain(newer.id)
    expect(list.map(entry => entry.id)).not.toContain(foreign.id)
  })
})

describe('providers.update', () => {
  it('changes the fields given on the caller\'s own config, replacing config whole', async () => {
    const sdk = client(owner.token)
    const created = await sdk.providers.create.mutate(openai)
    const updated = await sdk.providers.update.mutate({ id: created.id, name: 'Renamed', config: { apiKey: 'sk-new' }, validated: true })
    expect(updated).toMatchObject({ scope: 'user', id: created.id, name: 'Renamed', config: { apiKey: 'sk-new' }, validated: true, validationBypassed: false, definitionId: 'openai' })
    expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(created.updatedAt.getTime())
    expect((await sdk.providers.list.query()).find(entry => entry.id === created.id)).toEqual(updated)
  })

  it('answers 404 PROVIDER_CONFIG_NOT_FOUND for a system config, another user\'s config or an unknown id, changing nothing', async () => {
    const foreign = await client(other.token).providers.create.mutate({ definitionId: 'openai', name: 'Theirs', config: { apiKey: 'sk-theirs' } })
    for (const id of [systemId, foreign.id, 'no-such-config']) {
      const error = await failure(client(owner.token).providers.update.mutate({ id, name: 'Mine now', config: {} }))
      expect(error.data).toMatchObject({ httpStatus: 404, apiCode: 'PROVIDER_CONFIG_NOT_FOUND' })
    }
    expect((await client(other.token).providers.list.query()).find(entry => entry.id === foreign.id)).toMatchObject({ name: 'Theirs', config: { apiKey: 'sk-theirs' } })
    expect((await client(owner.token).providers.list.query())[0]).toMatchObject({ id: systemId, name: 'AIRI official' })
  })
})

describe('providers.delete', () => {
  it('soft-deletes the caller\'s own config, which then leaves the list and cannot be changed', async () => {
    const sdk = client(owner.token)
    const created = await sdk.providers.create.mutate(openai)
    expect(await sdk.providers.delete.mutate({ id: created.id })).toEqual({ id: created.id })
    expect((await sdk.providers.list.query()).map(entry => entry.id)).not.toContain(created.id)
    const row = await server.database.db.selectFrom('user_provider_configs').select('deleted_at').where('id', '=', created.id).executeTakeFirstOrThrow()
    expect(row.deleted_at).toBeInstanceOf(Date)
    expect((await failure(sdk.providers.delete.mutate({ id: created.id }))).data?.apiCode).toBe('PROVIDER_CONFIG_NOT_FOUND')
    expect((await failure(sdk.providers.update.mutate({ id: created.id, name: 'Back' }))).data?.apiCode).toBe('PROVIDER_CONFIG_NOT_FOUND')
  })

  it('answers 404 PROVIDER_CONFIG_NOT_FOUND for a system config or another user\'s config, deleting nothing', async () => {
    const foreign = await client(other.token).providers.create.mutate({ definitionId: 'openai', name: 'Keep me', config: {} })
    for (const id of [systemId, foreign.id]) {
      const error = await failure(client(owner.token).providers.delete.mutate({ id }))
      expect(error.data).toMatchObject({ httpStatus: 404, apiCode: 'PROVIDER_CONFIG_NOT_FOUND' })
    }
    expect((await client(other.token).providers.list.query()).map(entry => entry.id)).toEqual(expect.arrayContaining([systemId, foreign.id]))
  })
})

describe('deleting an account', () => {
  it('deleteAllForUser soft-deletes only the user\'s configs, and is idempotent', async () => {
    const leaving = await createVerifiedUser(server)
    await client(leaving.token).providers.create.mutate(openai)
    await client(leaving.token).providers.create.mutate({ ...openai, name: 'Second' })
    const othersBefore = await client(other.token).providers.list.query()

    await server.api.services.providers.deleteAllForUser(leaving.id)
    await server.api.services.providers.deleteAllForUser(leaving.id)

    expect((await client(leaving.token).providers.list.query()).map(entry => [entry.scope, entry.id])).toEqual([['system', systemId]])
    const rows = await server.database.db.selectFrom('user_provider_configs').select('deleted_at').where('owner_id', '=', leaving.id).execute()
    expect(rows).toHaveLength(2)
    expect(rows.every(row => row.deleted_at !== null)).toBe(true)
    expect(await client(other.token).providers.list.query()).toEqual(othersBefore)
  })
})
