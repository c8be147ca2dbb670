import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient, type AiriClient } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'

import { ADMIN_EMAIL, createVerifiedUser, failure, signIn, startTestServer, uniqueEmail, type TestServer, type TestUser } from './harness.ts'

/**
 * The operator procedures behind the admin pages and `pnpm airi` (SPEC §4.15):
 * upstreams by alias with sealed keys shown only as hints, administrators added
 * at run time, and a user's account looked up and signed out.
 */

let server: TestServer
let fake: FakeUpstream
let operator: TestUser
let admin: AiriClient
const clients: AiriClient[] = []

const client = (user: TestUser) => {
  const created = createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
  clients.push(created)
  return created
}

beforeAll(async () => {
  ;[server, fake] = await Promise.all([startTestServer(), startFakeOpenAIUpstream({ name: 'operator' })])
  operator = await createVerifiedUser(server, ADMIN_EMAIL)
  admin = client(operator)
})
afterAll(async () => {
  await Promise.all(clients.map(each => each.close()))
  await server?.close()
  await fake?.close()
})

const KEY = 'sk-operator-typed-key-4321'

describe('admin.upstreams', () => {
  it('adds an LLM alias with a sealed key that serves calls, lists it with a hint, and never returns the key', async () => {
    const added = await admin.admin.upstreams.put.mutate({ kind: 'llm', alias: 'house', baseUrl: fake.url, model: 'gpt-4o-mini', apiKey: KEY, pricing: { inputPer1M: 100, outputPer1M: 400 } })
    expect(added).toMatchObject({ alias: 'house', isDefault: true, pricing: { inputPer1M: 100, outputPer1M: 400 } })
    expect(added.upstreams[0]!.keys).toEqual([{ id: 'primary', hint: '••••4321' }])

    const list = await admin.admin.upstreams.list.query({ kind: 'llm' })
    expect(list).toMatchObject({ kind: 'llm', defaultModel: 'house', flatPrice: { key: 'FLUX_PER_1K_TOKENS' } })
    expect(JSON.stringify(list)).not.toContain(KEY)
    expect(JSON.stringify(await admin.admin.config.get.query({ key: 'LLM_ROUTER_CONFIG' }))).not.toContain(KEY)

    const user = await createVerifiedUser(server)
    const openai = new OpenAI({ baseURL: `${server.baseUrl}/api/v1/openai`, apiKey: user.token })
    const completion = await openai.chat.completions.create({ model: 'house', messages: [{ role: 'user', content: 'hi' }] })
    expect(completion.choices[0]!.message.content).toBeTruthy()
    expect(fake.requests.at(-1)!.key).toBe(KEY)
  })

  it('keeps the stored key when an alias is edited without one, and refuses a new alias without one', async () => {
    const edited = await admin.admin.upstreams.put.mutate({ kind: 'llm', alias: 'house', baseUrl: fake.url, model: 'gpt-4o' })
    expect(edited.upstreams[0]).toMatchObject({ model: 'gpt-4o', keys: [{ hint: '••••4321' }] })
    // The price stays when none is given, and null goes back to the flat rule.
    expect(edited.pricing).toMatchObject({ inputPer1M: 100 })
    expect((await admin.admin.upstreams.put.mutate({ kind: 'llm', alias: 'house', baseUrl: fake.url, model: 'gpt-4o', pricing: null })).pricing).toBeNull()

    const refused = await failure(admin.admin.upstreams.put.mutate({ kind: 'llm', alias: 'keyless', baseUrl: fake.url, model: 'm' }))
    expect(refused.data?.httpStatus).toBe(400)
    expect(refused.message).toMatch(/API key/)
  })

  it('refuses a price per token on speech, a URL that is not http(s), and keeps TTS and STT apart', async () => {
    expect((await failure(admin.admin.upstreams.put.mutate({ kind: 'tts', alias: 'v', baseUrl: fake.url, model: 'tts-1', apiKey: KEY, pricing: { inputPer1M: 1, outputPer1M: 1 } }))).data?.httpStatus).toBe(400)
    expect((await failure(admin.admin.upstreams.put.mutate({ kind: 'stt', alias: 'w', baseUrl: 'ftp://example.com/v1', model: 'whisper-1', apiKey: KEY }))).data?.httpStatus).toBe(400)

    await admin.admin.upstreams.put.mutate({ kind: 'tts', alias: 'voice', baseUrl: fake.url, model: 'tts-1', apiKey: KEY })
    await admin.admin.upstreams.put.mutate({ kind: 'stt', alias: 'ears', baseUrl: fake.url, model: 'whisper-1', apiKey: KEY })
    const tts = await admin.admin.upstreams.list.query({ kind: 'tts' })
    expect(tts).toMatchObject({ defaultModel: 'voice', flatPrice: { key: 'FLUX_PER_1K_CHARS_TTS' } })
    expect(tts.models.map(model => [model.alias, model.upstreams[0]!.adapter, model.upstreams[0]!.keys[0]!.hint])).toEqual([['voice', 'openai-compatible', '••••4321']])
    expect((await admin.admin.upstreams.list.query({ kind: 'stt' })).models.map(model => model.alias)).toEqual(['ears'])
  })

  it('removes an alias, passing the default to the next one', async () => {
    await admin.admin.upstreams.put.mutate({ kind: 'llm', alias: 'spare', baseUrl: fake.url, model: 'm', apiKey: KEY })
    expect((await admin.admin.upstreams.list.query({ kind: 'llm' })).defaultModel).toBe('house')
    expect(await admin.admin.upstreams.remove.mutate({ kind: 'llm', alias: 'house' })).toEqual({ removed: true })
    expect(await admin.admin.upstreams.remove.mutate({ kind: 'llm', alias: 'house' })).toEqual({ removed: false })
    const list = await admin.admin.upstreams.list.query({ kind: 'llm' })
    expect(list.defaultModel).toBe('spare')
    expect(list.models.map(model => model.alias)).toEqual(['spare'])
  })
})

