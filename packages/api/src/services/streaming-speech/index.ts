import { randomBytes } from 'node:crypto'

import { z } from 'zod'

import { keys } from '../../adapters/keys.ts'
import type { AtomicCounters, Cache } from '../../adapters/ports.ts'
import { httpOrigin } from '../../adapters/tts/index.ts'
import type { StreamingTtsAdapter, StreamingTtsKey } from '../../adapters/streaming-tts/types.ts'
import { unspeechStreamAdapter } from '../../adapters/streaming-tts/unspeech.ts'
import type { SessionGuard } from '../../auth/session-guard.ts'
import type { Clock } from '../../clock.ts'
import type { AuthSession, RequestAuth } from '../../context.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import { createMeterHolds, type FluxMeter } from '../billing/index.ts'
import type { ConfigService } from '../config.ts'
import type { KeyVault } from '../key-vault.ts'
import type { RateLimits } from '../rate-limits.ts'
import { STREAMING_TTS_KEY_ALIAS } from '../../config/sealed-keys.ts'
import { streamingTtsPoolId, ttsMeterRuntime } from '../speech/index.ts'
import type { UpstreamKeyPool } from '../upstream-keys.ts'
import { closeCodeFor } from './protocol.ts'
import { startSpeechSession, type SpeechSessionHandle, type SpeechSink } from './session.ts'

export * from './protocol.ts'
export type { SpeechSessionHandle, SpeechSink } from './session.ts'

/** How long a ticket may wait for its socket (SPEC §4.7). */
const SPEECH_TICKET_TTL_SECONDS = 60
export interface StreamingSpeechDeps {
  config: ConfigService
  cache: Cache
  counters: AtomicCounters
  /** The `tts` meter (the speech service's), so REST and streaming speech share one debt. */
  meter: FluxMeter
  keyVault: KeyVault | undefined
  /** The process's one upstream key pool: a key the catalogue saw refused is not dialled, and the other way round. */
  keyPool: UpstreamKeyPool
  sessionGuard: SessionGuard
  logger: Logger
  /** Limits tickets per user (`speech-ticket`, 30 a minute by default). */
  rateLimits: Pick<RateLimits, 'hit'>
  metrics?: Pick<Metrics, 'ttsChars' | 'ttsPreflightRejections'>
  /** A ticket's `expiresAt` is read against it. */
  clock: Clock
  /** The upstream protocol; unspeech's by default. */
  adapter?: StreamingTtsAdapter
}

/** Bound of one dial of the upstream. */
const CONNECT_TIMEOUT_MS = 10_000

/** Who a ticket was issued to: the user and the session that asked for it. */
export interface SpeechTicketHolder {
  userId: string
  session: AuthSession
}

const storedTicket = z.object({
  userId: z.string().min(1),
  session: z.object({
    id: z.string().min(1),
    userId: z.string().min(1),
    expiresAt: z.coerce.date(),
    tokenExpiresAt: z.coerce.date().optional(),
  }),
})

/** Tickets are 256 random bits, base64url; anything else is not looked up. */
const TICKET_PATTERN = /^[\w-]{43}$/

/**
 * Streaming speech over the raw socket (SPEC §4.7): single-use tickets that carry
 * the user and session to the socket, and the sessions themselves (see
 * `session.ts` for the protocol and billing rules).
 */
export function createStreamingSpeechService({ config, cache, counters, meter, keyVault, keyPool, sessionGuard, logger, rateLimits, metrics, clock, adapter = unspeechStreamAdapter }: StreamingSpeechDeps) {
  const holds = createMeterHolds({ counters, meter, resolveRuntime: ttsMeterRuntime(config), logger })
  const live = new Set<SpeechSessionHandle>()

  async function resolveUpstream() {
    const upstream = await config.getOrThrow('STREAMING_TTS_UPSTREAM')
    if (!keyVault)
      throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })
    const poolId = streamingTtsPoolId(httpOrigin(upstream.url))
    const turns = keyPool.inTurn({ poolId, alias: STREAMING_TTS_KEY_ALIAS, keys: upstream.keys })
    return {
      upstream,
      target: {
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        nextKey(): StreamingTtsKey | undefined {
          for (let turn = turns.next(); !turn.done; turn = turns.next()) {
            if (turn.value.apiKey !== undefined)
              return { id: turn.value.id, apiKey: turn.value.apiKey }
          }
          return undefined
        },
        onKeyRefused(keyId: string, status: number, retryAfter: string | undefined) {
          logger.warn({ upstream: poolId, keyId, status }, 'streaming speech upstream refused a key; trying the next')
          keyPool.noteRefusal(poolId, keyId, status, retryAfter)
        },
      },
    }
  }

  return {
    /** A ticket for one socket, valid 60 s, bound to the caller's user and session. */
    async createTicket(auth: RequestAuth): Promise<{ ticket: string, expiresAt: Date }> {
      await rateLimits.hit('speech-ticket', auth.user.id)
      const ticket = randomBytes(32).toString('base64url')
      const holder: SpeechTicketHolder = { userId: auth.user.id, session: auth.session }
      await cache.set(keys.speechTicket(ticket), JSON.stringify(holder), SPEECH_TICKET_TTL_SECONDS)
      return { ticket, expiresAt: new Date(clock.now() + SPEECH_TICKET_TTL_SECONDS * 1000) }
    },

    /**
     * Consumes a ticket (atomically: of two sockets racing with one ticket, on any
     * instance, one gets it) and answers its holder, or null when it is missing,
     * used, expired or its session no longer authorizes.
     */
    async redeemTicket(ticket: string | undefined): Promise<SpeechTicketHolder | null> {
      if (!ticket || !TICKET_PATTERN.test(ticket))
        return null
      const raw = await cache.take(keys.speechTicket(ticket))
      if (!raw)
        return null
      let value: unknown
      try {
        value = JSON.parse(raw)
      }
      catch {
        value = undefined
      }
      const parsed = storedTicket.safeParse(value)
      if (!parsed.success) {
        logger.warn({ issues: parsed.error.issues }, 'dropping a malformed speech ticket')
        return null
      }
      return (await sessionGuard.isActive(parsed.data.session)) ? parsed.data : null
    },

    /** Starts the session of a redeemed ticket on a client socket. */
    startSession(holder: SpeechTicketHolder, sink: SpeechSink): SpeechSessionHandle {
      const handle = startSpeechSession({
        ...holder,
        sink,
        adapter,
        meter,
        holds,
        sessionGuard,
        logger,
        resolveUpstream,
        closeCodeFor,
        onBilled: characters => metrics?.ttsChars.add(characters),
        onPreflightRejected: () => metrics?.ttsPreflightRejections.add(1),
      })
      live.add(handle)
      void handle.ended.then(() => live.delete(handle))
      return handle
    },

    /** Sessions open on this instance. */
    get openSessions(): number {
      return live.size
    },

    /** Ends every open session (billed by the disconnect rule) and waits for their billing. */
    async close(): Promise<void> {
      await Promise.all([...live].map(handle => handle.abort('server_shutting_down', 'The server is restarting; reconnect')))
    },
  }
}

export type StreamingSpeechService = ReturnType<typeof createStreamingSpeechService>
