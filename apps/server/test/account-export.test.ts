import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createWriteStream } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { createAiriClient } from '@airi/sdk'
import { until } from '@airi/tooling/test/until'

import { authPost, createVerifiedUser, emailTo, startTestServer, type TestServer, type TestUser } from './harness.ts'

/**
 * Tables that hold no one user's data, so the export leaves them out. Every other
 * table of the schema must appear in it: a table added without an export fails
 * the completeness test.
 */
const NOT_USER_DATA = new Set([
  // Operator settings; `updated_by` names the admin who last changed one, for audit.
  'config_entries',
  // The operator's provider configs, shared by everyone.
  'system_provider_configs',
  // Short-lived e-mail and sign-in codes, keyed by address, gone within hours.
  'verification',
  // The server's signing keys.
  'jwks',
  // The API resources our OIDC provider issues tokens for, and which client may ask for which.
  'oauthResource',
  'oauthClientResource',
  // Seen client-assertion ids (replay protection), with no owner.
  'oauthClientAssertion',
  // Kysely's migration bookkeeping.
  'kysely_migration',
  'kysely_migration_lock',
])

/** Column names that point at a user: a table with one is user data unless listed above with a reason. */
const USER_COLUMNS = ['user_id', 'owner_id', 'creator_id', 'member_id', 'sender_id', 'userId', 'updated_by']

let server: TestServer
beforeAll(async () => {
  server = await startTestServer()
})
afterAll(() => server?.close())

function sdk(user: TestUser) {
  return createAiriClient({ baseUrl: server.baseUrl, getToken: () => user.token })
}

function download(headers: Record<string, string>): Promise<Response> {
  return fetch(`${server.baseUrl}/api/v1/account/export`, { headers })
}

const bearer = (user: TestUser) => ({ authorization: `Bearer ${user.token}` })

type Row = Record<string, unknown>
interface ExportFile {
  format: string
  version: number
  exportedAt: string
  userId: string
  tables: Record<string, Row[]>
}

/** The export's bytes as text, and the document they parse to. */
async function exportOf(user: TestUser): Promise<{ text: string, document: ExportFile }> {
  const response = await download(bearer(user))
  expect(response.status, 'the export answered').toBe(200)
  const text = await response.text()
  return { text, document: JSON.parse(text) as ExportFile }
}

/** Every table of the schema, with its columns. */
async function schemaTables(): Promise<Map<string, string[]>> {
  const { rows } = await sql<{ table_name: string, column_name: string }>`
    SELECT c.table_name, c.column_name FROM information_schema.columns c
    JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'`.execute(server.database.db)
  const tables = new Map<string, string[]>()
  for (const row of rows)
    tables.set(row.table_name, [...tables.get(row.table_name) ?? [], row.column_name])
  return tables
}

/** A string the test plants where a secret lives; it must not be in the export. */
const secret = (what: string) => `planted-${what}-${randomUUID()}`

