import { randomUUID } from 'node:crypto'
import { request as httpRequest } from 'node:http'

import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'

import type { AppRouter } from '@airi/api'
import { createAiriClient, type AiriClient, type TRPCClientError, type WebSocketConstructor } from '@airi/sdk'

import { until } from '@airi/tooling/test/until'

import { ADMIN_EMAIL, createVerifiedUser, failure, startTestServer, type TestServer, type TestUser } from './harness.ts'

let server: TestServer
let alice: TestUser
let eve: TestUser
let chatId: string
const clients: AiriClient[] = []
/** Every line the host and the services logged at warn or above, parsed. */
const logged: Array<{ level: number, msg?: string }> = []
const recordingLogger = pino({ level: 'warn' }, { write: (line: string) => logged.push(JSON.parse(line) as { level: number, msg?: string }) })

beforeAll(async () => {
  server = await startTestServer({ logger: recordingLogger, httpLogger: recordingLogger })
  ;[alice, eve] = await Promise.all([createVerifiedUser(server), createVerifiedUser(server)])
  chatId = (await client(alice.token).chats.create.mutate({ type: 'group', title: 'Hostile' })).id
})
afterAll(async () => {
  await Promise.all(clients.map(sdk => sdk.close()))
  await server.close()
})

function client(token: string): AiriClient {
  const created = createAiriClient({ baseUrl: server.baseUrl, getToken: () => token, WebSocket: WebSocket as unknown as WebSocketConstructor })
  clients.push(created)
  return created
}

const NUL = '\u0000'
const LONE_HIGH = '\uD800'
const LONE_LOW = '\uDC00'
const message = (overrides: Record<string, unknown> = {}) => ({ id: randomUUID(), role: 'user' as const, content: 'hello', ...overrides })

const character = (overrides: Record<string, unknown> = {}) => ({
  characterId: `c-${randomUUID().slice(0, 8)}`,
  version: '1',
  coverUrl: 'https://cdn.example.com/cover.png',
  avatarUrl: 'https://cdn.example.com/avatar.png',
  i18n: [{ language: 'en', name: 'Airi', description: 'A friendly AI.' }],
  ...overrides,
})

const provider = (overrides: Record<string, unknown> = {}) => ({ definitionId: 'openai', name: 'Mine', config: { apiKey: 'sk-test' }, ...overrides })

interface ErrorShape { message: string, code: number, data: { code: string, httpStatus: number, apiCode: string, fieldErrors?: Record<string, string[]> } }

/** One tRPC call with a body written by hand, as a client that skips the SDK would send it. */
async function rawCall(path: string, body: string): Promise<{ status: number, error: ErrorShape }> {
  const response = await fetch(`${server.baseUrl}/trpc/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'authorization': `Bearer ${alice.token}` },
    body,
  })
  const payload = await response.json() as { error?: { json: ErrorShape } }
  expect(payload.error, `${path} answered ${response.status} without an error`).toBeDefined()
  return { status: response.status, error: payload.error!.json }
}

/** `[[[…]]]`, `depth` arrays deep, as JSON text (building it as a value would overflow the stack). */
const deepJson = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`

function expectPlain400(status: number, error: ErrorShape, expected: RegExp) {
  expect(status).toBe(400)
  expect(error.data).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400 })
  expect(error.message).toMatch(expected)
  expect(error.message).not.toMatch(/stack|Maximum call|JSON at position|TypeError|RangeError|circular/i)
}

async function expectUnsafeText(call: Promise<unknown>, field: string) {
  const error = await failure(call)
  expect(error.data, field).toMatchObject({ httpStatus: 400, code: 'BAD_REQUEST' })
  expect(error.data?.fieldErrors?.[field], field).toEqual([expect.stringMatching(/NUL characters or unpaired UTF-16 surrogates/)])
}

