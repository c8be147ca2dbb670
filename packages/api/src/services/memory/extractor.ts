import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { ConfigService } from '../config.ts'
import type { LlmGateway } from '../llm-gateway/index.ts'
import { extractionRequest, freshMemories, parseExtraction } from './extraction.ts'
import type { MemoryService } from './service.ts'

/** A completed reply, as extraction reads it. */
export interface CompletedTurn {
  userId: string
  characterId: string
  /** The stored assistant message: the "remembered" note goes under it. */
  messageId: string
  userMessage: string
  reply: string
  /** The person's preferred language, when known. */
  language?: string
}

/**
 * Extractions one instance holds at once, running or queued. A turn past it is not
 * extracted (logged): each holds a gateway call or waits for one.
 */
const MAX_RUNNING = 64
/** What is already remembered is looked up this many at a time (the message's matches, then the facts'). */
const REMEMBERED_LOOKUP = 20

export interface MemoryExtractorDeps {
  memory: Pick<MemoryService, 'settings' | 'search' | 'addExtracted'>
  gateway: Pick<LlmGateway, 'reserve'>
  config: Pick<ConfigService, 'get'>
  logger: Logger
}

/**
 * Automatic extraction, the I/O half (the contract is in `extraction.ts`): after a
 * reply is stored, one JSON-mode gateway call billed to the person (usage kind
 * `memory`) asks for durable facts in the turn; the new ones are stored as `auto`
 * memories. It runs beside the reply's end, never before it, and its failure is
 * only logged: the reply is already the person's. Nothing of it survives a crash or
 * a shutdown (docs/memory.md#when).
 *
 * One user's extractions run one after another, in the order their replies ended:
 * a turn's duplicate check then sees what the turn before it stored, so two quick
 * turns that say the same thing store it once.
 */
export function createMemoryExtractor({ memory, gateway, config, logger }: MemoryExtractorDeps) {
  const running = new Set<Promise<void>>()
  /** Each user's last extraction: the next one starts after it. */
  const queues = new Map<string, Promise<void>>()
  const stop = new AbortController()

  async function extract(turn: CompletedTurn, model: string): Promise<void> {
    const { userId, characterId } = turn
    if (!(await memory.settings(userId, characterId)).enabled)
      return
    const remembered = (await memory.search(userId, { characterId, query: turn.userMessage, limit: REMEMBERED_LOOKUP })).map(item => item.content)
    const request = extractionRequest({ model, lastUserMessage: turn.userMessage, reply: turn.reply, remembered, language: turn.language })
    const call = await gateway.reserve(userId, request, stop.signal, { kind: 'memory' })
    const result = await call.start()
    if (result.kind !== 'json')
      throw new Error('an extraction call answered with a stream')
    const parsed = parseExtraction(answerText(result.text))
    if (!parsed.ok) {
      logger.warn({ userId, characterId, call: call.callId, reason: parsed.reason }, 'memory extraction answered something other than the memories object; nothing stored')
      return
    }
    if (parsed.dropped > 0)
      logger.info({ userId, characterId, call: call.callId, dropped: parsed.dropped }, 'memory extraction items left out (malformed or beyond the limit)')
    if (parsed.memories.length === 0)
      return
    // The facts' own matches too: a fact may repeat a memory the message's words did not find.
    const similar = await memory.search(userId, { characterId, query: parsed.memories.map(item => item.content).join('\n'), limit: REMEMBERED_LOOKUP })
    const fresh = freshMemories(parsed.memories, [...remembered, ...similar.map(item => item.content)])
    if (fresh.length > 0)
      await memory.addExtracted(userId, characterId, fresh, turn.messageId)
  }

  return {
    /**
     * Starts extraction for a completed reply when `MEMORY_EXTRACTION_MODEL` is set
     * and the person has memory on for the character. Returns at once.
     */
    afterReply(turn: CompletedTurn): void {
      if (stop.signal.aborted)
        return
      if (running.size >= MAX_RUNNING) {
        logger.warn({ userId: turn.userId, running: running.size }, 'too many memory extractions under way; this turn is not extracted')
        return
      }
      const before = queues.get(turn.userId) ?? Promise.resolve()
      const task: Promise<void> = before
        .then(() => stop.signal.aborted ? undefined : config.get('MEMORY_EXTRACTION_MODEL'))
        .then(model => model === undefined ? undefined : extract(turn, model))
        .catch((error: unknown) => {
          // The person's balance ran out, the character was deleted, the alias is wrong: nothing to remember this time.
          if (error instanceof ApiError)
            logger.info({ userId: turn.userId, code: error.code }, 'memory extraction did not run')
          else
            logger.error({ err: error, userId: turn.userId }, 'memory extraction failed')
        })
        .finally(() => {
          running.delete(task)
          if (queues.get(turn.userId) === task)
            queues.delete(turn.userId)
        })
      running.add(task)
      queues.set(turn.userId, task)
    },

    /** Ends the extractions under way (their calls end like a client that left) and waits for them. */
    async close(): Promise<void> {
      stop.abort(new Error('the server is shutting down'))
      await Promise.all(running)
    },
  }
}


/** The first choice's message content of a chat completion's JSON ('' when there is none). */
function answerText(text: string): string {
  try {
    const content = (JSON.parse(text) as { choices?: Array<{ message?: { content?: unknown } }> }).choices?.[0]?.message?.content
    return typeof content === 'string' ? content : ''
  }
  catch {
    return ''
  }
}
