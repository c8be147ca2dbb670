import { randomUUID } from 'node:crypto'

import type { KyselyPlugin } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

import { fakeEmbedding, startFakeOpenAIUpstream, type FakeUpstream } from '@airi/tooling/fakes/openai-upstream'
import { createTestDatabase, type TestDatabase } from '@airi/tooling/test/test-database'

import { createMemoryAdapters } from '../../adapters/memory.ts'
import { systemClock } from '../../clock.ts'
import { silentLogger } from '../../logger.ts'
import { createMetrics } from '../../metrics.ts'
import { createBillingService } from '../billing/index.ts'
import { createCharacterService } from '../characters/index.ts'
import { createConfigService, type ConfigService } from '../config.ts'
import { createKeyVault } from '../key-vault.ts'
import { createLlmGateway, type LlmGateway } from '../llm-gateway/index.ts'
import { createUpstreamKeyPool } from '../upstream-keys.ts'
import { cosineSql, createMemoryEmbeddings, readEmbeddings } from './embeddings.ts'
import { createMemoryService, type MemoryService } from './service.ts'

let database: TestDatabase
let fake: FakeUpstream
let config: ConfigService
let gateway: LlmGateway
let memories: MemoryService
let characterId: string

const vault = createKeyVault(Buffer.alloc(32, 7))

beforeAll(async () => {
  ;[database, fake] = await Promise.all([createTestDatabase(), startFakeOpenAIUpstream({ name: 'embedder' })])
  const { db } = database
  const { cache, pubsub } = createMemoryAdapters()
  config = await createConfigService({ db, cache, pubsub, logger: silentLogger, clock: systemClock, keyVault: vault })
  const billing = createBillingService({ db, cache, logger: silentLogger, metrics: createMetrics(), initialFlux: async () => 100 })
  gateway = createLlmGateway({ db, config, billing, metrics: createMetrics(), logger: silentLogger, keyVault: vault, keyPool: createUpstreamKeyPool({ keyVault: vault, logger: silentLogger, clock: systemClock }), clock: systemClock })
  memories = createMemoryService({ db, clock: systemClock, characters: createCharacterService({ db }) })
  const [character] = await db.insertInto('characters').values({
    version: '1', cover_url: 'https://example.com/c.png', avatar_url: 'https://example.com/a.png', character_id: 'bot', creator_id: 'someone', owner_id: 'someone',
  }).returning('id').execute()
  characterId = character!.id
})
afterAll(async () => {
  await gateway?.close()
  await fake?.close()
  await database?.drop()
})

const embeddings = (db = database.db) => createMemoryEmbeddings({ db, gateway, logger: silentLogger })

/** A memory of `userId` about the test character; its id. */
async function remember(userId: string, content = `fact ${randomUUID()}`): Promise<string> {
  return (await memories.add(userId, { characterId, content })).id
}

/** Each memory's similarity to `query` under `model`, by id. */
async function similarities(userId: string, query: number[], model = 'embed'): Promise<Map<string, number | null>> {
  const rows = await database.db.selectFrom('memory').select('id').select(cosineSql(query, { pgvector: false, model }).as('similarity'))
    .where('user_id', '=', userId).execute()
  return new Map(rows.map(row => [row.id, row.similarity]))
}

function jsCosine(a: number[], b: number[]): number {
  const dot = a.reduce((sum, value, i) => sum + value * b[i]!, 0)
  const norm = (v: number[]) => Math.sqrt(v.reduce((sum, value) => sum + value * value, 0))
  return dot / (norm(a) * norm(b))
}