describe('hostile input: NUL and lone surrogates answer 400 naming the field', () => {
  it('in every text field the issue lists', async () => {
    const sdk = client(alice.token)
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [message({ content: `a${NUL}b` })] }), 'messages.0.content'],
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [message({ id: `id${NUL}` })] }), 'messages.0.id'],
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [message({ metadata: { note: `x${NUL}` } })] }), 'messages.0.metadata.note'],
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [message({ metadata: { [`k${NUL}`]: 1 } })] }), `messages.0.metadata.k${NUL}`],
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [message({ content: `half ${LONE_HIGH} a pair` })] }), 'messages.0.content'],
      [() => sdk.chats.sendMessages.mutate({ chatId, messages: [message({ metadata: { list: ['ok', `${LONE_LOW}`] } })] }), 'messages.0.metadata.list.1'],
      [() => sdk.characters.create.mutate(character({ version: `1${NUL}` })), 'version'],
      [() => sdk.characters.create.mutate(character({ coverUrl: `https://cdn.example.com/a${NUL}b.png` })), 'coverUrl'],
      [() => sdk.characters.create.mutate(character({ i18n: [{ language: 'en', name: `Ai${NUL}ri`, description: '' }] })), 'i18n.0.name'],
      [() => sdk.characters.create.mutate(character({ prompts: [{ language: 'en', type: 'system', content: `You are ${LONE_HIGH}` }] })), 'prompts.0.content'],
      [() => sdk.characters.create.mutate(character({ capabilities: [{ type: 'speech', config: { voice: { name: `v${NUL}` } } }] })), 'capabilities.0.config.voice.name'],
      [() => sdk.characters.create.mutate(character({ avatarModels: [{ name: 'm', type: 'vrm', description: '', config: { url: `${LONE_LOW}` } }] })), 'avatarModels.0.config.url'],
      [() => sdk.providers.create.mutate(provider({ name: `Mine${NUL}` })), 'name'],
      [() => sdk.providers.create.mutate(provider({ config: { apiKey: `sk${NUL}` } })), 'config.apiKey'],
      [() => sdk.providers.create.mutate(provider({ config: { headers: { 'x-org': `me${LONE_HIGH}` } } })), 'config.headers.x-org'],
      [() => sdk.chats.create.mutate({ type: 'group', title: `Title${NUL}` }), 'title'],
      [() => sdk.chats.get.query({ chatId: `${chatId}${NUL}` }), 'chatId'],
      [() => sdk.flux.history.query({ cursor: `c${NUL}` }), 'cursor'],
    ]
    for (const [call, field] of cases)
      await expectUnsafeText(call(), field)
  })

  it('in an operator config value', async () => {
    const admin = client((await createVerifiedUser(server, ADMIN_EMAIL)).token)
    await expectUnsafeText(admin.admin.config.set.mutate({ key: 'STRIPE_FLUX_PRODUCT_ID', value: `prod${NUL}` }), 'value')
    await expectUnsafeText(admin.admin.config.set.mutate({ key: 'STRIPE_PAYMENT_METHOD_OPTIONS', value: { card: { note: LONE_HIGH } } }), 'value.card.note')
  })

  it('never stores a message whose id has a lone surrogate, however often it is retried', async () => {
    const sdk = client(alice.token)
    const id = `m-${LONE_HIGH}-${randomUUID()}`
    for (let attempt = 0; attempt < 3; attempt++)
      await expectUnsafeText(sdk.chats.sendMessages.mutate({ chatId, messages: [message({ id })] }), 'messages.0.id')
    const stored = await server.database.db.selectFrom('messages').select('id').where('chat_id', '=', chatId).where('id', 'like', 'm-%').execute()
    expect(stored).toEqual([])
  })

  it('the chat service looks a resent id up as Postgres stores it', async () => {
    const chats = server.api.services.chats
    const own = (await chats.create(alice.id, { type: 'group', title: 'Direct', members: [] })).id
    const id = `direct-${LONE_LOW}-${randomUUID()}`
    const first = await chats.sendMessages(alice.id, { chatId: own, messages: [{ id, role: 'user', content: 'once' }] })
    const again = await chats.sendMessages(alice.id, { chatId: own, messages: [{ id, role: 'user', content: 'once' }] })
    expect(again).toEqual(first)
    expect(first.messages.map(stored => stored.id)).toEqual([id.replace(LONE_LOW, '\uFFFD')])
    expect((await chats.pullMessages(alice.id, { chatId: own, afterSeq: 0, limit: 10 })).messages).toHaveLength(1)
  })

  it('accepts ordinary text, including paired surrogates (emoji)', async () => {
    const sdk = client(alice.token)
    const sent = await sdk.chats.sendMessages.mutate({ chatId, messages: [message({ content: 'hi 👋 你好', metadata: { emoji: '🎉', nested: { list: [1, 'two', null] } } })] })
    expect(sent.messages[0]).toMatchObject({ content: 'hi 👋 你好', metadata: { emoji: '🎉', nested: { list: [1, 'two', null] } } })
  })
})

