import { randomUUID } from 'node:crypto'

import WebSocket from 'ws'

import { createAiriClient, type AiriClient, type WebSocketConstructor } from '@airi/sdk'
import { startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { createTestDatabase, testRedisPrefix, type TestDatabase } from '@airi/tooling/test/test-database'
import { until } from '@airi/tooling/test/until'

import { startTestServer, type TestServer } from './harness.ts'

/** What the conversation tests share: two instances of one deployment and a fake LLM upstream. */
export interface ConversationDeployment {
  llm: FakeUpstream
  database: TestDatabase
  redisPrefix: string
  a: TestServer
  b: TestServer
  /** A client of `server` (instance a by default), closed with the deployment. */
  client: (token: string | undefined, server?: TestServer) => AiriClient
  close: () => Promise<void>
}

/**
 * Starts two instances sharing one Postgres and one Redis namespace, and routes each
 * alias of `models` (alias → upstream model, the first one the router's default)
 * to one fake upstream.
 */
export async function startConversationDeployment(models: Record<string, string>): Promise<ConversationDeployment> {
  const llm = await startFakeOpenAIUpstream({ name: 'llm' })
  const database = await createTestDatabase()
  const redisPrefix = testRedisPrefix()
  const a = await startTestServer({ database, redisPrefix })
  const b = await startTestServer({ database, redisPrefix })
  const upstream = (alias: string, model: string) => ({
    id: `llm-${alias}`,
    baseUrl: llm.url,
    model,
    keys: [a.api.services.llmGateway.encryptKey(alias, 'k0', `sk-${alias}`)].map(({ keyId, ciphertext }) => ({ id: keyId, ciphertext })),
  })
  await a.api.services.config.set('LLM_ROUTER_CONFIG', {
    defaultModel: Object.keys(models)[0],
    models: Object.fromEntries(Object.entries(models).map(([alias, model]) => [alias, { upstreams: [upstream(alias, model)] }])),
  })
  const clients: AiriClient[] = []
  return {
    llm,
    database,
    redisPrefix,
    a,
    b,
    client(token, server = a) {
      const created = createAiriClient({ baseUrl: server.baseUrl, getToken: () => token, WebSocket: WebSocket as unknown as WebSocketConstructor })
      clients.push(created)
      return created
    },
    async close() {
      await Promise.all(clients.map(sdk => sdk.close()))
      await Promise.all([a.close(), b.close()])
      await database.drop()
      await llm.close()
    },
  }
}

type CharacterInput = Parameters<AiriClient['characters']['create']['mutate']>[0]

/** A character made by `sdk`'s user; `fields` over plain defaults. */
export async function createCharacter(sdk: AiriClient, fields: Partial<CharacterInput>): Promise<string> {
  const created = await sdk.characters.create.mutate({
    characterId: `c-${randomUUID().slice(0, 8)}`,
    version: '1',
    coverUrl: 'https://cdn.example.com/cover.png',
    avatarUrl: 'https://cdn.example.com/avatar.png',
    i18n: [{ language: 'en', name: 'Helper', description: '' }],
    ...fields,
  })
  return created.id
}

/** A bot chat of `sdk`'s user with `character`. */
export async function botChat(sdk: AiriClient, character: string): Promise<string> {
  return (await sdk.chats.create.mutate({ type: 'bot', members: [{ type: 'character', id: character }] })).id
}

/** Polls `getReply` until the reply is no longer streaming. */
export async function replyEnded(sdk: AiriClient, chatId: string, replyId: string) {
  let reply: Awaited<ReturnType<AiriClient['chats']['getReply']['query']>> | undefined
  await until(async () => {
    reply = await sdk.chats.getReply.query({ chatId, replyId })
    return reply.status !== 'streaming'
  }, `reply ${replyId} to end`)
  return reply!
}

export interface Message { id: string, chatId: string, seq: number, senderId: string, role: string, content: string, metadata: Record<string, any> | null } // eslint-disable-line @typescript-eslint/no-explicit-any -- metadata is read freely
