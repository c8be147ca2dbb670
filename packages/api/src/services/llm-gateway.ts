import { randomUUID } from 'node:crypto'

import type { Db } from '@airi/db'
import { sql } from 'kysely'

import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import { recordFailure, tracer, withSpan } from '../tracing.ts'
import type { BillingService } from './billing.ts'
import type { ConfigService } from './config.ts'
import type { KeyVault } from './key-vault.ts'
import { createCallBilling, type BilledCall, type ServedCost } from './llm-gateway/billing.ts'
import { createCallSignal } from './llm-gateway/call-signal.ts'
import { createRequestLog, type CallOutcome, type ReconcileReport } from './llm-gateway/request-log.ts'
import { capFor, requestedCap, reservationFor, usageCost, withCap, type CallBounds } from './llm-gateway/reservation.ts'
import { createUpstreamRouter, resolveAlias, type Attempt, type ChatCompletionBody, type RouterConfig } from './llm-gateway/router.ts'
import { addChoices, countPrompt, countUsage, createStreamWatcher, promptOf, TextTally, tokensOf, usageIn, type MeasuredUsage } from './llm-gateway/usage.ts'

export type { ChatCompletionBody } from './llm-gateway/router.ts'

type CallSignal = ReturnType<typeof createCallSignal>
export type { ReconcileOutcome, ReconcileReport } from './llm-gateway/request-log.ts'

export type CompletionResult =
  | { kind: 'json', body: unknown }
  /** `signal` aborts when the call is cut short (client, deadline, shutdown): stop waiting on a slow reader then. */
  | { kind: 'stream', chunks: AsyncIterable<string>, signal: AbortSignal }

export interface LlmGatewayDeps {
  db: Db
  config: ConfigService
  billing: BillingService
  metrics: Metrics
  logger: Logger
  /** The envelope-encryption vault; undefined when LLM_ROUTER_MASTER_KEY is not configured. */
  keyVault: KeyVault | undefined
  /** Whole-chain deadline when the router config names none. */
  defaultDeadlineMs?: number
}

/** Reconciliation leaves alone what a live call may still settle: its deadline plus this. */
const SETTLEMENT_MARGIN_MS = 60_000

const shuttingDown = () => new ApiError(503, 'SHUTTING_DOWN', 'The server is shutting down; retry the call')

/** How a call ended, for the log and for an error event on a stream already under way. */
interface Failure {
  status: number
  code: string
  message: string
}