describe('hostile input: structure is refused before any schema with a plain 400', () => {
  it('a __proto__ or constructor key', async () => {
    const proto = await rawCall('providers.create', `{"json":{"definitionId":"openai","name":"p","config":{"__proto__":{"isAdmin":true}}}}`)
    expectPlain400(proto.status, proto.error, /"__proto__" is not allowed as a key/)
    expect(Object.keys(proto.error.data.fieldErrors ?? {})).toEqual(['config.__proto__'])

    // The SDK's superjson refuses to send this one, so it goes by hand too.
    const constructor = await rawCall('chats.sendMessages', `{"json":{"chatId":"${chatId}","messages":[{"id":"${randomUUID()}","role":"user","content":"x","metadata":{"constructor":{"prototype":1}}}]}}`)
    expectPlain400(constructor.status, constructor.error, /^"constructor" is not allowed as a key$/)
    expect(Object.keys(constructor.error.data.fieldErrors ?? {})).toEqual(['messages.0.metadata.constructor'])
  })

  it('a superjson reference loop', async () => {
    const loop = (path: string) => `"meta":{"referentialEqualities":{"${path}":["${path}.self"]},"v":1}`
    const inMetadata = await rawCall('chats.sendMessages', `{"json":{"chatId":"${chatId}","messages":[{"id":"${randomUUID()}","role":"user","content":"x","metadata":{"a":{}}}]},${loop('messages.0.metadata.a')}}`)
    expectPlain400(inMetadata.status, inMetadata.error, /reference loop/)
    const inConfig = await rawCall('providers.create', `{"json":{"definitionId":"openai","name":"p","config":{"a":{}}},${loop('config.a')}}`)
    expectPlain400(inConfig.status, inConfig.error, /reference loop/)
  })

  it('100 000-deep nesting over HTTP', async () => {
    const inMetadata = await rawCall('chats.sendMessages', `{"json":{"chatId":"${chatId}","messages":[{"id":"${randomUUID()}","role":"user","content":"x","metadata":{"a":${deepJson(100_000)}}}]}}`)
    expectPlain400(inMetadata.status, inMetadata.error, /nested too deeply/)
    const inConfig = await rawCall('characters.create', `{"json":${JSON.stringify(character()).replace(/}$/, `,"capabilities":[{"type":"t","config":{"a":${deepJson(100_000)}}}]}`)}}`)
    expectPlain400(inConfig.status, inConfig.error, /nested too deeply/)
    // Deep superjson annotations (its own recursion) are refused the same way.
    const annotations = await rawCall('chats.create', `{"json":{"type":"group"},"meta":{"values":${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}}`)
    expectPlain400(annotations.status, annotations.error, /nested too deeply/)
  })

  it('a JSON value nested past the limit names its field', async () => {
    let nested: unknown = 'bottom'
    for (let level = 0; level < 40; level++)
      nested = { next: nested }
    const error = await failure(client(alice.token).providers.create.mutate(provider({ config: { nested } })))
    expect(error.data?.httpStatus).toBe(400)
    expect(Object.keys(error.data?.fieldErrors ?? {})).toEqual([`config.nested${'.next'.repeat(31)}`])
  })

  it('a body that is not JSON, and a payload superjson cannot read', async () => {
    const broken = await rawCall('chats.create', '{"json":{"type":')
    expectPlain400(broken.status, broken.error, /^Input is not valid JSON$/)
    const unreadable = await rawCall('chats.create', '{"json":{"type":"group"},"meta":{"values":{"__proto__.x":["Date"]}}}')
    expectPlain400(unreadable.status, unreadable.error, /not in the expected format/)
  })

  it('100 000-deep nesting over WebSocket fails only that call, with its id', async () => {
    const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/trpc?connectionParams=1`)
    const replies: Array<{ id: number | null, error?: { json: ErrorShape }, result?: unknown }> = []
    socket.on('message', data => replies.push(JSON.parse(String(data))))
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    try {
      socket.send(JSON.stringify({ method: 'connectionParams', data: { token: alice.token } }))
      const body = `{"json":{"chatId":"${chatId}","messages":[{"id":"${randomUUID()}","role":"user","content":"x","metadata":{"a":${deepJson(100_000)}}}]}}`
      socket.send(`{"id":7,"method":"mutation","params":{"path":"chats.sendMessages","input":${body}}}`)
      const deadline = Date.now() + 10_000
      while (!replies.some(reply => reply.id === 7)) {
        expect(Date.now(), 'no reply for call 7').toBeLessThan(deadline)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      const reply = replies.find(candidate => candidate.id === 7)!
      expect(reply.error).toBeDefined()
      expectPlain400(reply.error!.json.data.httpStatus, reply.error!.json, /nested too deeply/)
    }
    finally {
      socket.close()
    }
  })
})

describe('hostile input: subscriptions and conflicts', () => {
  it('a bad lastEventId over WebSocket answers BAD_REQUEST with INVALID_CURSOR', async () => {
    const error = await new Promise<TRPCClientError<AppRouter>>((resolve, reject) => {
      client(alice.token).chats.onMessages.subscribe({ lastEventId: 'not-a-cursor' }, {
        onData: () => reject(new Error('the subscription delivered data')),
        onError: error => resolve(error as TRPCClientError<AppRouter>),
      })
    })
    expect(error.data).toMatchObject({ code: 'BAD_REQUEST', httpStatus: 400, apiCode: 'INVALID_CURSOR' })
    expect(error.shape?.code).toBe(-32600)
    expect(error.message).toBe('lastEventId is not a cursor this server issued')
  })

  it('MESSAGE_ID_CONFLICT names only the caller\'s own messages, never ids from other users\' chats', async () => {
    const eveChat = (await client(eve.token).chats.create.mutate({ type: 'group', title: 'Eve' })).id
    const evesId = `eve-${randomUUID()}`
    await client(eve.token).chats.sendMessages.mutate({ chatId: eveChat, messages: [message({ id: evesId })] })

    const sdk = client(alice.token)
    const other = (await sdk.chats.create.mutate({ type: 'group', title: 'Other' })).id
    const alicesId = `alice-${randomUUID()}`
    await sdk.chats.sendMessages.mutate({ chatId: other, messages: [message({ id: alicesId })] })

    const guessed = await failure(sdk.chats.sendMessages.mutate({ chatId, messages: [message({ id: evesId })] }))
    expect(guessed.data).toMatchObject({ httpStatus: 409, apiCode: 'MESSAGE_ID_CONFLICT', details: { ids: [] } })
    expect(JSON.stringify(guessed.data)).not.toContain(evesId)
    expect(guessed.message).not.toContain(evesId)

    const both = await failure(sdk.chats.sendMessages.mutate({ chatId, messages: [message({ id: evesId }), message({ id: alicesId })] }))
    expect(both.data).toMatchObject({ httpStatus: 409, apiCode: 'MESSAGE_ID_CONFLICT', details: { ids: [alicesId] } })
  })
})

/** Error-level (pino 50+) lines logged while `run` ran. */
async function errorsLoggedDuring(run: () => Promise<void>): Promise<string[]> {
  const from = logged.length
  await run()
  return logged.slice(from).filter(line => line.level >= 50).map(line => line.msg ?? '')
}

/** A raw HTTP/1.1 request with exactly this Host header (fetch cannot set one). */
function withHost(host: string, path: string, init: { method?: string, body?: string, headers?: Record<string, string> } = {}): Promise<{ status: number, text: string }> {
  const { hostname, port } = new URL(server.baseUrl)
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest({ hostname, port, path, method: init.method ?? 'GET', setHost: false, headers: { host, ...init.headers } }, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => resolve({ status: response.statusCode!, text: Buffer.concat(chunks).toString() }))
      response.on('error', reject)
    })
    outgoing.on('error', reject)
    outgoing.end(init.body)
  })
}

const HOSTILE_KEYS = ['__proto__', 'constructor', 'prototype']

describe('hostile keys and hosts answer 400 naming what is wrong, and log no error', () => {
  it('a top-level __proto__, constructor or prototype key in a call\'s input, as JSON or superjson, alone or batched', async () => {
    const host = new URL(server.baseUrl).host
    const headers = { 'content-type': 'application/json', 'authorization': `Bearer ${alice.token}` }
    const errors = await errorsLoggedDuring(async () => {
      for (const key of HOSTILE_KEYS) {
        const bodies = [
          `{"json":{"type":"group","${key}":{"a":1}}}`,
          // superjson-encoded: the key carries a Date, so the annotations name it too.
          `{"json":{"type":"group","${key}":"2020-01-01T00:00:00.000Z"},"meta":{"values":{"${key}":["Date"]},"v":1}}`,
        ]
        for (const body of bodies) {
          const answer = await withHost(host, '/trpc/chats.create', { method: 'POST', body, headers })
          expect(answer.status, `${body} answered ${answer.text}`).toBe(400)
          const error = (JSON.parse(answer.text) as { error: { json: ErrorShape } }).error.json
          expectPlain400(answer.status, error, new RegExp(`^"${key}" is not allowed as a key$`))
          expect(Object.keys(error.data.fieldErrors ?? {}), body).toEqual([key])
        }
        // In a batch, only that call fails; the other is served.
        const batch = await withHost(host, '/trpc/chats.create,chats.create?batch=1', { method: 'POST', body: `{"0":{"json":{"type":"group","${key}":1}},"1":{"json":{"type":"group"}}}`, headers })
        const [refused, served] = JSON.parse(batch.text) as [{ error?: { json: ErrorShape } }, { result?: unknown }]
        expect(refused.error?.json.data.httpStatus, batch.text).toBe(400)
        expect(Object.keys(refused.error?.json.data.fieldErrors ?? {})).toEqual([key])
        expect(served.result, batch.text).toBeDefined()
      }
    })
    expect(errors).toEqual([])
  })

  it('the same keys over WebSocket fail only that call, with its id', async () => {
    const socket = new WebSocket(`${server.baseUrl.replace('http', 'ws')}/trpc?connectionParams=1`)
    const replies: Array<{ id: number | null, error?: { json: ErrorShape } }> = []
    socket.on('message', data => replies.push(JSON.parse(String(data))))
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject))
    try {
      socket.send(JSON.stringify({ method: 'connectionParams', data: { token: alice.token } }))
      const errors = await errorsLoggedDuring(async () => {
        HOSTILE_KEYS.forEach((key, index) => socket.send(`{"id":${index + 1},"method":"mutation","params":{"path":"chats.create","input":{"json":{"type":"group","${key}":1}}}}`))
        await until(() => replies.length >= HOSTILE_KEYS.length, 'a reply to each call')
      })
      for (const [index, key] of HOSTILE_KEYS.entries()) {
        const reply = replies.find(candidate => candidate.id === index + 1)
        expect(reply?.error?.json.data.httpStatus, key).toBe(400)
        expect(Object.keys(reply?.error?.json.data.fieldErrors ?? {})).toEqual([key])
      }
      expect(errors).toEqual([])
    }
    finally {
      socket.close()
    }
  })

  it('an invalid Host header on every API route', async () => {
    const hosts = ['a b', '[::1', 'exa%mple', '', 'evil.test:99999', 'user@evil.test', 'evil.test:0', 'evil.test/path', 'evil.test?x']
    const paths = ['/api/auth/get-session', '/trpc/meta.info', '/trpc/chats.list', '/api/v1/openai/models', '/trpc']
    const answers: string[] = []
    const errors = await errorsLoggedDuring(async () => {
      for (const host of hosts) {
        for (const path of paths) {
          const answer = await withHost(host, path, { headers: { authorization: `Bearer ${alice.token}` } })
          answers.push(`${JSON.stringify(host)} ${path} → ${answer.status} ${answer.text}`)
        }
      }
    })
    const message = 'The Host header is not a valid host[:port]'
    // The LLM gateway answers in OpenAI's error shape, as for any other error.
    const invalid = (path: string) => path.startsWith('/api/v1/openai/')
      ? { error: { message, type: 'invalid_request_error', code: 'INVALID_HOST', param: null } }
      : { error: { code: 'INVALID_HOST', message } }
    expect(answers).toEqual(hosts.flatMap(host => paths.map(path => `${JSON.stringify(host)} ${path} → 400 ${JSON.stringify(invalid(path))}`)))
    expect(errors).toEqual([])
  })

  it('valid hosts still reach every route, and probes answer whatever the Host', async () => {
    const { port } = new URL(server.baseUrl)
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, 'API.Example.test', 'api.example.test:443', '10.0.0.7']) {
      expect((await withHost(host, '/trpc/meta.info')).status, host).toBe(200)
      expect((await withHost(host, '/api/auth/get-session', { headers: { authorization: `Bearer ${alice.token}` } })).status, host).toBe(200)
    }
    // A load balancer's health check must not fail over its Host header.
    for (const host of ['a b', '', 'evil.test:99999']) {
      expect((await withHost(host, '/livez')).status, host).toBe(200)
      expect((await withHost(host, '/readyz')).status, host).toBe(200)
    }
  })
})
