import { sql, type ExpressionBuilder } from 'kysely'

import type { Database, Db, Memory } from '@airi/db'

import type { Clock } from '../../clock.ts'
import type { Logger } from '../../logger.ts'
import { beforeCreatedAtId, createCursorCodec, createdAtIdKey, exactTimestamp } from '../../cursor.ts'
import { ApiError, notFound } from '../../errors.ts'
import { keysetPages, pagesById, type ExportTables } from '../account-export/index.ts'
import type { CharacterService } from '../characters/index.ts'
import type { ConfigService } from '../config.ts'
import { cosineSql, type MemoryEmbeddings } from './embeddings.ts'
import type { MemoryAddInput, MemoryListInput, MemorySearchInput, MemorySetSettingsInput, MemoryUpdateInput } from './schema.ts'
import { searchText, tsQuery } from './text.ts'

/** Most memories one user keeps of one character (SPEC §4.16). */
const MAX_MEMORIES_PER_CHARACTER = 2000

/** A memory as procedures return it. */
export interface MemoryItem {
  id: string
  characterId: string
  content: string
  importance: number
  source: 'auto' | 'user'
  createdAt: Date
  updatedAt: Date
  lastUsedAt: Date | null
}

export interface MemoryPage {
  items: MemoryItem[]
  nextCursor: string | null
  /** How many the caller keeps of this character in all, and the most they may. */
  total: number
  limit: number
}

/** A change of one user's memories of one character, for their devices (a `memory` event on their feed). */
export interface MemoryChangeNotice {
  characterId: string
  change: 'added' | 'updated' | 'deleted' | 'settings'
  memories: MemoryItem[]
  ids: string[]
  messageId: string | null
  /** With `settings`: memory is now on (or off) for the character. */
  enabled?: boolean
}

export interface MemoryDeps {
  db: Db
  clock: Clock
  /** Which characters are live: memories are of a character the caller can use. */
  characters: Pick<CharacterService, 'existing'>
  /** Told after each change is committed; its failure is logged, never the caller's. */
  onChanged?: (userId: string, change: MemoryChangeNotice) => Promise<void>
  logger?: Logger
  /** MEMORY_EMBEDDING_MODEL: when set (and `embeddings` given), memories carry embeddings and recall adds cosine similarity. */
  config?: Pick<ConfigService, 'get'>
  embeddings?: { api: MemoryEmbeddings }
}

export type MemoryService = ReturnType<typeof createMemoryService>

/** Memories are listed newest first by (created_at, id), exactly. */
const listCursor = createCursorCodec(createdAtIdKey)

const memoryNotFound = () => notFound('MEMORY_NOT_FOUND', 'No such memory')

/** Every column but those derived from `content` (its search vector and embedding). */
const COLUMNS = ['id', 'user_id', 'character_id', 'content', 'importance', 'source', 'created_at', 'updated_at', 'last_used_at'] as const

function toItem(row: Pick<Memory, typeof COLUMNS[number]>): MemoryItem {
  return {
    id: row.id,
    characterId: row.character_id,
    content: row.content,
    importance: row.importance,
    source: row.source,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastUsedAt: row.last_used_at,
  }
}

const vectorOf = (content: string) => sql<string>`to_tsvector('simple', ${searchText(content)})`

/** Memories recall reads at most, best first, before fitting them to the token budget. */
const RECALL_CANDIDATES = 50
/** Recall adds memories this important even when the message does not mention them (a name, a loss), after those it matched. */
const ALWAYS_RECALLED_IMPORTANCE = 4

/** A cosine similarity at least this high makes a memory relevant to a message without a shared word. */
const SIMILAR = 0.4
/** Memories embedded by one background call. */
const EMBED_BATCH = 100
/** What of a message is embedded for recall: its start says what it is about. */
const MAX_EMBEDDED_CHARS = 8_000

interface QueryEmbedding {
  vector: number[]
  model: string
  pgvector: boolean
}

/** Tokens of a text as the reply's model counts them (the gateway's counter for its alias). */
export interface RecallBudget {
  count: (text: string) => number
  tokens: number
}

/** Memories read for a message, best first, to be fitted to a prompt's budget. */
export interface RecalledMemories {
  /** Those that fit, and how to note that they were used (once the reply no longer waits on the database). */
  within: (budget: RecallBudget) => { lines: string[], markUsed: () => Promise<void> }
}

