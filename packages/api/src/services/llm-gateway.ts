import { randomUUID } from 'node:crypto'

import type { Db } from '@airi/db'

import type { ConfigValue } from '../config/entries.ts'
import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import type { BillingService } from './billing.ts'
import type { ConfigService } from './config.ts'
import { KeyDecryptError, type KeyVault } from './key-vault.ts'

type RouterConfig = ConfigValue<'LLM_ROUTER_CONFIG'>
type Upstream = RouterConfig['models'][string]['upstreams'][number]

/** The OpenAI chat-completions body, validated by the transport; other fields pass through. */
export interface ChatCompletionBody {
  model: string
  messages: unknown[]
  stream?: boolean | null
  stream_options?: Record<string, unknown> | null
  [field: string]: unknown
}

interface Usage {
  prompt_tokens?: number
  completion_tokens?: number
  total_tokens?: number
}

export type CompletionResult =
  | { kind: 'json', body: unknown }
  | { kind: 'stream', chunks: AsyncIterable<string> }

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

/** How long a key is left alone after the upstream refused it. */
const COOLDOWN_MS = { auth: 5 * 60_000, rateLimited: 30_000 } as const

const upstreamError = (lastStatus: number | undefined, reason: string) =>
  new ApiError(502, 'UPSTREAM_UNAVAILABLE', `Every upstream failed (last: ${reason})`, { lastStatus: lastStatus ?? null })

function tokensOf(usage: Usage | undefined): { prompt: number | null, completion: number | null, total: number | null } {
  if (!usage)
    return { prompt: null, completion: null, total: null }
  const total = usage.total_tokens ?? ((usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0))
  return { prompt: usage.prompt_tokens ?? null, completion: usage.completion_tokens ?? null, total }
}

/** The `usage` of one SSE `data:` line, if it carries one (OpenAI sends it in the last chunk). */
function usageIn(line: string): Usage | undefined {
  if (!line.startsWith('data:') || !line.includes('"usage"'))
    return undefined
  try {
    return (JSON.parse(line.slice(5).trim()) as { usage?: Usage | null }).usage ?? undefined
  }
  catch {
    // Not JSON (e.g. `[DONE]`): no usage here.
    return undefined
  }
}

/** Reads an abandoned response to the end so its connection goes back to the pool. */
async function drain(response: Response): Promise<void> {
  await response.arrayBuffer().catch(() => {})
}

/**
 * The OpenAI-compatible gateway: routes a model alias to its upstreams and keys,
 * falls back across them, and bills every call exactly once: a reservation before
 * any upstream call, a settlement (extra charge or refund) when usage is known,
 * a refund when every upstream failed. Each ledger write has its own request id
 * derived from the call's, so retries inside the service can never double-charge.
 */
