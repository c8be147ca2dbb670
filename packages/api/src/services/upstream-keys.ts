import { createLru } from '../lru.ts'
import { UpstreamHttpError } from '../adapters/tts/index.ts'
import type { Clock } from '../clock.ts'
import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { KeyDecryptError, type KeyVault } from './key-vault.ts'
import { createCallSignal } from './llm-gateway/call-signal.ts'

/** An upstream API key as operator config stores it: sealed by the key vault under an alias and its id. */
interface EncryptedKey {
  id: string
  ciphertext: string
}

/**
 * The keys of one upstream, as the pool knows them: `poolId` names the upstream
 * (an LLM upstream's id, a TTS alias at its base URL, the streaming bridge at its
 * origin), `alias` is what its keys were sealed under.
 */
export interface KeySet {
  poolId: string
  alias: string
  keys: readonly EncryptedKey[]
}

/** A key ready to use. */
interface UsableKey {
  id: string
  apiKey: string
}

/** One key's turn: its plaintext, or why it cannot be used (it has been logged and cooled down). */
type KeyTurn = UsableKey | { id: string, apiKey?: undefined, unusable: string }

/** How long a key is left alone after the upstream refused it. */
export const KEY_COOLDOWN_MS = { auth: 5 * 60_000, rateLimited: 30_000 } as const

/**
 * The one upstream key pool of the process, shared by the LLM router, speech and
 * streaming speech: round-robin over a key set's keys, skipping those cooling
 * down, decrypted under the alias they were sealed for. Cooldowns are per key
 * (pool id and key id), so a key one caller saw refused is skipped by every
 * caller. Positions and cooldowns live in this instance only: they spread load
 * and skip bad keys, so other server instances need not see them.
 */
export function createUpstreamKeyPool({ keyVault, logger, clock }: { keyVault: KeyVault | undefined, logger: Logger, clock: Clock }) {
  const cooldowns = new Map<string, number>()
  const rotation = new Map<string, number>()
  // JSON of the pair, so no pool id containing the separator can alias another key.
  const keyOf = (poolId: string, keyId: string) => JSON.stringify([poolId, keyId])
  // Each sealed key is decrypted once, not on every call; a changed key is a new ciphertext, so it is never served stale.
  const plaintexts = createLru<string, string>(1000)
  function decrypt(vault: KeyVault, alias: string, key: EncryptedKey): string {
    const sealed = JSON.stringify([alias, key.id, key.ciphertext])
    let apiKey = plaintexts.get(sealed)
    if (apiKey === undefined) {
      apiKey = vault.decrypt(alias, key.id, key.ciphertext)
      plaintexts.set(sealed, apiKey)
    }
    return apiKey
  }

  function coolDown(poolId: string, keyId: string, ms: number): void {
    cooldowns.set(keyOf(poolId, keyId), clock.now() + ms)
  }

  return {
    /**
     * The set's healthy keys in turn, each pool starting one further than its last
     * call. A key that does not decrypt (wrong master key, alias or key id) is
     * logged, cooled down and handed out as unusable, never with a plaintext.
     * Without a vault (LLM_ROUTER_MASTER_KEY unset) the first turn throws 503.
     */
    * inTurn({ poolId, alias, keys }: KeySet): Generator<KeyTurn> {
      const now = clock.now()
      const start = rotation.get(poolId) ?? 0
      rotation.set(poolId, start + 1)
      const ordered = keys.map((_, index) => keys[(start + index) % keys.length]!)
      for (const key of ordered.filter(key => (cooldowns.get(keyOf(poolId, key.id)) ?? 0) <= now)) {
        if (!keyVault)
          throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })
        let apiKey: string
        try {
          apiKey = decrypt(keyVault, alias, key)
        }
        catch (error) {
          if (!(error instanceof KeyDecryptError))
            throw error
          logger.error({ model: alias, upstream: poolId, keyId: key.id }, 'an upstream key cannot be decrypted (wrong master key or AAD); skipping it')
          coolDown(poolId, key.id, KEY_COOLDOWN_MS.auth)
          yield { id: key.id, unusable: `key ${key.id} of ${poolId} cannot be decrypted` }
          continue
        }
        yield { id: key.id, apiKey }
      }
    },

    /** Records an upstream's refusal of a key: 401/403 cool it down for 5 minutes, 429 for its Retry-After (30 s without one). */
    noteRefusal(poolId: string, keyId: string, status: number, retryAfter: string | null | undefined): void {
      if (status === 401 || status === 403)
        coolDown(poolId, keyId, KEY_COOLDOWN_MS.auth)
      if (status === 429) {
        const seconds = Number(retryAfter)
        coolDown(poolId, keyId, Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : KEY_COOLDOWN_MS.rateLimited)
      }
    },
  }
}

export type UpstreamKeyPool = ReturnType<typeof createUpstreamKeyPool>

/**
 * A failed answer after which the next key (or upstream) is tried: the key or the
 * upstream failed, not the request. Other 4xx are the caller's mistake.
 */
export function isRetryableStatus(status: number): boolean {
  return !(status >= 400 && status < 500) || [401, 403, 408, 409, 429].includes(status)
}

/** Reads an abandoned response to the end so its connection goes back to the pool (a no-op once read). */
async function drain(response: RefusedAnswer): Promise<void> {
  await response.arrayBuffer().catch(() => {})
}