/** Gives `user` a row in every table that holds user data, through the API where there is one and SQL where the row comes from outside (Stripe, OAuth, a reply). */
async function plantEverything(user: TestUser, secrets: Record<string, string>): Promise<{ chatId: string, characterId: string }> {
  const client = sdk(user)
  const db = server.database.db
  const character = await client.characters.create.mutate({
    characterId: 'everything',
    version: '1',
    coverUrl: 'https://example.com/cover.png',
    avatarUrl: 'https://example.com/avatar.png',
    covers: [{ foregroundUrl: 'https://example.com/fg.png', backgroundUrl: 'https://example.com/bg.png' }],
    capabilities: [{ type: 'voice', config: { voice: 'alloy' } }],
    i18n: [{ language: 'en', name: 'Everything', description: 'Has every part.', tags: ['test'] }],
    prompts: [{ language: 'en', type: 'system', content: 'You are the prompt the export must keep.' }],
    avatarModels: [{ name: 'model', type: 'vrm', description: 'a body', config: { url: 'https://example.com/a.vrm' } }],
  })
  await client.characters.toggleLike.mutate({ id: character.id })
  await client.characters.toggleBookmark.mutate({ id: character.id })
  await client.memory.add.mutate({ characterId: character.id, content: 'a memory the export must keep' })
  await client.memory.setSettings.mutate({ characterId: character.id, enabled: false })
  await client.apiKeys.create.mutate({ name: 'a key the export must list', scopes: ['llm'], budget: { flux: 10, period: 'day' } })
  await client.providers.create.mutate({
    definitionId: 'openai',
    name: 'my openai',
    config: { apiKey: secrets.apiKey!, baseUrl: 'https://api.example.com/v1', headers: { Authorization: secrets.header! }, nested: [{ secretAccessKey: secrets.nested! }] },
  })
  await client.flux.balance.query()
  await server.api.services.operator.admins.add(user.email, null)
  const chat = await client.chats.create.mutate({ type: 'group', title: 'mine', members: [] })
  const messageId = randomUUID()
  await client.chats.sendMessages.mutate({ chatId: chat.id, messages: [{ id: messageId, role: 'user', content: 'a message the export must keep' }] })
  await until(async () => (await db.selectFrom('user_milestones').select('user_id').where('user_id', '=', user.id).execute()).length > 0, 'the first-message milestone')

  await db.insertInto('chat_replies').values({ id: randomUUID(), chat_id: chat.id, user_id: user.id, character_id: character.id, answers_id: messageId, model: 'chat', status: 'failed', error_code: 'UPSTREAM_ERROR' }).execute()
  await db.insertInto('llm_request_log').values({ user_id: user.id, request_id: randomUUID(), model: 'chat', status: 200, duration_ms: 120, prompt_tokens: 10, completion_tokens: 20, total_tokens: 30, flux_consumed: 1 }).execute()
  await sql`INSERT INTO metered_usage (user_id, kind, model, status, characters, duration_ms, flux) VALUES (${user.id}, 'tts', 'voice', 'completed', 42, 300, 1)`.execute(db)
  const customer = `cus_${randomUUID()}`
  await db.insertInto('stripe_customer').values({ user_id: user.id, stripe_customer_id: customer, email: user.email }).execute()
  await db.insertInto('stripe_checkout_session').values({ user_id: user.id, stripe_session_id: `cs_${randomUUID()}`, stripe_customer_id: customer, mode: 'payment', status: 'complete', amount_total: 300, currency: 'usd', flux_amount: 300, url: secrets.checkoutUrl! }).execute()
  await db.insertInto('stripe_subscription').values({ user_id: user.id, stripe_subscription_id: `sub_${randomUUID()}`, stripe_customer_id: customer, status: 'active' }).execute()
  await db.insertInto('stripe_invoice').values({ user_id: user.id, stripe_invoice_id: `in_${randomUUID()}`, stripe_customer_id: customer, amount_paid: 300, currency: 'usd', status: 'paid' }).execute()

  await db.updateTable('account').set({ accessToken: secrets.accessToken!, refreshToken: secrets.refreshToken!, idToken: secrets.idToken! }).where('userId', '=', user.id).execute()
  const clientId = `client-${randomUUID()}`
  const now = new Date()
  const expires = new Date(now.getTime() + 3_600_000)
  await sql`INSERT INTO "oauthClient" (id, "clientId", "clientSecret", "userId", name, "redirectUris", "createdAt", "updatedAt")
    VALUES (${randomUUID()}, ${clientId}, ${secrets.clientSecret}, ${user.id}, 'my app', '["https://app.example.com/callback"]'::jsonb, ${now}, ${now})`.execute(db)
  await sql`INSERT INTO "oauthConsent" (id, "clientId", "userId", scopes, "createdAt", "updatedAt")
    VALUES (${randomUUID()}, ${clientId}, ${user.id}, '["openid"]'::jsonb, ${now}, ${now})`.execute(db)
  const refreshId = randomUUID()
  await sql`INSERT INTO "oauthRefreshToken" (id, token, "clientId", "userId", "expiresAt", "createdAt", "rotationReplayResponse", scopes)
    VALUES (${refreshId}, ${secrets.oauthRefresh}, ${clientId}, ${user.id}, ${expires}, ${now}, ${secrets.replay}, '["openid"]'::jsonb)`.execute(db)
  await sql`INSERT INTO "oauthAccessToken" (id, token, "clientId", "userId", "refreshId", "expiresAt", "createdAt", scopes)
    VALUES (${randomUUID()}, ${secrets.oauthAccess}, ${clientId}, ${user.id}, ${refreshId}, ${expires}, ${now}, '["openid"]'::jsonb)`.execute(db)
  return { chatId: chat.id, characterId: character.id }
}