export function createLlmGateway({ db, config, billing, metrics, logger, keyVault, defaultDeadlineMs = 120_000 }: LlmGatewayDeps) {
  const cooldowns = new Map<string, number>()
  const rotation = new Map<string, number>()

  async function routerConfig(): Promise<RouterConfig> {
    return config.getOrThrow('LLM_ROUTER_CONFIG')
  }

  function resolveAlias(routes: RouterConfig, requested: string | undefined): { alias: string, upstreams: Upstream[] } {
    const alias = requested || routes.defaultModel
    const model = alias ? routes.models[alias] : undefined
    if (!alias || !model)
      throw new ApiError(404, 'MODEL_NOT_FOUND', `The model ${JSON.stringify(requested ?? '')} does not exist`, { param: 'model' })
    return { alias, upstreams: model.upstreams }
  }

  /** The upstream's keys to try, round-robin, skipping those cooling down. */
  function keysInTurn(upstream: Upstream): Upstream['keys'] {
    const now = Date.now()
    const start = rotation.get(upstream.id) ?? 0
    rotation.set(upstream.id, start + 1)
    const ordered = upstream.keys.map((_, index) => upstream.keys[(start + index) % upstream.keys.length]!)
    return ordered.filter(key => (cooldowns.get(`${upstream.id}:${key.id}`) ?? 0) <= now)
  }

  function coolDown(upstream: Upstream, keyId: string, ms: number): void {
    cooldowns.set(`${upstream.id}:${keyId}`, Date.now() + ms)
  }

  interface Attempt {
    response: Response
    upstream: Upstream
  }

  /**
   * Tries every healthy key of every upstream in order until one answers 2xx.
   * 401/403/429 cool the key down; 429, 5xx, connection errors and timeouts move
   * on; any other 4xx is the caller's mistake and is returned as it is.
   */
  async function callUpstreams(alias: string, upstreams: Upstream[], body: ChatCompletionBody, stream: boolean, signal: AbortSignal): Promise<Attempt> {
    let lastStatus: number | undefined
    let lastReason = 'no usable key'
    for (const upstream of upstreams) {
      for (const key of keysInTurn(upstream)) {
        if (signal.aborted)
          throw signal.reason
        let apiKey: string
        try {
          if (!keyVault)
            throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })
          apiKey = keyVault.decrypt(alias, key.id, key.ciphertext)
        }
        catch (error) {
          if (!(error instanceof KeyDecryptError))
            throw error
          logger.error({ model: alias, upstream: upstream.id, keyId: key.id }, 'an upstream key cannot be decrypted (wrong master key or AAD); skipping it')
          coolDown(upstream, key.id, COOLDOWN_MS.auth)
          lastReason = `key ${key.id} of ${upstream.id} cannot be decrypted`
          continue
        }

        const attemptSignal = upstream.timeoutMs ? AbortSignal.any([signal, AbortSignal.timeout(upstream.timeoutMs)]) : signal
        let response: Response
        try {
          response = await fetch(`${upstream.baseUrl.replace(/\/$/, '')}/chat/completions`, {
            method: 'POST',
            headers: { 'authorization': `Bearer ${apiKey}`, 'content-type': 'application/json', 'accept': stream ? 'text/event-stream' : 'application/json' },
            body: JSON.stringify({
              ...body,
              model: upstream.model,
              ...(stream ? { stream: true, stream_options: { ...body.stream_options, include_usage: true } } : {}),
            }),
            signal: attemptSignal,
          })
        }
        catch (error) {
          if (signal.aborted)
            throw signal.reason
          lastReason = `${upstream.id}: ${attemptSignal.aborted ? 'timed out' : (error as Error).message}`
          logger.warn({ upstream: upstream.id, keyId: key.id, reason: lastReason }, 'upstream call failed; trying the next')
          continue
        }

        if (response.ok)
          return { response, upstream }
        lastStatus = response.status
        lastReason = `${upstream.id} answered ${response.status}`
        if (response.status === 401 || response.status === 403)
          coolDown(upstream, key.id, COOLDOWN_MS.auth)
        if (response.status === 429) {
          const retryAfter = Number(response.headers.get('retry-after'))
          coolDown(upstream, key.id, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : COOLDOWN_MS.rateLimited)
        }
        if (response.status >= 400 && response.status < 500 && ![401, 403, 408, 409, 429].includes(response.status)) {
          const detail = await response.json().catch(() => undefined) as { error?: { message?: string } } | undefined
          throw new ApiError(response.status, 'UPSTREAM_REJECTED', detail?.error?.message ?? `The upstream refused the request (${response.status})`, { upstream: upstream.id })
        }
        await drain(response)
        logger.warn({ upstream: upstream.id, keyId: key.id, status: response.status }, 'upstream refused; trying the next')
      }
    }
    throw upstreamError(lastStatus, lastReason)
  }

  /** Charges (or refunds) the difference between the reservation and the real cost. */
  async function settle(call: { userId: string, id: string, alias: string, reserved: number }, usage: Usage | undefined): Promise<{ cost: number, charged: number }> {
    const flux = tokensOf(usage)
    const cost = flux.total === null
      ? call.reserved
      : Math.max(1, Math.ceil(flux.total * await config.get('FLUX_PER_1K_TOKENS') / 1000))
    const difference = cost - call.reserved
    const metadata = { model: call.alias, call: call.id, tokens: flux.total }
    if (difference > 0) {
      try {
        const entry = await billing.debit({ userId: call.userId, amount: difference, requestId: `llm:${call.id}:settle`, description: `LLM usage (${call.alias})`, metadata })
        return { cost, charged: call.reserved + entry.amount }
      }
      catch (error) {
        if (!(error instanceof ApiError && error.code === 'INSUFFICIENT_FLUX'))
          throw error
        // The balance ran out during the call: what could not be charged is counted, not lost.
        metrics.fluxUnbilled.add(difference)
        logger.warn({ userId: call.userId, call: call.id, unbilled: difference }, 'LLM usage exceeded the balance')
        return { cost, charged: call.reserved }
      }
    }
    if (difference < 0)
      await billing.credit({ userId: call.userId, amount: -difference, requestId: `llm:${call.id}:refund`, description: `LLM reservation returned (${call.alias})`, metadata })
    return { cost, charged: cost }
  }

  async function refund(call: { userId: string, id: string, alias: string, reserved: number }): Promise<void> {
    await billing.credit({ userId: call.userId, amount: call.reserved, requestId: `llm:${call.id}:refund`, description: `LLM call failed (${call.alias})`, metadata: { model: call.alias, call: call.id } })
  }

  async function log(row: { userId: string, id: string, alias: string, upstream: string | null, status: number, startedAt: number, usage?: Usage, flux: number, error?: string }): Promise<void> {
    const tokens = tokensOf(row.usage)
    await db.insertInto('llm_request_log').values({
      user_id: row.userId,
      request_id: row.id,
      model: row.alias,
      upstream: row.upstream,
      status: row.status,
      duration_ms: Date.now() - row.startedAt,
      prompt_tokens: tokens.prompt,
      completion_tokens: tokens.completion,
      total_tokens: tokens.total,
      flux_consumed: row.flux,
      error: row.error ?? null,
    }).execute().catch((error: unknown) => logger.error({ err: error, call: row.id }, 'could not write the LLM request log'))
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
     * last one (or when the caller goes away).
     */
    async complete(userId: string, body: ChatCompletionBody, clientSignal: AbortSignal): Promise<CompletionResult> {
      const routes = await routerConfig()
      const { alias, upstreams } = resolveAlias(routes, body.model)
      const call = { userId, id: randomUUID(), alias, reserved: await config.get('FLUX_PER_REQUEST') }
      const startedAt = Date.now()
      const stream = body.stream === true
      const deadline = AbortSignal.timeout(routes.deadlineMs ?? defaultDeadlineMs)
      const signal = AbortSignal.any([clientSignal, deadline])

      // The reservation: nothing reaches an upstream unless it can be paid for.
      await billing.debit({ userId, amount: call.reserved, requestId: `llm:${call.id}:reserve`, description: `LLM call (${alias})`, metadata: { model: alias, call: call.id }, allowPartial: false })

      let attempt: Attempt
      try {
        attempt = await callUpstreams(alias, upstreams, body, stream, signal)
      }
      catch (error) {
        await refund(call)
        const failure = deadline.aborted && !clientSignal.aborted
          ? new ApiError(504, 'DEADLINE_EXCEEDED', 'The upstreams did not answer in time')
          : error
        await log({ userId, id: call.id, alias, upstream: null, status: failure instanceof ApiError ? failure.status : 499, startedAt, flux: 0, error: (failure as Error).message })
        throw failure
      }

      if (!stream) {
        let payload: { usage?: Usage }
        try {
          payload = await attempt.response.json() as { usage?: Usage }
        }
        catch (error) {
          await refund(call)
          await log({ userId, id: call.id, alias, upstream: attempt.upstream.id, status: 502, startedAt, flux: 0, error: (error as Error).message })
          throw new ApiError(502, 'UPSTREAM_UNAVAILABLE', 'The upstream answered with something that is not JSON', { lastStatus: attempt.response.status })
        }
        const { charged } = await settle(call, payload.usage)
        await log({ userId, id: call.id, alias, upstream: attempt.upstream.id, status: attempt.response.status, startedAt, usage: payload.usage, flux: charged })
        return { kind: 'json', body: payload }
      }

      const response = attempt.response
      async function* relay(): AsyncGenerator<string> {
        let usage: Usage | undefined
        let buffered = ''
        let failure: string | undefined
        const decoder = new TextDecoder()
        try {
          for await (const bytes of response.body as unknown as AsyncIterable<Uint8Array>) {
            const text = decoder.decode(bytes, { stream: true })
            buffered += text
            // Watch the event boundaries for the usage chunk; relay the bytes untouched.
            let boundary = buffered.indexOf('\n\n')
            while (boundary >= 0) {
              const event = buffered.slice(0, boundary)
              buffered = buffered.slice(boundary + 2)
              for (const line of event.split('\n'))
                usage = usageIn(line) ?? usage
              boundary = buffered.indexOf('\n\n')
            }
            yield text
          }
        }
        catch (error) {
          failure = signal.aborted ? (clientSignal.aborted ? 'client went away' : 'deadline exceeded') : (error as Error).message
          if (!clientSignal.aborted)
            yield `data: ${JSON.stringify({ error: { message: `The upstream stream failed: ${failure}`, type: 'upstream_error', code: 'UPSTREAM_UNAVAILABLE' } })}\n\n`
        }
        finally {
          const { charged } = await settle(call, usage)
          await log({ userId, id: call.id, alias, upstream: attempt.upstream.id, status: !failure ? response.status : clientSignal.aborted ? 499 : deadline.aborted ? 504 : 502, startedAt, usage, flux: charged, error: failure })
        }
      }
      return { kind: 'stream', chunks: relay() }
    },
  }
}

export type LlmGateway = ReturnType<typeof createLlmGateway>
