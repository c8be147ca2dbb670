import { keys } from '../adapters/keys.ts'
import type { AtomicCounters } from '../adapters/ports.ts'
import { ApiError, outageError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../metrics.ts'

interface RateLimitPolicy {
  /** Calls per window when the deployment sets no other. */
  limit: number
  /** Whose calls one counter holds: a signed-in user's, or a client address's (before anyone is signed in). */
  per: 'user' | 'address'
  /** What is counted, as the 429's message names it. */
  counts: string
  /**
   * What a call gets when the counter store (Redis) cannot be reached: `refuse`
   * answers 503, as any call whose dependency is missing; `allow` lets it through
   * unlimited, with a `warn` line.
   */
  whenCountersDown: 'refuse' | 'allow'
  /** The fixed window's length when it is not the deployment's (RateLimitSettings.windowSeconds). */
  windowSeconds?: number
}

/**
 * Every rate limit of the service (SPEC §4.9; docs/operations.md lists them with
 * their env names). Paid upstreams and Stripe refuse without their counters, since
 * letting calls through would leave them unprotected; sign-ins and chat sends cost
 * nothing upstream and must keep working through a Redis outage.
 */
const POLICIES = {
  /** /api/auth/* per client address (AUTH_RATE_LIMIT_PER_MINUTE). */
  'auth': { limit: 120, per: 'address', counts: 'sign-in requests', whenCountersDown: 'allow' },
  /** POST /api/v1/openai/chat/completions (LLM_RATE_LIMIT_PER_MINUTE). */
  'gateway': { limit: 60, per: 'user', counts: 'LLM requests', whenCountersDown: 'refuse' },
  /** POST /api/v1/audio/speech (TTS_RATE_LIMIT_PER_MINUTE). */
  'speech': { limit: 60, per: 'user', counts: 'speech requests', whenCountersDown: 'refuse' },
  /** POST /api/v1/audio/transcriptions (STT_RATE_LIMIT_PER_MINUTE). */
  'transcription': { limit: 60, per: 'user', counts: 'transcription requests', whenCountersDown: 'refuse' },
  /** audio.createSpeechTicket. */
  'speech-ticket': { limit: 30, per: 'user', counts: 'speech tickets', whenCountersDown: 'refuse' },
  /** audio.createTranscriptionTicket. */
  'transcription-ticket': { limit: 30, per: 'user', counts: 'transcription tickets', whenCountersDown: 'refuse' },
  /** billing.checkout. */
  'checkout': { limit: 10, per: 'user', counts: 'checkouts', whenCountersDown: 'refuse' },
  /** chats.sendMessages, a resend included (CHAT_RATE_LIMIT_PER_MINUTE). */
  'chat-messages': { limit: 120, per: 'user', counts: 'message sends', whenCountersDown: 'allow' },
  /** Calls with one personal API key that has its own `rateLimitPerMinute` (the limit is the key's), on top of the user's. */
  'api-key': { limit: 60, per: 'user', counts: 'requests with this API key', whenCountersDown: 'refuse' },
  /** GET /api/v1/account/export, per hour: each export reads all of the user's rows (EXPORT_RATE_LIMIT_PER_HOUR). */
  'export': { limit: 6, per: 'user', counts: 'account exports', whenCountersDown: 'refuse', windowSeconds: 3600 },
} as const satisfies Record<string, RateLimitPolicy>

export type RateLimitedRoute = keyof typeof POLICIES

export interface RateLimitSettings {
  /** Requests per window by route; the policies' defaults for those not given. */
  limits?: Partial<Record<RateLimitedRoute, number>>
  /** The fixed window's length of every policy without its own (default 60 s); tests lengthen it so no window rolls over mid-test. */
  windowSeconds?: number
}

export interface RateLimitDeps extends RateLimitSettings {
  counters: AtomicCounters
  metrics: Pick<Metrics, 'rateLimitBlocked'>
  logger: Logger
}

/**
 * Fixed-window rate limits over the counter port (`rate:{route}:{userId or
 * address}`; on Redis, shared by every instance). Past the limit a call throws 429
 * `RATE_LIMITED` with `retryAfterSeconds` (the seconds left in the window), which
 * every transport turns into `retry-after`. Without the counter store a call is
 * refused with 503 or let through, as its route's policy says.
 */
export function createRateLimits({ counters, metrics, logger, limits = {}, windowSeconds = 60 }: RateLimitDeps) {
  const limitOf = (route: RateLimitedRoute) => limits[route] ?? POLICIES[route].limit

  return {
    limitOf,

    /**
     * Counts one call on `route` by `subject` (the user's id, the client's address
     * for a route limited per address, a key's id); throws 429 past the limit, or
     * past `ownLimit` when the subject carries its own (an API key's).
     */
    async hit(route: RateLimitedRoute, subject: string, ownLimit?: number): Promise<void> {
      const policy: RateLimitPolicy = POLICIES[route]
      const window = policy.windowSeconds ?? windowSeconds
      const who = policy.per === 'user' ? { userId: subject } : { address: subject }
      let hit
      try {
        hit = await counters.hitWindow(keys.rateLimit(route, subject), window)
      }
      catch (error) {
        const outage = outageError(error)
        if (outage && policy.whenCountersDown === 'allow') {
          logger.warn({ err: error, route }, 'rate limit counters unavailable; letting the call through')
          return
        }
        throw outage ?? error
      }
      const limit = ownLimit ?? limitOf(route)
      if (hit.count <= limit)
        return
      metrics.rateLimitBlocked.add(1, { 'airi.rate_limit.route': route })
      const retryAfterSeconds = Math.max(1, Math.ceil(hit.resetInMs / 1000))
      logger.debug({ route, ...who, limit, retryAfterSeconds }, 'rate limit exceeded')
      const per = window === 60 ? 'per minute' : window === 3600 ? 'per hour' : `per ${window} s`
      throw new ApiError(429, 'RATE_LIMITED', `Rate limit exceeded: at most ${limit} ${policy.counts} ${per}; retry after ${retryAfterSeconds} s`, { retryAfterSeconds, limit })
    },
  }
}

export type RateLimits = ReturnType<typeof createRateLimits>