/**
 * How one attempt ended: with a value (the call is done), with a non-2xx answer
 * of the upstream, or with a failure of the connection (the next key is tried).
 * An attempt throws only to end the whole call (the client left, the deadline
 * passed, our own error).
 */
/** What the fallback loop reads of a refusal: a `fetch` Response, or the LLM router's undici answer. */
interface RefusedAnswer {
  status: number
  headers: { get: (name: string) => string | null }
  arrayBuffer: () => Promise<unknown>
}

export type AttemptOutcome<T> =
  | { value: T }
  | {
    refused: RefusedAnswer
    reason: string
    /** The error the call ends with when the status is the caller's mistake (not retryable). */
    rejected: () => Promise<Error> | Error
    /** Before the abandoned answer is drained, when the next key is tried (logs, metrics). */
    onRetry?: () => void
    /** Once the answer is drained or rejected (the attempt's own signal). */
    release?: () => void
  }
  | { failed: string }

interface FallbackOptions<S extends KeySet, T> {
  /** The key sets in the order they are tried (an alias's upstreams, or one set). */
  sets: Iterable<S>
  /** The caller's signal: once it aborts, its reason ends the call before the next key. */
  signal?: AbortSignal
  /** One call with one key; `index` counts the attempts made before it. */
  attempt: (set: S, key: UsableKey, index: number) => Promise<AttemptOutcome<T>>
  /** The error when every key failed; `lastStatus` is the last refusal's status. */
  exhausted: (lastStatus: number | undefined, lastReason: string) => Error
}

/**
 * The one fallback loop of the upstream callers (LLM router, REST speech): every
 * healthy key of every set in order until an attempt succeeds. 401/403/429 cool
 * the key down in the shared pool; 429, 5xx, 408/409 and connection failures move
 * on (the abandoned answer drained first); any other 4xx ends the call as the
 * attempt's `rejected` error.
 */
export async function withFallback<S extends KeySet, T>(pool: UpstreamKeyPool, { sets, signal, attempt, exhausted }: FallbackOptions<S, T>): Promise<T> {
  let lastStatus: number | undefined
  let lastReason = 'no usable key'
  let attempts = 0
  for (const set of sets) {
    for (const key of pool.inTurn(set)) {
      if (signal?.aborted)
        throw signal.reason
      if (key.apiKey === undefined) {
        lastReason = key.unusable
        continue
      }
      const outcome = await attempt(set, { id: key.id, apiKey: key.apiKey }, attempts++)
      if ('value' in outcome)
        return outcome.value
      if ('failed' in outcome) {
        lastReason = outcome.failed
        continue
      }
      const { refused: response } = outcome
      lastStatus = response.status
      lastReason = outcome.reason
      pool.noteRefusal(set.poolId, key.id, response.status, response.headers.get('retry-after'))
      if (!isRetryableStatus(response.status)) {
        const error = await outcome.rejected()
        outcome.release?.()
        throw error
      }
      outcome.onRetry?.()
      await drain(response)
      outcome.release?.()
    }
  }
  throw exhausted(lastStatus, lastReason)
}

/** A key set of an HTTP upstream (speech, transcription), and how long one call through it may take. */
export interface TimedKeySet extends KeySet {
  timeoutMs: number
}

/**
 * Calls `attempt` with each healthy key of `set` in turn (the pool's rotation,
 * cooldowns and fallback loop) until one succeeds, all within the set's deadline.
 * A refusal of the key (401/403/429), a 5xx or a connection error moves on; any
 * other 4xx is the request's fault and is answered as it is. `upstream` names the
 * upstream in errors and logs ("speech", "transcription").
 */
export async function withHttpKeys<T>(pool: UpstreamKeyPool, logger: Logger, upstream: string, set: TimedKeySet, clientSignal: AbortSignal, attempt: (apiKey: string, signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = createCallSignal([clientSignal], set.timeoutMs)
  try {
    return await withFallback(pool, {
      sets: [set],
      exhausted: (lastStatus, lastReason) => new ApiError(502, 'UPSTREAM_UNAVAILABLE', `Every key of the ${upstream} upstream failed (last: ${lastReason})`, { lastStatus: lastStatus ?? null }),
      attempt: async (_, key): Promise<AttemptOutcome<T>> => {
        try {
          return { value: await attempt(key.apiKey, deadline.signal) }
        }
        catch (error) {
          if (clientSignal.aborted)
            throw new ApiError(499, 'CLIENT_CLOSED', 'The client went away')
          if (deadline.timedOut)
            throw new ApiError(504, 'DEADLINE_EXCEEDED', `The ${upstream} upstream did not answer within ${set.timeoutMs} ms`)
          if (error instanceof ApiError)
            throw error
          if (!(error instanceof UpstreamHttpError)) {
            const reason = `${set.alias}: ${(error as Error).message}`
            logger.warn({ model: set.alias, keyId: key.id, reason }, `${upstream} upstream call failed; trying the next key`)
            return { failed: reason }
          }
          return {
            refused: error.response,
            reason: `${set.alias} answered ${error.status}`,
            rejected: () => new ApiError(error.status, 'UPSTREAM_REJECTED', error.message, { upstream: set.alias }),
            onRetry: () => logger.warn({ model: set.alias, keyId: key.id, status: error.status }, `${upstream} upstream refused; trying the next key`),
          }
        }
      },
    })
  }
  finally {
    // Every attempt has read its whole answer by now: nothing of the call stays reachable.
    deadline.release()
  }
}