describe('admin.admins', () => {
  it('makes a verified user an administrator at once, and takes it back', async () => {
    const user = await createVerifiedUser(server)
    const theirs = client(user)
    expect(await theirs.auth.isAdmin.query()).toBe(false)
    expect((await failure(theirs.admin.config.list.query())).data?.code).toBe('FORBIDDEN')

    expect(await admin.admin.admins.add.mutate({ email: user.email.toUpperCase() })).toEqual({ email: user.email, added: true })
    expect(await admin.admin.admins.add.mutate({ email: user.email })).toEqual({ email: user.email, added: false })
    expect(await theirs.auth.isAdmin.query()).toBe(true)
    expect(Array.isArray(await theirs.admin.config.list.query())).toBe(true)
    expect(await admin.admin.admins.list.query()).toEqual(expect.arrayContaining([
      { email: ADMIN_EMAIL, source: 'env', addedAt: null },
      expect.objectContaining({ email: user.email, source: 'stored' }),
    ]))

    expect(await admin.admin.admins.remove.mutate({ email: user.email })).toEqual({ email: user.email, removed: true })
    expect((await failure(theirs.admin.config.list.query())).data?.code).toBe('FORBIDDEN')
  })

  it('refuses to remove an administrator of ADMIN_EMAILS, saying where it comes from', async () => {
    const error = await failure(admin.admin.admins.remove.mutate({ email: ADMIN_EMAIL }))
    expect(error.data?.httpStatus).toBe(409)
    expect(error.message).toMatch(/ADMIN_EMAILS/)
  })
})

describe('admin.users', () => {
  it('looks a user up by e-mail with balance, recent calls and sessions, and signs one session out', async () => {
    const user = await createVerifiedUser(server)
    const second = await signIn(server, user.email, user.password)
    await admin.admin.upstreams.put.mutate({ kind: 'llm', alias: 'spare', baseUrl: fake.url, model: 'gpt-4o-mini', apiKey: KEY })
    await new OpenAI({ baseURL: `${server.baseUrl}/api/v1/openai`, apiKey: user.token }).chat.completions.create({ model: 'spare', messages: [{ role: 'user', content: 'hi' }] })

    const found = await admin.admin.users.lookup.query({ email: user.email.toUpperCase() })
    expect(found.user).toMatchObject({ email: user.email, emailVerified: true, isAdmin: false })
    expect(found.balance).toBe(await server.api.services.billing.getBalance(found.user.id))
    expect(found.calls).toEqual([expect.objectContaining({ kind: 'llm', model: 'spare', status: 'completed' })])
    const secondClient = client(second)
    const firstClient = client(user)
    const secondSession = (await secondClient.auth.me.query()).session.id
    const firstSession = (await firstClient.auth.me.query()).session.id
    expect(found.sessions.map(session => session.id)).toEqual(expect.arrayContaining([firstSession, secondSession]))
    expect(await admin.admin.users.revokeSessions.mutate({ userId: found.user.id, sessionId: secondSession })).toEqual({ revoked: 1 })
    expect((await failure(secondClient.auth.me.query())).data?.code).toBe('UNAUTHORIZED')
    expect((await firstClient.auth.me.query()).user.email).toBe(user.email)

    expect(await admin.admin.users.revokeSessions.mutate({ userId: found.user.id })).toEqual({ revoked: found.sessions.length - 1 })
    expect((await failure(firstClient.auth.me.query())).data?.code).toBe('UNAUTHORIZED')
    expect((await admin.admin.users.lookup.query({ email: user.email })).sessions).toEqual([])
  })

  it('answers 404 for an e-mail nobody has', async () => {
    const error = await failure(admin.admin.users.lookup.query({ email: uniqueEmail('nobody') }))
    expect(error.data?.httpStatus).toBe(404)
  })

  it('creates an account through the sign-up flow, verified when asked, and refuses a taken e-mail', async () => {
    const email = uniqueEmail('created')
    const created = await server.api.services.operator.users.create({ email, password: 'a long enough password', verified: true })
    expect(created).toMatchObject({ email, emailVerified: true })
    const signedIn = await signIn(server, email, 'a long enough password')
    expect((await client(signedIn).auth.me.query()).user.email).toBe(email)
    await expect(server.api.services.operator.users.create({ email, password: 'another password!', verified: false })).rejects.toMatchObject({ code: 'USER_EXISTS' })
  })
})
