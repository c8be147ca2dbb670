import { sql, type RawBuilder } from 'kysely'
import { z } from 'zod'

import type { Db } from '@airi/db'

import type { Logger } from '../../logger.ts'
import { ApiError } from '../../errors.ts'
import type { LlmGateway } from '../llm-gateway/index.ts'

/**
 * Embeddings of memories (SPEC §4.16, docs/memory.md): the gateway call that makes
 * them, their storage in `memory.embedding` (`real[]`) with the alias that made
 * them, and the SQL of their cosine similarity to a query, for recall to add to the
 * text rank.
 *
 * Vectors are stored at unit length, so the cosine is a plain dot product in SQL
 * (no norms to sum per row). Over `real[]` it costs ~0.1 ms per memory of 1 536
 * dimensions: ~200 ms to rank 2 000 of them on a loaded 2-core machine, half of the
 * textbook `from unnest(a, b)` cosine (docs/memory.md). Where the `vector` extension
 * is installed the same columns are cast to it instead.
 */

/** One gateway call's bounds (docs/gateway.md#embeddings); a caller batches within them. */
const MAX_EMBED_TEXTS = 2048
const MAX_EMBED_TEXT_CHARS = 32_768
const MAX_EMBED_TOTAL_CHARS = 1_048_576
/** pgvector's `vector` holds at most 16 000 dimensions; a longer vector could never be cast to it. */
const MAX_EMBEDDING_DIMENSIONS = 16_000

const embedInput = z.object({
  alias: z.string().min(1).max(200),
  texts: z.array(z.string().min(1).max(MAX_EMBED_TEXT_CHARS)).max(MAX_EMBED_TEXTS)
    .refine(texts => texts.reduce((sum, text) => sum + text.length, 0) <= MAX_EMBED_TOTAL_CHARS, { message: `at most ${MAX_EMBED_TOTAL_CHARS} characters in all` }),
})

/** OpenAI's answer, floats only (we ask for them); `index` when the upstream gives it. */
const embeddingsAnswer = z.object({
  data: z.array(z.object({
    index: z.number().int().nonnegative().optional(),
    embedding: z.array(z.number().finite()).min(1).max(MAX_EMBEDDING_DIMENSIONS),
  })),
})

const storeInput = z.object({
  userId: z.string().min(1),
  alias: z.string().min(1).max(200),
  rows: z.array(z.object({ id: z.string().min(1), embedding: z.array(z.number().finite()).min(1).max(MAX_EMBEDDING_DIMENSIONS) })),
})

const unusable = (why: string) => new ApiError(502, 'UPSTREAM_UNAVAILABLE', `The embedding model's answer is unusable: ${why}`)

/** The vector at unit length, or null when it has no direction (every component 0). */
function unitVector(vector: readonly number[]): number[] | null {
  let squares = 0
  for (const value of vector)
    squares += value * value
  const norm = Math.sqrt(squares)
  return norm > 0 && Number.isFinite(norm) ? vector.map(value => value / norm) : null
}

/**
 * The vectors of an answer in input order: one per input, each finite and all of
 * one length. Items are ordered by `index` when every item has one (OpenAI's
 * shape), else taken in the order sent.
 */
export function readEmbeddings(answerText: string, inputs: number): number[][] {
  let json: unknown
  try {
    json = JSON.parse(answerText)
  }
  catch {
    throw unusable('not JSON')
  }
  const parsed = embeddingsAnswer.safeParse(json)
  if (!parsed.success)
    throw unusable('not a list of vectors of numbers')
  const { data } = parsed.data
  if (data.length !== inputs)
    throw unusable(`${data.length} vectors for ${inputs} texts`)
  const indexed = data.every(item => item.index !== undefined)
  const vectors: number[][] = indexed ? Array.from({ length: inputs }) : data.map(item => item.embedding)
  if (indexed) {
    for (const { index, embedding } of data) {
      if (index! >= inputs || vectors[index!] !== undefined)
        throw unusable('the indexes are not one per text')
      vectors[index!] = embedding
    }
  }
  if (vectors.some(vector => vector.length !== vectors[0]!.length))
    throw unusable('vectors of different lengths')
  return vectors
}

export type MemoryEmbeddings = ReturnType<typeof createMemoryEmbeddings>