/**
 * The search score (docs/memory.md#ranking): the text rank of the query's terms,
 * times an importance factor (0.5 for 1 … 1.5 for 5) and a recency factor that
 * halves its bonus every 30 days since the memory was last written or recalled
 * (2 when fresh, towards 1 when old).
 */
function score(query: string, now: Date) {
  return sql<number>`(ts_rank(search_vector, to_tsquery('simple', ${query}))::float8 * ${standing(now)})`
}

/** Importance times recency: how much a memory counts whatever the query. */
function standing(now: Date) {
  // float8 throughout: extract() and decimal literals are numeric, several times slower over 2 000 rows.
  const age = sql`greatest(0, date_part('epoch', ${now}::timestamptz - greatest(updated_at, coalesce(last_used_at, updated_at)))) / 86400`
  return sql<number>`((1 + 0.25::float8 * (importance - 3)) * (1 + power(0.5::float8, ${age} / 30)))`
}

export function createMemoryService({ db, clock, characters, onChanged, logger, config, embeddings }: MemoryDeps) {
  const now = () => new Date(clock.now())
  /** Background embedding per person and character under way here. */
  const embeddingRuns = new Map<string, Promise<void>>()

  /** Tells the user's devices; a change is already stored, so a failed announcement only costs them a re-read. */
  async function announce(userId: string, change: MemoryChangeNotice): Promise<void> {
    await onChanged?.(userId, change).catch((error: unknown) => logger?.warn({ err: error, userId }, 'could not announce a memory change; devices re-read on reconnect'))
  }

  /** 404 with the characters' own code unless the character is live. */
  async function assertCharacter(characterId: string): Promise<void> {
    if (!(await characters.existing([characterId])).has(characterId))
      throw notFound('CHARACTER_NOT_FOUND', 'No such character')
  }

  /**
     * Inserts memories while the user keeps fewer than 2 000 of the character; the
     * count and the inserts hold one lock per user and character, so concurrent adds
     * cannot pass the limit together. Returns those stored.
     */
  async function insert(userId: string, characterId: string, memories: Array<{ content: string, importance: number }>, source: 'auto' | 'user'): Promise<MemoryItem[]> {
    return db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(hashtextextended(${`memory:${userId}:${characterId}`}, 0))`.execute(trx)
      const { count } = await trx.selectFrom('memory').select(eb => eb.fn.countAll<string>().as('count'))
        .where('user_id', '=', userId).where('character_id', '=', characterId).executeTakeFirstOrThrow()
      const room = Math.max(0, MAX_MEMORIES_PER_CHARACTER - Number(count))
      const kept = memories.slice(0, room)
      if (kept.length === 0)
        return []
      const at = now()
      const rows = await trx.insertInto('memory')
        .values(kept.map(({ content, importance }) => {
          const text = content.trim()
          return { user_id: userId, character_id: characterId, content: text, importance, source, search_vector: vectorOf(text), created_at: at, updated_at: at }
        }))
        .returning(COLUMNS).execute()
      return rows.map(toItem)
    })
  }

  /** Whether the person has not turned memory off for the character: a filter of every recall. */
  const memoryOn = (userId: string, characterId: string) => ({ not, exists, selectFrom }: ExpressionBuilder<Database, 'memory'>) =>
    not(exists(selectFrom('memory_settings').select('enabled').where('user_id', '=', userId).where('character_id', '=', characterId).where('enabled', '=', false)))

  /**
   * Recall by text: the message's matches by score, then the important ones it does
   * not match by standing; at most RECALL_CANDIDATES. Two queries at once, each
   * ranking only its own rows and stopping at the limit: one query ordering both
   * kinds together computed every sort key of every candidate (the bench's profile).
   */
  async function rankedByText(userId: string, characterId: string, terms: string | null): Promise<Array<{ id: string, content: string }>> {
    const at = now()
    const mine = db.selectFrom('memory').select(['id', 'content'])
      .where('user_id', '=', userId).where('character_id', '=', characterId).where(memoryOn(userId, characterId))
    const matches = terms === null ? undefined : sql<boolean>`search_vector @@ to_tsquery('simple', ${terms})`
    const [matched, important] = await Promise.all([
      matches ? mine.where(matches).orderBy(score(terms!, at), 'desc').orderBy('created_at', 'desc').orderBy('id', 'desc').limit(RECALL_CANDIDATES).execute() : [],
      mine.where('importance', '>=', ALWAYS_RECALLED_IMPORTANCE).$if(matches !== undefined, query => query.where(sql<boolean>`not (${matches!})`))
        .orderBy(standing(at), 'desc').orderBy('created_at', 'desc').orderBy('id', 'desc').limit(RECALL_CANDIDATES).execute(),
    ])
    return [...matched, ...important].slice(0, RECALL_CANDIDATES)
  }

  /**
   * Recall with embeddings: a memory the message matches by text or is similar to
   * (cosine ≥ SIMILAR) comes first, by (text rank + cosine) × standing; then the
   * important ones. The cosine is computed once per memory, in a materialized CTE.
   */
  async function rankedBySimilarity(userId: string, characterId: string, terms: string | null, query: QueryEmbedding): Promise<Array<{ id: string, content: string }>> {
    const textRank = terms === null ? sql<number>`0::float8` : sql<number>`ts_rank(search_vector, to_tsquery('simple', ${terms}))::float8`
    const matches = terms === null ? sql<boolean>`false` : sql<boolean>`search_vector @@ to_tsquery('simple', ${terms})`
    return db.with(cte => cte('m').materialized(), db => db.selectFrom('memory')
      .select(['id', 'content', 'importance', 'created_at', 'updated_at', 'last_used_at'])
      .select(matches.as('matches')).select(textRank.as('text_rank'))
      .select(sql<number>`coalesce(${cosineSql(query.vector, query)}, 0)`.as('similarity'))
      .where('user_id', '=', userId).where('character_id', '=', characterId)
      .where(memoryOn(userId, characterId)))
      .selectFrom('m').select(['id', 'content'])
      .where(eb => eb.or([eb('matches', '=', true), eb('similarity', '>=', SIMILAR), eb('importance', '>=', ALWAYS_RECALLED_IMPORTANCE)]))
      .orderBy(sql`matches or similarity >= ${SIMILAR}`, 'desc')
      .orderBy(sql`(text_rank + greatest(similarity, 0)) * ${standing(now())}`, 'desc')
      .orderBy(standing(now()), 'desc')
      .orderBy('created_at', 'desc').orderBy('id', 'desc')
      .limit(RECALL_CANDIDATES).execute()
  }

  /** The message's embedding when MEMORY_EMBEDDING_MODEL is set; undefined otherwise, or when it cannot be made (recall goes by text). */
  async function queryEmbedding(userId: string, message: string): Promise<QueryEmbedding | undefined> {
    const model = embeddings && await config?.get('MEMORY_EMBEDDING_MODEL')
    if (!embeddings || !model)
      return undefined
    try {
      const [[vector], pgvector] = await Promise.all([embeddings.api.embed(userId, model, [message.slice(0, MAX_EMBEDDED_CHARS)]), embeddings.api.pgvector()])
      return { vector: vector!, model, pgvector }
    }
    catch (error) {
      logger?.info({ userId, code: error instanceof ApiError ? error.code : undefined, err: error instanceof ApiError ? undefined : error }, 'could not embed a message for recall; recalling by text')
      return undefined
    }
  }

  /**
   * Embeds, in the background, up to EMBED_BATCH of the person's memories of the
   * character that have no embedding by the current model (new, edited, or written
   * before the model was set). One at a time per person and character on this
   * instance, so a burst of adds is not billed twice.
   */
  function embedMissing(userId: string, characterId: string): void {
    const key = `${userId}:${characterId}`
    if (!embeddings || embeddingRuns.has(key))
      return
    const task = (async () => {
      const model = await config?.get('MEMORY_EMBEDDING_MODEL')
      if (!model)
        return
      const rows = await db.selectFrom('memory').select(['id', 'content'])
        .where('user_id', '=', userId).where('character_id', '=', characterId)
        .where(eb => eb.or([eb('embedding_model', 'is', null), eb('embedding_model', '!=', model)]))
        .orderBy('created_at', 'desc').limit(EMBED_BATCH).execute()
      if (rows.length === 0)
        return
      const vectors = await embeddings.api.embed(userId, model, rows.map(row => row.content))
      await embeddings.api.store(userId, model, rows.map((row, index) => ({ id: row.id, embedding: vectors[index]! })))
    })().catch((error: unknown) => logger?.info({ userId, code: error instanceof ApiError ? error.code : undefined, err: error instanceof ApiError ? undefined : error }, 'could not embed memories; they are recalled by text until a later turn embeds them'))
      .finally(() => embeddingRuns.delete(key))
    embeddingRuns.set(key, task)
  }

  return {
    /** Waits for the embeddings being made in the background (shutdown; the gateway ends their calls). */
    async close(): Promise<void> {
      await Promise.all(embeddingRuns.values())
    },

    /** The caller's memories of a character, newest first, keyset-paged, with how many there are in all. */
    async list(userId: string, { characterId, cursor, limit = 20 }: MemoryListInput): Promise<MemoryPage> {
      await assertCharacter(characterId)
      const [rows, { count }] = await Promise.all([
        db.selectFrom('memory').select(COLUMNS).select(exactTimestamp('created_at').as('created_at_text'))
          .where('user_id', '=', userId).where('character_id', '=', characterId)
          .$if(cursor !== undefined, query => query.where(beforeCreatedAtId(listCursor.decode(cursor!))))
          .orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit + 1).execute(),
        // On the list's index: at most 2 000 entries to count.
        db.selectFrom('memory').select(eb => eb.fn.countAll<string>().as('count'))
          .where('user_id', '=', userId).where('character_id', '=', characterId).executeTakeFirstOrThrow(),
      ])
      const page = rows.slice(0, limit)
      const last = page.at(-1)
      return {
        items: page.map(toItem),
        nextCursor: rows.length > limit && last ? listCursor.encode([last.created_at_text, last.id]) : null,
        total: Number(count),
        limit: MAX_MEMORIES_PER_CHARACTER,
      }
    },

    /**
     * A new memory the person wrote (`source` 'user'). 409 `MEMORY_LIMIT_REACHED`
     * when they already keep 2 000 of this character.
     */
    async add(userId: string, { characterId, content, importance = 3 }: MemoryAddInput): Promise<MemoryItem> {
      await assertCharacter(characterId)
      const [item] = await insert(userId, characterId, [{ content, importance }], 'user')
      if (!item)
        throw new ApiError(409, 'MEMORY_LIMIT_REACHED', `This character already keeps ${MAX_MEMORIES_PER_CHARACTER} memories of you; delete some first`, { limit: MAX_MEMORIES_PER_CHARACTER })
      await announce(userId, { characterId, change: 'added', memories: [item], ids: [item.id], messageId: null })
      embedMissing(userId, characterId)
      return item
    },

    /**
     * Memories extraction found in the turn that `messageId` answered (`source`
     * 'auto'), as many as the limit leaves room for; the rest are dropped. The
     * caller has checked them against what is remembered (`recallFor`).
     */
    async addExtracted(userId: string, characterId: string, memories: Array<{ content: string, importance: number }>, messageId: string): Promise<MemoryItem[]> {
      const items = await insert(userId, characterId, memories, 'auto')
      if (items.length > 0) {
        await announce(userId, { characterId, change: 'added', memories: items, ids: items.map(item => item.id), messageId })
        embedMissing(userId, characterId)
      }
      return items
    },

    /** Changes a memory's content or importance; 404 `MEMORY_NOT_FOUND` for anyone else's. */
    async update(userId: string, { id, content, importance }: MemoryUpdateInput): Promise<MemoryItem> {
      const text = content?.trim()
      const row = await db.updateTable('memory')
        .set({ updated_at: now() })
        // A new text's old embedding would recall it for what it used to say.
        .$if(text !== undefined, query => query.set({ content: text!, search_vector: vectorOf(text!), embedding: null, embedding_model: null }))
        .$if(importance !== undefined, query => query.set({ importance: importance! }))
        .where('id', '=', id).where('user_id', '=', userId)
        .returning(COLUMNS).executeTakeFirst()
      if (!row)
        throw memoryNotFound()
      const item = toItem(row)
      await announce(userId, { characterId: item.characterId, change: 'updated', memories: [item], ids: [item.id], messageId: null })
      if (text !== undefined)
        embedMissing(userId, item.characterId)
      return item
    },

    /** Forgets one memory; 404 `MEMORY_NOT_FOUND` for anyone else's. */
    async delete(userId: string, id: string): Promise<{ id: string }> {
      const row = await db.deleteFrom('memory').where('id', '=', id).where('user_id', '=', userId).returning('character_id').executeTakeFirst()
      if (!row)
        throw memoryNotFound()
      await announce(userId, { characterId: row.character_id, change: 'deleted', memories: [], ids: [id], messageId: null })
      return { id }
    },

    /**
     * The caller's memories of a character that match `query` (any of its words or
     * CJK bigrams), best first by `score`; ties newest first. Empty when the query
     * has no searchable term.
     */
    async search(userId: string, { characterId, query, limit = 10 }: MemorySearchInput): Promise<Array<MemoryItem & { score: number }>> {
      await assertCharacter(characterId)
      const terms = tsQuery(query)
      if (terms === null)
        return []
      const rows = await db.selectFrom('memory').select(COLUMNS).select(score(terms, now()).as('score'))
        .where('user_id', '=', userId).where('character_id', '=', characterId)
        .where(sql<boolean>`search_vector @@ to_tsquery('simple', ${terms})`)
        .orderBy('score', 'desc').orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute()
      return rows.map(row => ({ ...toItem(row), score: row.score }))
    },

    /**
     * What a reply to `message` should know (docs/memory.md#recall): the memories
     * the message matches, best first, then the most important ones it does not
     * mention (none when the person turned memory off for the character). Read at
     * once; `within` then keeps as many as fit a token budget (one line each), and
     * its `markUsed` sets their `lastUsedAt` when the reply has its answer.
     * Split in two so a turn can read memories before it knows its model's tokenizer.
     */
    async recall(userId: string, characterId: string, message: string): Promise<RecalledMemories> {
      const terms = tsQuery(message)
      const query = await queryEmbedding(userId, message)
      const rows = query ? await rankedBySimilarity(userId, characterId, terms, query) : await rankedByText(userId, characterId, terms)
      // Memories written before the embedding model was set (or changed) get their embeddings now, for the next turns.
      if (query)
        embedMissing(userId, characterId)
      return {
        within(budget: RecallBudget) {
          const kept: Array<{ id: string, content: string }> = []
          let left = budget.tokens
          for (const row of rows) {
            // A memory that does not fit is skipped, not cut: a shorter one after it may.
            const cost = budget.count(`- ${row.content}\n`)
            if (cost > left)
              continue
            left -= cost
            kept.push(row)
          }
          const usedAt = now()
          return {
            lines: kept.map(row => row.content),
            markUsed: async () => {
              if (kept.length > 0)
                await db.updateTable('memory').set({ last_used_at: usedAt }).where('user_id', '=', userId).where('id', 'in', kept.map(row => row.id)).execute()
            },
          }
        },
      }
    },

    /** Whether the caller has memory on for a character (on unless they turned it off). */
    async settings(userId: string, characterId: string): Promise<{ characterId: string, enabled: boolean }> {
      await assertCharacter(characterId)
      const row = await db.selectFrom('memory_settings').select('enabled')
        .where('user_id', '=', userId).where('character_id', '=', characterId).executeTakeFirst()
      return { characterId, enabled: row?.enabled ?? true }
    },

    /** Turns memory on or off for a character; off stops extraction and recall, and keeps what is stored. */
    async setSettings(userId: string, { characterId, enabled }: MemorySetSettingsInput): Promise<{ characterId: string, enabled: boolean }> {
      await assertCharacter(characterId)
      const at = now()
      await db.insertInto('memory_settings').values({ user_id: userId, character_id: characterId, enabled, updated_at: at })
        .onConflict(oc => oc.columns(['user_id', 'character_id']).doUpdateSet({ enabled, updated_at: at })).execute()
      await announce(userId, { characterId, change: 'settings', memories: [], ids: [], messageId: null, enabled })
      return { characterId, enabled }
    },

    /** The characters were deleted: every user's memories and settings of them go too. Idempotent. */
    async deleteForCharacters(characterIds: string[]): Promise<void> {
      if (characterIds.length === 0)
        return
      await db.deleteFrom('memory').where('character_id', 'in', characterIds).execute()
      await db.deleteFrom('memory_settings').where('character_id', 'in', characterIds).execute()
    },

    /** Account export: the user's memories (without the derived search vector) and settings. */
    exportTables(userId: string): ExportTables {
      return {
        memory: pagesById(async (afterId, limit) => db.selectFrom('memory').select(COLUMNS).where('user_id', '=', userId)
          .$if(afterId !== undefined, query => query.where('id', '>', afterId!))
          .orderBy('id').limit(limit).execute()),
        memory_settings: keysetPages(async (after: { character_id: string } | undefined, limit) => db.selectFrom('memory_settings').selectAll().where('user_id', '=', userId)
          .$if(after !== undefined, query => query.where('character_id', '>', after!.character_id))
          .orderBy('character_id').limit(limit).execute()),
      }
    },

    /** Account deletion (priority 30), idempotent: every memory and setting of the user. */
    async deleteAllForUser(userId: string): Promise<void> {
      await db.deleteFrom('memory').where('user_id', '=', userId).execute()
      await db.deleteFrom('memory_settings').where('user_id', '=', userId).execute()
    },
  }
}