describe('account export', () => {
  it('holds a row of every user table the schema has, as one attachment, with every secret redacted', async () => {
    const user = await createVerifiedUser(server)
    const secrets = Object.fromEntries(['apiKey', 'header', 'nested', 'checkoutUrl', 'accessToken', 'refreshToken', 'idToken', 'clientSecret', 'oauthRefresh', 'replay', 'oauthAccess']
      .map(name => [name, secret(name)]))
    const { characterId } = await plantEverything(user, secrets)
    // Secrets better-auth made itself: the password hash and every session token.
    const db = server.database.db
    const password = (await db.selectFrom('account').select('password').where('userId', '=', user.id).executeTakeFirstOrThrow()).password!
    const sessionTokens = (await db.selectFrom('session').select('token').where('userId', '=', user.id).execute()).map(row => row.token)
    expect(password.length).toBeGreaterThan(20)
    expect(sessionTokens.length).toBeGreaterThan(0)

    const response = await download(bearer(user))
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8')
    expect(response.headers.get('content-disposition')).toMatch(/^attachment; filename="airi-export-\d{4}-\d{2}-\d{2}\.json"$/)
    const text = await response.text()
    const document = JSON.parse(text) as ExportFile
    expect(document).toMatchObject({ format: 'airi-account-export', version: 1, userId: user.id })

    const tables = await schemaTables()
    const userTables = [...tables.keys()].filter(table => !NOT_USER_DATA.has(table)).sort()
    // The tables left out hold no user reference beyond the audit column named above.
    for (const table of NOT_USER_DATA) {
      const references = (tables.get(table) ?? []).filter(column => USER_COLUMNS.includes(column))
      expect(references, `${table} is left out of the export`).toEqual(table === 'config_entries' ? ['updated_by'] : [])
    }
    expect(Object.keys(document.tables).sort()).toEqual(userTables)
    const empty = userTables.filter(table => document.tables[table]!.length === 0)
    expect(empty, 'tables where the user has a row but the export has none').toEqual([])

    for (const [name, value] of [...Object.entries(secrets), ['password', password], ...sessionTokens.map(token => ['session token', token])])
      expect(text.includes(value!), `${name} is in the export`).toBe(false)
    expect(text.includes(user.token), 'the bearer token is in the export').toBe(false)

    const { tables: exported } = document
    expect(exported.user).toEqual([expect.objectContaining({ id: user.id, email: user.email })])
    expect(exported.account![0]).toMatchObject({ userId: user.id, password: '[redacted]', accessToken: '[redacted]', refreshToken: '[redacted]', idToken: '[redacted]', providerId: 'credential' })
    expect(exported.session!.every(row => row.token === '[redacted]')).toBe(true)
    expect(exported.oauthClient![0]).toMatchObject({ clientSecret: '[redacted]', name: 'my app' })
    expect(exported.oauthRefreshToken![0]).toMatchObject({ token: '[redacted]', rotationReplayResponse: '[redacted]' })
    expect(exported.oauthAccessToken![0]).toMatchObject({ token: '[redacted]' })
    expect(exported.user_provider_configs![0]!.config).toEqual({
      apiKey: '[redacted]',
      baseUrl: 'https://api.example.com/v1',
      headers: '[redacted]',
      nested: [{ secretAccessKey: '[redacted]' }],
    })
    expect(exported.stripe_checkout_session![0]).toMatchObject({ url: '[redacted]', amount_total: 300, flux_amount: 300 })
    expect(exported.characters).toEqual([expect.objectContaining({ id: characterId, owner_id: user.id, character_id: 'everything' })])
    expect(exported.character_prompts).toEqual([expect.objectContaining({ character_id: characterId, content: 'You are the prompt the export must keep.' })])
    expect(exported.messages).toEqual([expect.objectContaining({ sender_id: user.id, content: 'a message the export must keep' })])
    const ledger = await sdk(user).flux.history.query({ limit: 100 })
    expect(exported.flux_transaction!.map(row => row.id)).toEqual(ledger.items.map(entry => entry.id).reverse())
  })

  it('holds everyone\'s messages of a group the user is in, only their own of one they left, and nothing of another user\'s own', async () => {
    const [user, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
    const mine = sdk(user)
    const theirs = sdk(other)
    const send = (client: ReturnType<typeof sdk>, chatId: string, content: string) => client.chats.sendMessages.mutate({ chatId, messages: [{ id: randomUUID(), role: 'user', content }] })

    const shared = await theirs.chats.create.mutate({ type: 'group', title: 'shared', members: [{ type: 'user', id: user.id }] })
    await send(theirs, shared.id, 'shared: theirs')
    await send(mine, shared.id, 'shared: mine')
    const deleted = { id: randomUUID(), role: 'user' as const, content: 'shared: theirs, deleted' }
    await theirs.chats.sendMessages.mutate({ chatId: shared.id, messages: [deleted] })
    await theirs.chats.deleteMessages.mutate({ chatId: shared.id, messageIds: [deleted.id] })

    const left = await theirs.chats.create.mutate({ type: 'group', title: 'left', members: [{ type: 'user', id: user.id }] })
    await send(theirs, left.id, 'left: theirs')
    await send(mine, left.id, 'left: mine')
    await mine.chats.removeMember.mutate({ chatId: left.id, member: { type: 'user', id: user.id } })

    const private_ = await theirs.chats.create.mutate({ type: 'group', title: 'theirs alone', members: [] })
    await send(theirs, private_.id, 'theirs alone')
    await theirs.providers.create.mutate({ definitionId: 'openai', name: 'their provider', config: {} })

    const { document: { tables } } = await exportOf(user)
    const contents = tables.messages!.map(row => row.content).sort()
    expect(contents).toEqual(['left: mine', 'shared: mine', 'shared: theirs'])
    expect(tables.chats!.map(row => row.title).sort()).toEqual(['left', 'shared'])
    // The shared chat's members as the user sees them; of the chat they left, only their own membership.
    expect(tables.chat_members!.filter(row => row.chat_id === shared.id).map(row => row.member_id).sort()).toEqual([user.id, other.id].sort())
    expect(tables.chat_members!.filter(row => row.chat_id === left.id)).toEqual([expect.objectContaining({ member_id: user.id, deleted_at: expect.any(String) })])
    expect(tables.user_provider_configs).toEqual([])
    expect(JSON.stringify(tables)).not.toContain(other.email)
  })

  it('streams 100 000 messages in constant memory', async () => {
    const user = await createVerifiedUser(server)
    const chat = await sdk(user).chats.create.mutate({ type: 'group', title: 'long', members: [] })
    const count = 100_000
    const db = server.database.db
    await sql`INSERT INTO messages (id, chat_id, seq, sender_id, role, content)
      SELECT ${chat.id} || ':' || g, ${chat.id}, g, ${user.id}, 'user', repeat('x', 300) || ' #' || g FROM generate_series(1, ${count}) AS g`.execute(db)
    await db.updateTable('chats').set({ last_seq: count }).where('id', '=', chat.id).execute()

    // The server runs in this process: its heap is this heap. A full collection before
    // each sample measures what is held, not garbage waiting for the collector.
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const directory = await mkdtemp(join(tmpdir(), 'airi-export-'))
    const path = join(directory, 'export.json')
    try {
      // Buffers written to a socket faster than the client reads are outside the JS heap.
      const held = () => {
        const { heapUsed, arrayBuffers } = process.memoryUsage()
        return heapUsed + arrayBuffers
      }
      gc()
      const baseline = held()
      let peak = 0
      let bytes = 0
      let sinceSample = 0
      const response = await download(bearer(user))
      expect(response.status).toBe(200)
      const file = createWriteStream(path)
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        bytes += chunk.length
        sinceSample += chunk.length
        if (!file.write(chunk))
          await once(file, 'drain')
        if (sinceSample >= 2 * 1024 * 1024) {
          sinceSample = 0
          gc()
          peak = Math.max(peak, held() - baseline)
        }
      }
      await new Promise<void>((resolve, reject) => file.end((error?: Error | null) => error ? reject(error) : resolve()))

      expect(bytes).toBeGreaterThan(30 * 1024 * 1024)
      // A document built whole would hold all of its bytes (and more, as objects) at once.
      expect(peak, `heap grew by ${Math.round(peak / 1024 / 1024)} MiB during a ${Math.round(bytes / 1024 / 1024)} MiB download`).toBeLessThan(16 * 1024 * 1024)

      const { tables } = JSON.parse(await readFile(path, 'utf8')) as ExportFile
      const messages = tables.messages!
      expect(messages).toHaveLength(count)
      expect(messages.every((row, index) => row.seq === index + 1 && row.chat_id === chat.id)).toBe(true)
      expect(messages.at(-1)!.content).toBe(`${'x'.repeat(300)} #${count}`)
    }
    finally {
      await rm(directory, { recursive: true, force: true })
    }
  })
})

