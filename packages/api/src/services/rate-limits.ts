import { keys } from '../adapters/keys.ts'
import type { AtomicCounters } from '../adapters/ports.ts'
import { ApiError, outageError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../metrics.ts'

/** The routes limited per user, with their limits per window (SPEC §4.9). */
export const DEFAULT_RATE_LIMITS = {
  /** POST /api/v1/openai/chat/completions (LLM_RATE_LIMIT_PER_MINUTE). */
  'gateway': 60,
  /** POST /api/v1/audio/speech (TTS_RATE_LIMIT_PER_MINUTE). */
  'speech': 60,
  /** audio.createSpeechTicket. */
  'speech-ticket': 30,
  /** billing.checkout. */
  'checkout': 10,
  /** chats.sendMessages, a resend included (CHAT_RATE_LIMIT_PER_MINUTE). */
  'chat-messages': 120,
} as const

export type RateLimitedRoute = keyof typeof DEFAULT_RATE_LIMITS

export interface RateLimitSettings {
  /** Requests per window by route; the defaults above for those not given. */
  limits?: Partial<Record<RateLimitedRoute, number>>
  /** The fixed window's length (default 60 s); tests lengthen it so no window rolls over mid-test. */
  windowSeconds?: number
}

export interface RateLimitDeps extends RateLimitSettings {
  counters: AtomicCounters
  metrics: Pick<Metrics, 'rateLimitBlocked'>
  logger: Logger
}

const descriptions: Record<RateLimitedRoute, string> = {
  'gateway': 'LLM requests',
  'speech': 'speech requests',
  'speech-ticket': 'speech tickets',
  'checkout': 'checkouts',
  'chat-messages': 'message sends',
}

/**
 * Routes let through while the counter store is down: chat sends cost nothing
 * upstream, and people must keep messaging through a Redis outage (live sync
 * falls back to reading feeds then).
 */
const FAIL_OPEN: ReadonlySet<RateLimitedRoute> = new Set(['chat-messages'])

/**
 * Per-user fixed-window rate limits over the counter port (`rate:{route}:{userId}`;
 * on Redis, shared by every instance). Past the limit a call throws 429
 * `RATE_LIMITED` with `retryAfterSeconds` (the seconds left in the window), which
 * every transport turns into `retry-after`. When the counter store cannot be
 * reached the call answers 503, as every other call that needs a missing
 * dependency does: letting it through would leave paid upstreams unprotected.
 * Except for the routes in `FAIL_OPEN`, which cost nothing upstream.
 */
export function createRateLimits({ counters, metrics, logger, limits = {}, windowSeconds = 60 }: RateLimitDeps) {
  const limitOf = (route: RateLimitedRoute) => limits[route] ?? DEFAULT_RATE_LIMITS[route]

  return {
    limitOf,

    /** Counts one call of `userId` on `route`; throws 429 past the limit. */
    async hit(route: RateLimitedRoute, userId: string): Promise<void> {
      let hit
      try {
        hit = await counters.hitWindow(keys.rateLimit(route, userId), windowSeconds)
      }
      catch (error) {
        const outage = outageError(error)
        if (outage && FAIL_OPEN.has(route)) {
          logger.warn({ err: error, route }, 'rate limit counters unavailable; letting the call through')
          return
        }
        throw outage ?? error
      }
      const limit = limitOf(route)
      if (hit.count <= limit)
        return
      metrics.rateLimitBlocked.add(1, { 'airi.rate_limit.route': route })
      const retryAfterSeconds = Math.max(1, Math.ceil(hit.resetInMs / 1000))
      logger.debug({ route, userId, limit, retryAfterSeconds }, 'rate limit exceeded')
      const per = windowSeconds === 60 ? 'per minute' : `per ${windowSeconds} s`
      throw new ApiError(429, 'RATE_LIMITED', `Rate limit exceeded: at most ${limit} ${descriptions[route]} ${per}; retry after ${retryAfterSeconds} s`, { retryAfterSeconds, limit })
    },
  }
}

export type RateLimits = ReturnType<typeof createRateLimits>