describe('cosineSql over real[] (no pgvector)', () => {
  it('equals the cosine computed in JS, and is null for a zero vector, another length or no embedding', async () => {
    const userId = `user-${randomUUID()}`
    const query = [1, 2, 3]
    const vectors: Record<string, number[]> = {
      general: [4, -5, 6],
      scaled: [2, 4, 6],
      orthogonal: [3, 0, -1],
      opposite: [-1, -2, -3],
      zero: [0, 0, 0],
      shorter: [1, 2],
    }
    const ids: Record<string, string> = {}
    for (const name of [...Object.keys(vectors), 'none'])
      ids[name] = await remember(userId)
    await embeddings().store(userId, 'embed', Object.entries(vectors).map(([name, embedding]) => ({ id: ids[name]!, embedding })))

    const seen = await similarities(userId, query)
    for (const name of ['general', 'scaled', 'orthogonal', 'opposite'])
      expect(seen.get(ids[name]!), name).toBeCloseTo(jsCosine(query, vectors[name]!), 6)
    expect(seen.get(ids.scaled!)).toBeCloseTo(1, 6)
    expect(seen.get(ids.orthogonal!)).toBeCloseTo(0, 6)
    expect(seen.get(ids.opposite!)).toBeCloseTo(-1, 6)
    expect([seen.get(ids.zero!), seen.get(ids.shorter!), seen.get(ids.none!)]).toEqual([null, null, null])

    // A query with no direction compares with nothing.
    expect([...(await similarities(userId, [0, 0, 0])).values()].every(value => value === null)).toBe(true)
  })

  it('matches JS on vectors of 1 536 dimensions within float32 precision', async () => {
    const userId = `user-${randomUUID()}`
    const query = fakeEmbedding('what does the person like to drink', 1536)
    const stored = ['I like green tea', '我住在上海', 'My cat is called Miso'].map(text => fakeEmbedding(text, 1536))
    const ids = await Promise.all(stored.map(() => remember(userId)))
    await embeddings().store(userId, 'embed', ids.map((id, i) => ({ id, embedding: stored[i]! })))

    const seen = await similarities(userId, query)
    ids.forEach((id, i) => expect(seen.get(id)).toBeCloseTo(jsCosine(query, stored[i]!), 6))
  })

  it('compares only rows embedded by the model asked about', async () => {
    const userId = `user-${randomUUID()}`
    const [mine, other] = [await remember(userId), await remember(userId)]
    await embeddings().store(userId, 'embed', [{ id: mine, embedding: [1, 0] }])
    await embeddings().store(userId, 'embed-large', [{ id: other, embedding: [1, 0] }])

    const seen = await similarities(userId, [1, 0], 'embed')
    expect(seen.get(mine)).toBeCloseTo(1, 6)
    expect(seen.get(other)).toBeNull()
    expect((await similarities(userId, [1, 0], 'embed-large')).get(other)).toBeCloseTo(1, 6)
  })
})

describe('cosineSql with pgvector', () => {
  // pgvector is not installed here, so this branch is checked as the SQL it compiles to.
  it('casts both sides to vector and uses the cosine distance, with the same guard', () => {
    const { sql: text, parameters } = database.db.selectFrom('memory').select(cosineSql([3, 4], { pgvector: true, model: 'embed' }).as('similarity')).compile()
    expect(text).toBe('select (case when embedding_model = $1 and cardinality(embedding) = $2 then 1 - (embedding::vector <=> $3::real[]::vector) end) as "similarity" from "memory"')
    expect(parameters).toEqual(['embed', 2, [0.6, 0.8]])
  })

  it('is not available on the embedded Postgres, and the answer is read once', async () => {
    const counter = { queries: 0 }
    const plugin: KyselyPlugin = {
      transformQuery({ node }) {
        counter.queries++
        return node
      },
      async transformResult({ result }) {
        return result
      },
    }
    const store = embeddings(database.db.withPlugin(plugin))
    expect(await store.pgvector()).toBe(false)
    expect(await store.pgvector()).toBe(false)
    expect(counter.queries).toBe(1)
  })
})

describe('store', () => {
  it('writes only the caller\'s memories, at unit length, with the alias', async () => {
    const [userId, otherId] = [`user-${randomUUID()}`, `user-${randomUUID()}`]
    const [mine, theirs] = [await remember(userId), await remember(otherId)]
    await embeddings().store(userId, 'embed', [{ id: mine, embedding: [3, 4] }, { id: theirs, embedding: [3, 4] }, { id: 'no-such-memory', embedding: [1, 1] }])

    const rows = await database.db.selectFrom('memory').select(['id', 'embedding', 'embedding_model']).where('id', 'in', [mine, theirs]).execute()
    const byId = new Map(rows.map(row => [row.id, row]))
    expect(byId.get(mine)).toMatchObject({ embedding_model: 'embed' })
    expect(byId.get(mine)!.embedding!.map(value => Number(value.toFixed(6)))).toEqual([0.6, 0.8])
    expect(byId.get(theirs)).toMatchObject({ embedding: null, embedding_model: null })
  })
})