/** An SSE event in OpenAI's error shape: the official clients raise it as an APIError. */
function errorEvent(failure: Failure): string {
  const type = failure.status === 502 ? 'upstream_error' : 'server_error'
  return `data: ${JSON.stringify({ error: { message: failure.message, type, code: failure.code } })}\n\n`
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
export function createLlmGateway({ db, config, billing, metrics, logger, keyVault, defaultDeadlineMs = 120_000 }: LlmGatewayDeps) {
  const router = createUpstreamRouter({ keyVault, logger, metrics })
  const callBilling = createCallBilling({ billing, logger })
  const requestLog = createRequestLog({ db, logger })

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

  async function routerConfig(): Promise<RouterConfig> {
    return config.getOrThrow('LLM_ROUTER_CONFIG')
  }

  async function deadlineMs(): Promise<number> {
    const routes = await config.getOptional('LLM_ROUTER_CONFIG').catch(() => undefined)
    return routes?.deadlineMs ?? defaultDeadlineMs
  }

  /**
   * What the request may cost: the prompt counted with the first upstream's
   * tokenizer, and the output it may ask for (its own cap, else the alias's).
   */
  async function boundsOf(body: ChatCompletionBody, prompt: ReturnType<typeof promptOf>, upstreamModel: string, maxOutputTokens: number): Promise<CallBounds> {
    const [per1k, flat] = await Promise.all([config.get('FLUX_PER_1K_TOKENS'), config.get('FLUX_PER_REQUEST')])
    const promptTokens = await countPrompt(upstreamModel, prompt).catch((error: unknown) => {
      // A character per token overestimates almost any text: the reservation errs on the safe side.
      logger.error({ err: error }, 'could not count the prompt of an LLM call; reserving a character per token')
      return prompt.tally.chars
    })
    // One price for input and output today; a per-model price plugs in here.
    const price = { inputPer1k: per1k, outputPer1k: per1k }
    return { promptTokens, cap: requestedCap(body) ?? maxOutputTokens, choices: body.n ?? 1, price, flat }
  }

  /** One chat completion; `untrack` is called once the call has settled, whatever the path. */
  async function run(userId: string, body: ChatCompletionBody, clientSignal: AbortSignal, routes: RouterConfig, shutdown: AbortController, deadline: CallSignal, untrack: () => void): Promise<CompletionResult> {
    const { alias, upstreams, maxOutputTokens } = resolveAlias(routes, body.model)
    const callId = randomUUID()
    const prompt = promptOf(body)
    const bounds = await boundsOf(body, prompt, upstreams[0]!.model, maxOutputTokens)
    const startedAt = Date.now()
    const stream = body.stream === true
    const signal = deadline.signal
    // The call's span lives until it settles (a stream's last chunk), with one child per upstream attempt.
    const span = tracer.startSpan(`chat ${alias}`, { attributes: { 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': alias, 'airi.llm.call_id': callId, 'airi.llm.stream': stream } })
    let observed = false
    /** Records the call's duration, tokens and outcome once, whichever path ends it. */
    function observe(outcome: { upstream: string | null, status: number, usage?: MeasuredUsage['usage'], error?: string }): void {
      if (observed)
        return
      observed = true
      const responseModel = upstreams.find(upstream => upstream.id === outcome.upstream)?.model
      const attributes = {
        'gen_ai.operation.name': 'chat',
        'gen_ai.request.model': alias,
        ...(responseModel ? { 'gen_ai.response.model': responseModel } : {}),
        ...(outcome.error ? { 'error.type': String(outcome.status) } : {}),
      }
      metrics.genAiDuration.record((Date.now() - startedAt) / 1000, attributes)
      if (outcome.usage?.prompt_tokens !== undefined)
        metrics.genAiTokens.record(outcome.usage.prompt_tokens, { ...attributes, 'gen_ai.token.type': 'input' })
      if (outcome.usage?.completion_tokens !== undefined)
        metrics.genAiTokens.record(outcome.usage.completion_tokens, { ...attributes, 'gen_ai.token.type': 'output' })
      span.setAttributes({ 'http.response.status_code': outcome.status, ...(responseModel ? { 'gen_ai.response.model': responseModel } : {}) })
      if (outcome.usage?.prompt_tokens !== undefined)
        span.setAttribute('gen_ai.usage.input_tokens', outcome.usage.prompt_tokens)
      if (outcome.usage?.completion_tokens !== undefined)
        span.setAttribute('gen_ai.usage.output_tokens', outcome.usage.completion_tokens)
      if (outcome.error)
        recordFailure(span, new Error(outcome.error), outcome.status)
      span.end()
    }

    /** Why the call stopped early, checked in the order that names the real cause. */
    function failureOf(error: unknown): Failure {
      // During shutdown the host cuts the connections still open at its deadline.
      if (shutdown.signal.aborted || (closing && clientSignal.aborted))
        return { status: 503, code: 'SHUTTING_DOWN', message: 'The server is shutting down' }
      if (clientSignal.aborted)
        return { status: 499, code: 'CLIENT_CLOSED', message: 'client went away' }
      if (deadline.timedOut)
        return { status: 504, code: 'DEADLINE_EXCEEDED', message: 'The upstreams did not answer in time' }
      if (error instanceof ApiError)
        return { status: error.status, code: error.code, message: error.message }
      return { status: 502, code: 'UPSTREAM_UNAVAILABLE', message: `The upstream stream failed: ${(error as Error).message}` }
    }

    const { rowId, alongside: pendingRow } = requestLog.pending({ userId, id: callId, alias })
    const complete = (outcome: Omit<CallOutcome, 'startedAt'>) => {
      observe(outcome)
      return requestLog.complete(rowId, { ...outcome, startedAt })
    }
    /** The log row's completion, to run in the statement of a ledger write. */
    const completion = (outcome: Omit<CallOutcome, 'startedAt' | 'flux'>) => {
      observe(outcome)
      return requestLog.completion(rowId, { ...outcome, startedAt })
    }

    // The reservation, with the pending log row: nothing reaches an upstream unless it can be paid for.
    let call: BilledCall
    try {
      call = { userId, id: callId, alias, reserved: await callBilling.reserve({ userId, id: callId, alias }, reservationFor(bounds), pendingRow) }
    }
    catch (error) {
      await complete({ upstream: null, status: error instanceof ApiError ? error.status : 500, flux: 0, error: (error as Error).message })
        .catch((logError: unknown) => logger.error({ err: logError, call: callId }, 'could not complete the LLM request log row; it stays pending'))
      throw error
    }
    // The upstream is asked for no more output than the reservation pays for.
    const upstreamBody = withCap(body, capFor(call.reserved, bounds))

    /** Gives the reservation back and completes the log row, in one statement. */
    const refund = (upstream: string | null, status: number, message: string) =>
      callBilling.refund(call, 'failed', { alongside: () => completion({ upstream, status, error: message })(sql<number>`0`) })

    let attempt: Attempt
    try {
      attempt = await withSpan(span, () => router.call(alias, upstreams, upstreamBody, stream, signal))
    }
    catch (error) {
      // The router turns every upstream failure into an ApiError; anything else is a bug here.
      const failure: Failure = error instanceof ApiError || signal.aborted ? failureOf(error) : { status: 500, code: 'INTERNAL_ERROR', message: (error as Error).message }
      await refund(null, failure.status, failure.message)
      if (failure.status === 503 || failure.status === 504)
        throw new ApiError(failure.status, failure.code, failure.message)
      throw error
    }
    const upstream = attempt.upstream
    // Nothing of an answer reaches the client unless its row names the upstream:
    // reconciliation refunds a pending row without one (nothing was delivered)
    // and charges the flat price of one with it (something may have been).
    try {
      await requestLog.answered(rowId, upstream.id)
    }
    catch (error) {
      attempt.response.body?.cancel().catch(() => {})
      await refund(null, 500, (error as Error).message).catch((refundError: unknown) =>
        logger.error({ err: refundError, call: call.id }, 'could not refund an LLM call; its row stays pending for reconciliation'))
      throw error
    }

    /**
     * Settles on the upstream's usage, else on our count of the prompt and of
     * `tally`; the log row completes in the same statement as the ledger write,
     * or on its own when nothing has to move.
     */
    async function settle(usage: ReturnType<typeof usageIn>, tally: TextTally, outcome: { status: number, error?: string }): Promise<void> {
      let measured: MeasuredUsage | undefined = usage && { usage, source: 'upstream' }
      if (!measured) {
        measured = await countUsage(upstream.model, prompt, tally).catch((error: unknown) => {
          logger.error({ err: error, call: call.id }, 'could not count the tokens of an LLM call; it pays the flat price')
          return undefined
        })
      }
      const served: ServedCost = measured
        ? { cost: usageCost(bounds.price, measured.usage), tokens: tokensOf(measured.usage).total }
        : { cost: bounds.flat, tokens: null }
      const logOutcome = { upstream: upstream.id, ...outcome, usage: measured?.usage, source: measured?.source ?? 'flat' as const }
      const { charged, logged } = await callBilling.settle(call, served, completion(logOutcome))
      if (!logged)
        await complete({ ...logOutcome, flux: charged })
    }

    if (!stream) {
      let payload: unknown
      try {
        payload = await attempt.response.json()
      }
      catch (error) {
        const failure = signal.aborted ? failureOf(error) : { status: 502, code: 'UPSTREAM_UNAVAILABLE', message: 'The upstream answered with something that is not JSON' }
        await refund(upstream.id, failure.status, (error as Error).message)
        throw new ApiError(failure.status === 499 ? 502 : failure.status, failure.code, failure.message, { lastStatus: attempt.response.status })
      }
      const completion = new TextTally()
      addChoices(completion, payload, 'message')
      try {
        await settle(usageIn(payload), completion, { status: attempt.response.status })
      }
      catch (error) {
        // The row names its upstream: reconciliation charges the flat price, and the answer is the client's.
        logger.error({ err: error, call: call.id }, 'could not settle an LLM call; its log row stays pending for reconciliation')
      }
      return { kind: 'json', body: payload }
    }

    const response = attempt.response
    const watcher = createStreamWatcher()
    let started = false
    let settled = false

    async function finish(outcome: { status: number, error?: string }): Promise<void> {
      if (settled)
        return
      settled = true
      try {
        await settle(watcher.usage, watcher.completion, outcome)
      }
      catch (error) {
        logger.error({ err: error, call: call.id }, 'could not settle a streamed LLM call; its log row stays pending for reconciliation')
        observe({ upstream: upstream.id, status: 500, error: (error as Error).message })
      }
      finally {
        untrack()
      }
    }

    // A stream cut short before the transport began reading it settles here.
    const endUnstarted = (): void => {
      if (started)
        return
      response.body?.cancel().catch(() => {})
      const failure = failureOf(signal.reason)
      void finish({ status: failure.status, error: failure.message })
    }
    if (signal.aborted)
      endUnstarted()
    else
      signal.addEventListener('abort', endUnstarted, { once: true })

    async function* relay(): AsyncGenerator<string> {
      started = true
      let outcome: { status: number, error?: string } | undefined
      // True while the consumer holds a chunk; still true here means it stopped reading.
      let handedOut = false
      let handedFirst = false
      const decoder = new TextDecoder()
      try {
        for await (const bytes of response.body as unknown as AsyncIterable<Uint8Array>) {
          const text = decoder.decode(bytes, { stream: true })
          if (!text)
            continue
          if (!handedFirst) {
            handedFirst = true
            metrics.genAiFirstToken.record((Date.now() - startedAt) / 1000, { 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': alias, 'gen_ai.response.model': upstream.model })
          }
          handedOut = true
          yield text
          handedOut = false
          // Counted once the transport has taken it: what was relayed, not what was read.
          watcher.feed(text)
        }
        const rest = decoder.decode()
        if (rest) {
          handedOut = true
          yield rest
          handedOut = false
          watcher.feed(rest)
        }
        outcome = { status: response.status }
      }
      catch (error) {
        const failure = failureOf(error)
        outcome = { status: failure.status, error: failure.message }
        // A consumer that stopped reading takes no error event (and waiting for it would never settle).
        if (failure.status !== 499 && !handedOut)
          yield errorEvent(failure)
      }
      finally {
        // Unset: the consumer stopped reading, because its client left or the call was cut short.
        if (!outcome) {
          const failure = failureOf(signal.reason)
          outcome = signal.aborted ? { status: failure.status, error: failure.message } : { status: 499, error: 'client went away' }
        }
        await finish(outcome)
      }
    }
    return { kind: 'stream', chunks: relay(), signal }
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

    /** The aliases callers may name, OpenAI-shaped. */
    async listModels() {
      const routes = await routerConfig()
      return { object: 'list' as const, data: Object.keys(routes.models).map(id => ({ id, object: 'model' as const, created: 0, owned_by: 'airi' })) }
    },

    /**
     * One chat completion for `userId`. Non-streaming: answers after settlement.
     * Streaming: the chunks are relayed as they come and the call settles after the
     * last one, or when it is cut short (the client leaves, the deadline passes,
     * the server shuts down) on what was relayed.
     */
    async complete(userId: string, body: ChatCompletionBody, clientSignal: AbortSignal): Promise<CompletionResult> {
      if (closing)
        throw shuttingDown()
      const routes = await routerConfig()
      const { shutdown, untrack } = track(randomUUID())
      const deadline = createCallSignal([clientSignal, shutdown.signal], routes.deadlineMs ?? defaultDeadlineMs)
      // Nothing of a settled call stays reachable: its timer and listeners go with it.
      const settled = () => {
        deadline.release()
        untrack()
      }
      let result: CompletionResult | undefined
      try {
        result = await run(userId, body, clientSignal, routes, shutdown, deadline, settled)
        return result
      }
      finally {
        // A stream is untracked when it settles; everything else is done here.
        if (result?.kind !== 'stream')
          settled()
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
    },

    /**
     * Settles the calls whose log row is still pending `olderThanMs` after it was
     * written: calls that a process crash cut short. Rows younger than the deadline
     * plus a margin are never touched, since a live call may still settle them.
     */
    async reconcilePending({ olderThanMs = 10 * 60_000, limit = 1000 }: { olderThanMs?: number, limit?: number } = {}): Promise<ReconcileReport> {
      const minimum = await deadlineMs() + SETTLEMENT_MARGIN_MS
      const cutoff = new Date(Date.now() - Math.max(olderThanMs, minimum))
      return requestLog.reconcile({ cutoff, limit, flat: await config.get('FLUX_PER_REQUEST'), billing, callBilling })
    },
  }
}

export type LlmGateway = ReturnType<typeof createLlmGateway>