describe('who may export', () => {
  it('takes the session cookie of the sign-in page as well as a bearer token', async () => {
    const user = await createVerifiedUser(server)
    const signIn = await authPost(server, '/sign-in/email', { email: user.email, password: user.password })
    const cookie = signIn.headers.getSetCookie().map(header => header.split(';')[0]).join('; ')
    expect(cookie).toContain('session_token')
    const response = await download({ cookie })
    expect(response.status).toBe(200)
    expect((JSON.parse(await response.text()) as ExportFile).userId).toBe(user.id)
  })

  it('refuses a request without credentials or with a made-up token with 401', async () => {
    for (const headers of [{}, { authorization: 'Bearer made-up' }] as Array<Record<string, string>>) {
      const response = await download(headers)
      expect(response.status).toBe(401)
      expect(await response.json()).toMatchObject({ error: { code: 'UNAUTHORIZED' } })
    }
  })

  it('answers the 7th export of a user within the hour with 429 and retry-after, and counts per user', async () => {
    const [user, other] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
    for (let call = 1; call <= 6; call++) {
      const response = await download(bearer(user))
      expect(response.status, `export ${call}`).toBe(200)
      await response.arrayBuffer()
    }
    const refused = await download(bearer(user))
    expect(refused.status).toBe(429)
    const retryAfter = Number(refused.headers.get('retry-after'))
    // The window is an hour, whatever the per-minute limits' window is.
    expect(retryAfter).toBeGreaterThan(60)
    expect(retryAfter).toBeLessThanOrEqual(3600)
    expect(await refused.json()).toMatchObject({ error: { code: 'RATE_LIMITED', details: { limit: 6, retryAfterSeconds: retryAfter } } })
    expect((await download(bearer(other))).status).toBe(200)
  })

  it('answers 401 once the account is deleted', async () => {
    const user = await createVerifiedUser(server)
    expect((await download(bearer(user))).status).toBe(200)

    const requested = await authPost(server, '/delete-user', { callbackURL: '/goodbye' }, user.token)
    expect(requested.status).toBe(200)
    const mail = await emailTo(server, user.email, /deletion/i)
    const confirmed = await fetch(server.resend.linkIn(mail), { redirect: 'manual', headers: bearer(user) })
    expect(confirmed.status).toBe(302)

    expect((await download(bearer(user))).status).toBe(401)
  })
})