describe('readEmbeddings', () => {
  it('puts the vectors in input order by their index', () => {
    const answer = JSON.stringify({ data: [{ index: 1, embedding: [0, 1] }, { index: 0, embedding: [1, 0] }] })
    expect(readEmbeddings(answer, 2)).toEqual([[1, 0], [0, 1]])
  })

  it('refuses anything but one finite vector per input of one length', () => {
    const cases = [
      'not json',
      JSON.stringify({ data: [{ embedding: [1] }] }),
      JSON.stringify({ data: [{ embedding: [1, 'x'] }, { embedding: [1, 2] }] }),
      JSON.stringify({ data: [{ embedding: [1, 2] }, { embedding: [1] }] }),
      JSON.stringify({ data: [{ index: 0, embedding: [1] }, { index: 0, embedding: [2] }] }),
      JSON.stringify({ data: [{ embedding: [] }, { embedding: [] }] }),
      '{"data":[{"embedding":[1e999]},{"embedding":[1]}]}',
    ]
    for (const answer of cases)
      expect(() => readEmbeddings(answer, 2), answer).toThrow(expect.objectContaining({ status: 502, code: 'UPSTREAM_UNAVAILABLE' }))
  })
})

describe('embed through the gateway', () => {
  /** The alias `embed` on the fake upstream. */
  async function route(pricing?: { inputPer1M: number, outputPer1M: number }): Promise<void> {
    fake.reset()
    const { keyId, ciphertext } = gateway.encryptKey('embed', 'k0', 'sk-good')
    await config.set('LLM_ROUTER_CONFIG', { models: { embed: { upstreams: [{ id: 'up-0', baseUrl: fake.url, model: 'text-embedding-3-small', keys: [{ id: keyId, ciphertext }] }], ...(pricing ? { pricing } : {}) } } })
  }

  const logRows = (userId: string) => database.db.selectFrom('llm_request_log').select(['kind', 'model', 'state', 'status']).where('user_id', '=', userId).execute()

  it('answers the upstream\'s vectors in input order and bills the call as kind memory', async () => {
    const userId = `user-${randomUUID()}`
    await route()
    const texts = ['I like green tea', '我住在上海', 'My cat is called Miso']

    expect(await embeddings().embed(userId, 'embed', texts)).toEqual(texts.map(text => fakeEmbedding(text)))
    expect(fake.requests.map(request => request.body)).toMatchObject([{ model: 'text-embedding-3-small', input: texts, encoding_format: 'float' }])
    expect(await logRows(userId)).toEqual([{ kind: 'memory', model: 'embed', state: 'completed', status: 200 }])
  })

  it('makes no call for no texts', async () => {
    await route()
    expect(await embeddings().embed(`user-${randomUUID()}`, 'embed', [])).toEqual([])
    expect(fake.requests).toHaveLength(0)
  })

  it('rejects an answer with another number of vectors, or vectors that are not numbers', async () => {
    const userId = `user-${randomUUID()}`
    await route()
    fake.behave(() => ({ kind: 'status', status: 200, body: { object: 'list', data: [{ object: 'embedding', index: 0, embedding: [0.5, 0.5] }] } }))
    await expect(embeddings().embed(userId, 'embed', ['one', 'two'])).rejects.toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE' })

    fake.behave(() => ({ kind: 'status', status: 200, body: { object: 'list', data: [{ object: 'embedding', index: 0, embedding: ['0.5', null] }] } }))
    await expect(embeddings().embed(userId, 'embed', ['one'])).rejects.toMatchObject({ status: 502, code: 'UPSTREAM_UNAVAILABLE', message: expect.stringContaining('not a list of vectors of numbers') })
  })

  it('passes on the gateway\'s refusals: an unknown alias, and no Flux to pay', async () => {
    const userId = `user-${randomUUID()}`
    await route({ inputPer1M: 1_000_000_000, outputPer1M: 0 })
    await expect(embeddings().embed(userId, 'nope', ['hello'])).rejects.toMatchObject({ status: 404, code: 'MODEL_NOT_FOUND' })
    await expect(embeddings().embed(userId, 'embed', ['hello'])).rejects.toMatchObject({ status: 402, code: 'INSUFFICIENT_FLUX' })
    expect(fake.requests).toHaveLength(0)
  })
})
