import { UpstreamHttpError } from '../../adapters/tts/index.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import { createCallSignal } from '../llm-gateway/call-signal.ts'
import { withFallback, type AttemptOutcome, type KeySet, type UpstreamKeyPool } from '../upstream-keys.ts'

/** A transcription alias's keys, and how long one call through them may take. */
export interface SttKeySet extends KeySet {
  timeoutMs: number
}

/**
 * Calls `attempt` with each healthy key of `set` in turn (the shared pool's
 * rotation, cooldowns and fallback loop) until one succeeds, all within the set's
 * deadline. A refusal of the key (401/403/429), a 5xx or a connection error moves
 * on; any other 4xx is the request's fault and is answered as it is.
 */
export async function withSttKeys<T>(keyPool: UpstreamKeyPool, logger: Logger, set: SttKeySet, clientSignal: AbortSignal, attempt: (key: string, signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = createCallSignal([clientSignal], set.timeoutMs)
  try {
    return await withFallback(keyPool, {
      sets: [set],
      exhausted: (lastStatus, lastReason) => new ApiError(502, 'UPSTREAM_UNAVAILABLE', `Every key of the transcription upstream failed (last: ${lastReason})`, { lastStatus: lastStatus ?? null }),
      attempt: async (_, key): Promise<AttemptOutcome<T>> => {
        try {
          return { value: await attempt(key.apiKey, deadline.signal) }
        }
        catch (error) {
          if (clientSignal.aborted)
            throw new ApiError(499, 'CLIENT_CLOSED', 'The client went away')
          if (deadline.timedOut)
            throw new ApiError(504, 'DEADLINE_EXCEEDED', `The transcription upstream did not answer within ${set.timeoutMs} ms`)
          if (error instanceof ApiError)
            throw error
          if (!(error instanceof UpstreamHttpError)) {
            const reason = `${set.alias}: ${(error as Error).message}`
            logger.warn({ model: set.alias, keyId: key.id, reason }, 'transcription upstream call failed; trying the next key')
            return { failed: reason }
          }
          return {
            refused: error.response,
            reason: `${set.alias} answered ${error.status}`,
            rejected: () => new ApiError(error.status, 'UPSTREAM_REJECTED', error.message, { upstream: set.alias }),
            onRetry: () => logger.warn({ model: set.alias, keyId: key.id, status: error.status }, 'transcription upstream refused; trying the next key'),
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