export function createMemoryEmbeddings({ db, gateway, logger }: { db: Db, gateway: Pick<LlmGateway, 'embed'>, logger: Logger }) {
  let pgvectorKnown: boolean | undefined

  return {
    /**
     * One gateway call, billed to `userId` and shown in usage as kind `memory`, that
     * embeds `texts` with `alias`: the vectors in input order (as the model gave
     * them, not normalised). Rejects with the gateway's ApiError (402
     * `INSUFFICIENT_FLUX`, 404 `MODEL_NOT_FOUND`, 502 …), or 502
     * `UPSTREAM_UNAVAILABLE` for an answer that is not one finite vector per text of
     * one common length (that call is billed: the upstream did answer). Floats are
     * asked for rather than base64: every OpenAI-compatible server speaks them (some
     * ignore `base64`), and memories are short, so the larger answer costs little.
     */
    async embed(userId: string, alias: string, texts: string[], signal?: AbortSignal): Promise<number[][]> {
      const input = embedInput.parse({ alias, texts })
      if (input.texts.length === 0)
        return []
      const answer = await gateway.embed(userId, { model: input.alias, input: input.texts, encoding_format: 'float' }, signal ?? new AbortController().signal, { kind: 'memory' })
      return readEmbeddings(answer, input.texts.length)
    },

    /**
     * Whether pgvector's `vector` type is installed and on the search path, so
     * `cosineSql` may cast to it. Read once and kept; a failed read answers false
     * (the plain SQL works everywhere) and is tried again next time.
     */
    async pgvector(): Promise<boolean> {
      if (pgvectorKnown !== undefined)
        return pgvectorKnown
      try {
        const { rows } = await sql<{ available: boolean }>`select exists(select 1 from pg_extension where extname = 'vector') and to_regtype('vector') is not null as available`.execute(db)
        pgvectorKnown = rows[0]?.available === true
        return pgvectorKnown
      }
      catch (error) {
        logger.warn({ err: error }, 'could not tell whether pgvector is installed; comparing embeddings in plain SQL')
        return false
      }
    },

    /**
     * Stores the embeddings of the caller's memories, made by `alias`, in one
     * statement; ids of anyone else's memories (or none) are skipped. Each vector is
     * stored at unit length (what `cosineSql` expects); a vector with no direction
     * is stored as no embedding, marked with `alias` all the same, so it is not
     * embedded again and never compared.
     */
    async store(userId: string, alias: string, rows: Array<{ id: string, embedding: number[] }>): Promise<void> {
      const input = storeInput.parse({ userId, alias, rows })
      if (input.rows.length === 0)
        return
      const values = input.rows.map(row => sql`(${row.id}, ${unitVector(row.embedding)}::real[])`)
      await sql`update memory set embedding = v.embedding, embedding_model = ${input.alias}
        from (values ${sql.join(values)}) as v (id, embedding)
        where memory.id = v.id and memory.user_id = ${input.userId}`.execute(db)
    },
  }
}

/**
 * The cosine similarity (−1 … 1) between a memory row's `embedding` and `query`,
 * as SQL over the `memory` table. Null when the row was embedded by another model
 * than `model` (its dimensions mean nothing to this one: the filter is here so no
 * caller can forget it), has no embedding, or has another length; null for every
 * row when `query` has no direction. The query is one parameter (an array), at unit
 * length like the stored vectors, so the cosine is their dot product; with
 * `pgvector`, pgvector's cosine distance on `::vector` casts instead.
 */
export function cosineSql(query: readonly number[], { pgvector, model }: { pgvector: boolean, model: string }): RawBuilder<number | null> {
  const unit = unitVector(query)
  if (!unit)
    return sql<null>`null::float8`
  const comparable = sql`embedding_model = ${model} and cardinality(embedding) = ${unit.length}`
  // Two set-returning functions in one select list advance in lockstep (the guard
  // makes the lengths equal), and skip the tuplestore that `from unnest(a, b)`
  // fills per row: ~40% faster. float8 query and sum: 1 536 terms add up without
  // float4's rounding, at no measurable cost.
  const similarity = pgvector
    ? sql`1 - (embedding::vector <=> ${unit}::real[]::vector)`
    : sql`(select sum(a * b) from (select unnest(embedding) as a, unnest(${unit}::float8[]) as b) as t)`
  return sql<number | null>`(case when ${comparable} then ${similarity} end)`
}
