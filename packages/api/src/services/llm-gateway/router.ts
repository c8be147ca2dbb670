import type { ConfigValue } from '../../config/entries.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { KeyDecryptError, type KeyVault } from '../key-vault.ts'

export type RouterConfig = ConfigValue<'LLM_ROUTER_CONFIG'>
export type Upstream = RouterConfig['models'][string]['upstreams'][number]

/** The OpenAI chat-completions body, validated by the transport; other fields pass through. */
export interface ChatCompletionBody {
  model: string
  messages: unknown[]
  stream?: boolean | null
  stream_options?: Record<string, unknown> | null
  [field: string]: unknown
}

/** How long a key is left alone after the upstream refused it. */
const COOLDOWN_MS = { auth: 5 * 60_000, rateLimited: 30_000 } as const

export const upstreamError = (lastStatus: number | undefined, reason: string) =>
  new ApiError(502, 'UPSTREAM_UNAVAILABLE', `Every upstream failed (last: ${reason})`, { lastStatus: lastStatus ?? null })

/** Reads an abandoned response to the end so its connection goes back to the pool. */
async function drain(response: Response): Promise<void> {
  await response.arrayBuffer().catch(() => {})
}

/** The alias a caller asked for, looked up as the config's own key only (`constructor` is no model). */
export function resolveAlias(routes: RouterConfig, requested: string | undefined): { alias: string, upstreams: Upstream[] } {
  const alias = requested || routes.defaultModel
  const model = alias && Object.hasOwn(routes.models, alias) ? routes.models[alias] : undefined
  if (!alias || !model)
    throw new ApiError(404, 'MODEL_NOT_FOUND', `The model ${JSON.stringify(requested ?? '')} does not exist`, { param: 'model' })
  return { alias, upstreams: model.upstreams }
}

export interface Attempt {
  response: Response
  upstream: Upstream
}

/**
 * Picks upstreams and keys: round-robin over an upstream's healthy keys, cooldown
 * after 401/403/429, fallback on 429/5xx/timeouts. Positions and cooldowns are per
 * instance; they only spread load and skip bad keys.
 */
export function createUpstreamRouter({ keyVault, logger }: { keyVault: KeyVault | undefined, logger: Logger }) {
  const cooldowns = new Map<string, number>()
  const rotation = new Map<string, number>()

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

  return {
    /**
     * Tries every healthy key of every upstream in order until one answers 2xx.
     * 401/403/429 cool the key down; 429, 5xx, connection errors and timeouts move
     * on; any other 4xx is the caller's mistake and is returned as it is.
     */
    async call(alias: string, upstreams: Upstream[], body: ChatCompletionBody, stream: boolean, signal: AbortSignal): Promise<Attempt> {
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
    },
  }
}
