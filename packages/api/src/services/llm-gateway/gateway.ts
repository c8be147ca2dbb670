import { randomUUID } from 'node:crypto'

import type { Db, LlmCallKind } from '@airi/db'

import type { Clock } from '../../clock.ts'
import { ApiError, outageError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import { withSpan } from '../../tracing.ts'
import type { BillingService } from '../billing/index.ts'
import type { ConfigService } from '../config.ts'
import type { KeyVault } from '../key-vault.ts'
import { resolveAlias } from '../model-alias.ts'
import type { UpstreamKeyPool } from '../upstream-keys.ts'
import { createCallBilling } from './billing.ts'
import { createCallSignal } from './call-signal.ts'
import { embeddingsAnswer, inputOf, type EmbeddingsBody } from './embeddings.ts'
import { requestLogExportTables } from './export.ts'
import { failureOf, type CallEnds, type Failure } from './failure.ts'
import { relayStream } from './relay.ts'
import { createRequestLog, type ReconcileReport } from './request-log.ts'
import { capFor, priceOf, requestedCap, withCap, type CallBounds } from './reservation.ts'
import { createUpstreamRouter, type Attempt, type ChatCompletionBody, type RouterConfig } from './router.ts'
import { reserveCall, type ReservedCall, type Settlement } from './settlement.ts'
import { startCallTelemetry, type CallTelemetry } from './telemetry.ts'
import { addChoices, countPrompt, promptOf, TextTally, tokenCounterFor, TOKENS_PER_MESSAGE, usageIn, type Usage } from './usage.ts'

export type { ChatCompletionBody } from './router.ts'
export type { EmbeddingsBody } from './embeddings.ts'

type CallSignal = ReturnType<typeof createCallSignal>
export type {  ReconcileReport } from './request-log.ts'

type AliasEntry = RouterConfig['models'][string]

/** What `/models` shows of an alias's price: the per-token rates, in Flux. */
function publicPrice({ inputPer1M, outputPer1M, cachedInputPer1M }: NonNullable<AliasEntry['pricing']>) {
  return { inputPer1M, outputPer1M, ...(cachedInputPer1M === undefined ? {} : { cachedInputPer1M }), unit: 'flux' as const }
}

export type CompletionResult =
  /** The upstream's JSON answer as it sent it (parsed once for its usage, never serialized again). */
  | { kind: 'json', text: string }
  /**
   * `signal` aborts when the call is cut short (client, deadline, shutdown): stop
   * waiting on a slow reader then. `settled` resolves once the call is billed
   * (undefined when settling failed and reconciliation will do it).
   */
  | { kind: 'stream', chunks: AsyncIterable<string>, signal: AbortSignal, settled: Promise<Settlement | undefined> }

export interface ReserveOptions {
  /** The call's id (its ledger rows and log row), when the caller recorded it first; a new UUID by default. */
  callId?: string
  /** What its usage row calls it: `reply` for a reply the server makes in a chat; `llm` by default. */
  kind?: LlmCallKind
  /**
   * A check made alongside the call's preparation (the caller's rate limit, a
   * round trip to the counters), awaited before anything is reserved: its
   * rejection refuses the call with nothing written.
   */
  admitted?: Promise<unknown>
  /** The personal API key the client used: on the call's rows; the reservation keeps within its budget. */
  apiKey?: { keyId: string }
}

/** A call whose Flux is reserved and whose upstreams are not called yet (see `reserve`). */
export interface ReservedCompletion {
  callId: string
  /** The alias the call resolved to (the router's default when the body named none). */
  alias: string
  /** Calls the upstreams; when none answers the reservation is refunded and this throws. */
  start: () => Promise<CompletionResult>
  /** Gives the whole reservation back without calling an upstream. */
  cancel: (reason: string) => Promise<void>
  /**
   * After `start`: ends the call and gives the whole reservation back, even when
   * an upstream answered, because nothing of the answer will be delivered (its
   * caller failed to store what it needed first). A stream is settled so once it
   * ends (read or not); `start` rejects when no upstream had answered yet.
   */
  abandon: (reason: string) => void
}

export interface LlmGatewayDeps {
  db: Db
  config: ConfigService
  billing: BillingService
  metrics: Metrics
  logger: Logger
  /** The envelope-encryption vault; undefined when LLM_ROUTER_MASTER_KEY is not configured. */
  keyVault: KeyVault | undefined
  /** The process's one upstream key pool (rotation and cooldowns shared with speech). */
  keyPool: UpstreamKeyPool
  /** Call durations and the reconciliation cutoff read the time here. */
  clock: Clock
}

/** Whole-chain deadline when the router config names none. */
const DEFAULT_DEADLINE_MS = 120_000

/** Reconciliation leaves alone what a live call may still settle: its deadline plus this. */
const SETTLEMENT_MARGIN_MS = 60_000

const shuttingDown = () => new ApiError(503, 'SHUTTING_DOWN', 'The server is shutting down; retry the call')

/** What a plain (non-streamed) answer is billed on; throws when the answer is not one the call asked for. */
type ReadAnswer = (payload: unknown) => { usage: Usage | undefined, completion: TextTally }

/** A chat completion: the upstream's usage, and its choices' text for counting when it gave none. */
const chatAnswer: ReadAnswer = (payload) => {
  const completion = new TextTally()
  addChoices(completion, payload, 'message')
  return { usage: usageIn(payload), completion }
}

/**
 * The OpenAI-compatible gateway: routes a model alias to its upstreams and keys,
 * falls back across them, and bills every call exactly once: a reservation sized
 * on the request before any upstream call (the upstream is asked for no more
 * output than it pays for), a settlement on the upstream's usage (or, when it
 * gave none, our own token count of the prompt and of what was relayed), a
 * refund when every upstream failed. Each call's `llm_request_log` row is
 * written pending first, so a call cut short by a crash can be reconciled.
 */
export function createLlmGateway({ db, config, billing, metrics, logger, keyVault, keyPool, clock }: LlmGatewayDeps) {
  const router = createUpstreamRouter({ keyPool, logger, metrics })
  const callBilling = createCallBilling({ billing, logger })
  const requestLog = createRequestLog({ db, logger, clock })

  /** Calls not yet settled, so shutdown can end them and wait for their settlement. */
  const open = new Map<string, { shutdown: AbortController, settled: Promise<void> }>()
  let closing = false

  function track(callId: string) {
    const shutdown = new AbortController()
    let untrack!: () => void
    const settled = new Promise<void>((resolve) => {
      untrack = () => {
        open.delete(callId)
        resolve()
      }
    })
    open.set(callId, { shutdown, settled })
    return { shutdown, untrack }
  }

  /**
   * A call's lifetime: tracked for shutdown, bounded by the whole-chain deadline
   * (and by `signals`); `done` releases both, once, whatever the path.
   */
  function openCall(routes: RouterConfig, signals: AbortSignal[]) {
    const { shutdown, untrack } = track(randomUUID())
    const deadline = createCallSignal([...signals, shutdown.signal], routes.deadlineMs ?? DEFAULT_DEADLINE_MS)
    // Nothing of a settled call stays reachable: its timer and listeners go with it.
    let finished = false
    const done = () => {
      if (finished)
        return
      finished = true
      deadline.release()
      untrack()
    }
    return { shutdown, deadline, done }
  }

  async function routerConfig(): Promise<RouterConfig> {
    return config.getOrThrow('LLM_ROUTER_CONFIG')
  }

  async function deadlineMs(): Promise<number> {
    const routes = await config.getOptional('LLM_ROUTER_CONFIG').catch(() => undefined)
    return routes?.deadlineMs ?? DEFAULT_DEADLINE_MS
  }

  /**
   * What the request may cost: the prompt counted with the first upstream's
   * tokenizer, the output it may ask for (`cap` per choice), and the alias's
   * price (the flat rule when it has none).
   */
  async function boundsOf(prompt: ReturnType<typeof promptOf>, { upstreams, pricing }: AliasEntry, { cap, choices }: { cap: number, choices: number }): Promise<CallBounds> {
    const upstreamModel = upstreams[0]!.model
    const [per1k, flat] = await Promise.all([config.get('FLUX_PER_1K_TOKENS'), config.get('FLUX_PER_REQUEST')])
    const promptTokens = await countPrompt(upstreamModel, prompt).catch((error: unknown) => {
      // A character per token overestimates almost any text: the reservation errs on the safe side.
      logger.error({ err: error }, 'could not count the prompt of an LLM call; reserving a character per token')
      return prompt.tally.chars
    })
    return { promptTokens, cap, choices, price: priceOf(pricing, per1k), flat, floor: pricing?.reserve ?? flat }
  }

  /** A call reserved and not yet sent: what `callUpstream` needs. */
  interface Prepared {
    callId: string
    alias: string
    upstreams: AliasEntry['upstreams']
    upstreamBody: ChatCompletionBody
    stream: boolean
    signal: AbortSignal
    ends: CallEnds
    reserved: ReservedCall
    telemetry: CallTelemetry
    /** Aborted by `abandon`: the call ends and gives its whole reservation back. */
    abandoned: AbortSignal
  }

  /** Resolves the alias, sizes and takes the reservation (402 here, before any upstream is called). */
  async function prepare(userId: string, body: ChatCompletionBody, clientSignal: AbortSignal, routes: RouterConfig, shutdown: AbortController, deadline: CallSignal, abandoned: AbortSignal, options: ReserveOptions): Promise<Prepared> {
    const { alias, entry } = resolveAlias(routes, body.model)
    const { upstreams } = entry
    const callId = options.callId ?? randomUUID()
    const prompt = promptOf(body)
    const bounds = await boundsOf(prompt, entry, { cap: requestedCap(body) ?? entry.maxOutputTokens, choices: body.n ?? 1 })
    const stream = body.stream === true
    await options.admitted
    const telemetry = startCallTelemetry({ metrics, clock, alias, upstreams, callId, stream })
    const ends: CallEnds = { shutdown: shutdown.signal, clientSignal, deadline, closing: () => closing }
    const reserved = await reserveCall({ requestLog, callBilling, logger }, { userId, callId, alias, bounds, prompt, telemetry, kind: options.kind ?? 'llm', apiKeyId: options.apiKey?.keyId })
    // The upstream is asked for no more output than the reservation pays for.
    const upstreamBody = withCap(body, capFor(reserved.call.reserved, bounds))
    return { callId, alias, upstreams, upstreamBody, stream, signal: deadline.signal, ends, reserved, telemetry, abandoned }
  }

  /** The router's answer to a reserved call; when every upstream failed, the reservation is refunded and this throws. */
  async function attemptOrRefund(reserved: ReservedCall, telemetry: CallTelemetry, signal: AbortSignal, ends: CallEnds, call: () => Promise<Attempt>): Promise<Attempt> {
    try {
      return await withSpan(telemetry.span, call)
    }
    catch (error) {
      // The router turns every upstream failure into an ApiError; anything else is a bug here.
      const failure: Failure = error instanceof ApiError || signal.aborted ? failureOf(error, ends) : { status: 500, code: 'INTERNAL_ERROR', message: (error as Error).message }
      await reserved.refund(null, failure.status, failure.message)
      if (failure.status === 503 || failure.status === 504)
        throw new ApiError(failure.status, failure.code, failure.message)
      throw error
    }
  }

  /** Calls the upstreams of a reserved call; `untrack` is called once the call has settled, whatever the path. */
  async function callUpstream({ callId, alias, upstreams, upstreamBody, stream, signal, ends, reserved, telemetry, abandoned }: Prepared, untrack: () => void): Promise<CompletionResult> {
    const attempt = await attemptOrRefund(reserved, telemetry, signal, ends, () => router.call(alias, upstreams, upstreamBody, stream, signal))
    if (!stream)
      return { kind: 'json', text: await answerJson(reserved, attempt, signal, ends, chatAnswer) }

    // Nothing of an answer reaches the client unless its log row names the upstream
    // (reconciliation charges such a row and refunds one without). The write goes
    // while the upstream sends its first chunk; the relay waits for it before
    // handing that chunk out, and a failed write ends the call refunded.
    let unnamed: unknown
    const naming = reserved.answered(attempt.upstream.id).catch((error: unknown) => {
      unnamed = error ?? new Error('could not name the upstream')
    })
    let settledWith!: (settlement: Settlement | undefined) => void
    const settled = new Promise<Settlement | undefined>((resolve) => {
      settledWith = resolve
    })
    const chunks = relayStream({
      response: attempt.response,
      signal,
      failureOf: error => failureOf(error, ends),
      clock,
      beforeFirstChunk: async () => {
        await naming
        if (unnamed !== undefined)
          throw outageError(unnamed) ?? new ApiError(500, 'INTERNAL_ERROR', 'The call could not be recorded; nothing was charged')
      },
      onFirstText: () => telemetry.firstToken(attempt.upstream.model),
      end: async (relayed, outcome) => {
        let settlement: Settlement | undefined
        try {
          await naming
          if (abandoned.aborted || unnamed !== undefined) {
            // Nothing of the answer was delivered (its caller could not use it, or its row could not name the upstream): it costs nothing.
            const why = unnamed === undefined ? 'abandoned by its caller' : `the upstream could not be recorded: ${(unnamed as Error).message}`
            await reserved.refund(unnamed === undefined ? attempt.upstream.id : null, unnamed === undefined ? 499 : 500, why)
            settlement = { upstream: attempt.upstream.id, status: unnamed === undefined ? 499 : 500, error: why, flux: 0 }
          }
          else {
            settlement = await reserved.settle(attempt.upstream, relayed.usage, relayed.completion, outcome, relayed.firstTextAt)
          }
        }
        catch (error) {
          logger.error({ err: error, call: callId }, 'could not settle a streamed LLM call; its log row stays pending for reconciliation')
          telemetry.observe({ upstream: attempt.upstream.id, status: 500, error: (error as Error).message })
        }
        finally {
          untrack()
          settledWith(settlement)
        }
      },
    })
    return { kind: 'stream', chunks, signal, settled }
  }

  /**
   * Reads a non-streamed answer and settles on it before it goes out, so the
   * settlement's statement is the only write after the reservation. When settling
   * fails the answer is still the client's once its log row names the upstream
   * (reconciliation then charges the flat price); when even that fails, it is not
   * delivered and reconciliation refunds the reservation.
   */
  async function answerJson(reserved: ReservedCall, attempt: Attempt, signal: AbortSignal, ends: CallEnds, read: ReadAnswer): Promise<string> {
    const { upstream, response } = attempt
    let text: string
    let answer: ReturnType<ReadAnswer>
    try {
      text = await response.text()
      answer = read(JSON.parse(text))
    }
    catch (error) {
      const failure = signal.aborted ? failureOf(error, ends) : { status: 502, code: 'UPSTREAM_UNAVAILABLE', message: error instanceof SyntaxError ? 'The upstream answered with something that is not JSON' : `The upstream's answer is unusable: ${(error as Error).message}` }
      await reserved.refund(upstream.id, failure.status, (error as Error).message)
      throw new ApiError(failure.status === 499 ? 502 : failure.status, failure.code, failure.message, { lastStatus: response.status })
    }
    try {
      await reserved.settle(upstream, answer.usage, answer.completion, { status: response.status })
    }
    catch (error) {
      logger.error({ err: error, call: reserved.call.id }, 'could not settle an LLM call; its log row stays pending for reconciliation')
      await reserved.answered(upstream.id)
    }
    return text
  }

  return {
    /**
     * Encrypts an upstream key for LLM_ROUTER_CONFIG on the server, so the plaintext
     * never passes through argv, shell history or logs.
     */
    encryptKey(model: string, keyId: string, apiKey: string): { keyId: string, ciphertext: string } {
      if (!keyVault)
        throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })
      return { keyId, ciphertext: keyVault.encrypt(model, keyId, apiKey) }
    },

    /**
     * The alias `model` resolves to (the router's default when undefined; 404 for
     * an unknown one) and a counter of tokens as that alias's first upstream
     * counts them: what an in-process caller sizes a prompt with.
     */
    async tokenCounter(model: string | undefined): Promise<{ alias: string, count: (text: string) => number, perMessage: number }> {
      const { alias, entry } = resolveAlias(await routerConfig(), model)
      return { alias, count: await tokenCounterFor(entry.upstreams[0]!.model), perMessage: TOKENS_PER_MESSAGE }
    },

    /**
     * How long after it began a call can no longer be running anywhere: its
     * deadline plus the settlement margin (what reconciliation waits too). A reply
     * still marked streaming past this lost its instance.
     */
    async staleAfterMs(): Promise<number> {
      return await deadlineMs() + SETTLEMENT_MARGIN_MS
    },

    /** The aliases callers may name, OpenAI-shaped, each with its price when it has one. */
    async listModels() {
      const routes = await routerConfig()
      return { object: 'list' as const, data: Object.entries(routes.models).map(([id, { pricing }]) => ({ id, object: 'model' as const, created: 0, owned_by: 'airi', ...(pricing ? { pricing: publicPrice(pricing) } : {}) })) }
    },

    /**
     * Reserves a call's Flux (402 `INSUFFICIENT_FLUX` here, 404 for an unknown
     * model) without calling an upstream yet. The caller then `start`s it, or
     * `cancel`s it to give the whole reservation back. In-process callers (a reply
     * made on the server) use this to learn that a call is paid for before they
     * store anything.
     */
    async reserve(userId: string, body: ChatCompletionBody, clientSignal: AbortSignal, options: ReserveOptions = {}): Promise<ReservedCompletion> {
      if (closing)
        throw shuttingDown()
      const routes = await routerConfig()
      const abandonment = new AbortController()
      const { shutdown, deadline, done: settled } = openCall(routes, [clientSignal, abandonment.signal])
      let prepared: Prepared
      try {
        prepared = await prepare(userId, body, clientSignal, routes, shutdown, deadline, abandonment.signal, options)
      }
      catch (error) {
        settled()
        throw error
      }
      return {
        callId: prepared.callId,
        alias: prepared.alias,
        async start(): Promise<CompletionResult> {
          let result: CompletionResult | undefined
          try {
            result = await callUpstream(prepared, settled)
            return result
          }
          finally {
            // A stream is untracked when it settles; everything else is done here.
            if (result?.kind !== 'stream')
              settled()
          }
        },
        async cancel(reason: string): Promise<void> {
          try {
            await prepared.reserved.refund(null, 499, reason)
          }
          finally {
            settled()
          }
        },
        abandon(reason: string): void {
          abandonment.abort(new Error(reason))
        },
      }
    },

    /**
     * One chat completion for `userId`. Non-streaming: answers after settlement.
     * Streaming: the chunks are relayed as they come and the call settles after the
     * last one, or when it is cut short (the client leaves, the deadline passes,
     * the server shuts down) on what was relayed.
     */
    async complete(userId: string, body: ChatCompletionBody, clientSignal: AbortSignal, options: Pick<ReserveOptions, 'admitted' | 'apiKey'> = {}): Promise<CompletionResult> {
      return (await this.reserve(userId, body, clientSignal, options)).start()
    },

    /**
     * One embeddings call for `userId` (docs/gateway.md#embeddings): reserved on
     * our count of the input at the alias's input price (or the flat rule), routed
     * to the alias's upstreams like a chat call, settled on the upstream's
     * `prompt_tokens` and never above the reservation. Answers the upstream's JSON
     * as it sent it.
     */
    async embed(userId: string, body: EmbeddingsBody, clientSignal: AbortSignal, options: ReserveOptions = {}): Promise<string> {
      if (closing)
        throw shuttingDown()
      const routes = await routerConfig()
      const { alias, entry } = resolveAlias(routes, body.model)
      const { shutdown, deadline, done } = openCall(routes, [clientSignal])
      try {
        const callId = options.callId ?? randomUUID()
        const input = inputOf(body)
        // Nothing is generated: the reservation is the input alone.
        const bounds = await boundsOf(input, entry, { cap: 0, choices: 1 })
        await options.admitted
        const telemetry = startCallTelemetry({ metrics, clock, alias, upstreams: entry.upstreams, callId, stream: false, operation: 'embeddings' })
        const ends: CallEnds = { shutdown: shutdown.signal, clientSignal, deadline, closing: () => closing }
        const reserved = await reserveCall({ requestLog, callBilling, logger }, { userId, callId, alias, bounds, prompt: input, telemetry, kind: options.kind ?? 'embedding', capped: true, apiKeyId: options.apiKey?.keyId })
        const attempt = await attemptOrRefund(reserved, telemetry, deadline.signal, ends, () => router.call(alias, entry.upstreams, body, false, deadline.signal, 'embeddings'))
        return await answerJson(reserved, attempt, deadline.signal, ends, embeddingsAnswer(input.count))
      }
      finally {
        done()
      }
    },

    /**
     * Stops taking new calls; calls under way go on. The host calls this when it
     * starts shutting down, so streams it has to cut at its deadline are logged as
     * ended by the shutdown.
     */
    stopAccepting(): void {
      closing = true
    },

    /**
     * Ends every call still under way (a stream gets an error event and its end)
     * and waits until each has settled on what was relayed. Called by `api.close()`.
     */
    async close(): Promise<void> {
      closing = true
      const calls = [...open.values()]
      for (const { shutdown } of calls)
        shutdown.abort(new Error('the server is shutting down'))
      await Promise.all(calls.map(({ settled }) => settled))
      await router.close()
    },

    /**
     * Settles the calls whose log row is still pending `olderThanMs` after it was
     * written: calls that a process crash cut short. Rows younger than the deadline
     * plus a margin are never touched, since a live call may still settle them.
     */
    async reconcilePending({ olderThanMs = 10 * 60_000, limit = 1000 }: { olderThanMs?: number, limit?: number } = {}): Promise<ReconcileReport> {
      const minimum = await deadlineMs() + SETTLEMENT_MARGIN_MS
      const cutoff = new Date(clock.now() - Math.max(olderThanMs, minimum))
      return requestLog.reconcile({ cutoff, limit, flat: await config.get('FLUX_PER_REQUEST'), billing, callBilling })
    },

    /** Account export: the user's calls in the request log. */
    exportTables: (userId: string) => requestLogExportTables(db, userId),
  }
}

export type LlmGateway = ReturnType<typeof createLlmGateway>
