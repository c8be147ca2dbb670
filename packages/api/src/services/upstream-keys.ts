import { ApiError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { KeyDecryptError, type KeyVault } from './key-vault.ts'

/** An upstream API key as operator config stores it: sealed by the key vault under an alias and its id. */
export interface EncryptedKey {
  id: string
  ciphertext: string
}

/** One key's turn: its plaintext, or why it cannot be used (it has been logged and cooled down). */
export type KeyTurn =
  | { id: string, apiKey: string }
  | { id: string, apiKey?: undefined, unusable: string }

/** How long a key is left alone after the upstream refused it. */
export const KEY_COOLDOWN_MS = { auth: 5 * 60_000, rateLimited: 30_000 } as const

/**
 * Key rotation shared by the upstream callers (LLM router, speech): round-robin
 * over a pool's keys, skipping those cooling down, decrypted under the alias they
 * were sealed for. A pool is whatever the caller names (an upstream id, a TTS
 * alias). Positions and cooldowns are per instance: they only spread load and
 * skip bad keys, so they need not be shared between instances.
 */
export function createUpstreamKeys({ keyVault, logger }: { keyVault: KeyVault | undefined, logger: Logger }) {
  const cooldowns = new Map<string, number>()
  const rotation = new Map<string, number>()

  function coolDown(poolId: string, keyId: string, ms: number): void {
    cooldowns.set(`${poolId}:${keyId}`, Date.now() + ms)
  }

  return {
    /**
     * The pool's healthy keys in turn, each pool starting one further than its last
     * call. A key that does not decrypt (wrong master key, alias or key id) is
     * logged, cooled down and handed out as unusable, never with a plaintext.
     * Without a vault (LLM_ROUTER_MASTER_KEY unset) the first turn throws 503.
     */
    * inTurn(poolId: string, alias: string, keys: readonly EncryptedKey[]): Generator<KeyTurn> {
      const now = Date.now()
      const start = rotation.get(poolId) ?? 0
      rotation.set(poolId, start + 1)
      const ordered = keys.map((_, index) => keys[(start + index) % keys.length]!)
      for (const key of ordered.filter(key => (cooldowns.get(`${poolId}:${key.id}`) ?? 0) <= now)) {
        if (!keyVault)
          throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })
        let apiKey: string
        try {
          apiKey = keyVault.decrypt(alias, key.id, key.ciphertext)
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
    noteRefusal(poolId: string, keyId: string, response: Response): void {
      if (response.status === 401 || response.status === 403)
        coolDown(poolId, keyId, KEY_COOLDOWN_MS.auth)
      if (response.status === 429) {
        const retryAfter = Number(response.headers.get('retry-after'))
        coolDown(poolId, keyId, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : KEY_COOLDOWN_MS.rateLimited)
      }
    },
  }
}

export type UpstreamKeys = ReturnType<typeof createUpstreamKeys>

/**
 * A failed answer after which the next key (or upstream) is tried: the key or the
 * upstream failed, not the request. Other 4xx are the caller's mistake.
 */
export function isRetryableStatus(status: number): boolean {
  return !(status >= 400 && status < 500) || [401, 403, 408, 409, 429].includes(status)
}

/** Reads an abandoned response to the end so its connection goes back to the pool. */
export async function drain(response: Response): Promise<void> {
  await response.arrayBuffer().catch(() => {})
}
