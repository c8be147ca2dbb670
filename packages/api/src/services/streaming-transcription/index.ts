import { randomBytes } from 'node:crypto'

import { z } from 'zod'

import { keys } from '../../adapters/keys.ts'
import { STREAMING_STT_KEY_ALIAS } from '../../config/sealed-keys.ts'
import { openaiRealtimeSttAdapter } from '../../adapters/streaming-stt/openai-realtime.ts'
import type { StreamingSttAdapter, StreamingSttKey } from '../../adapters/streaming-stt/types.ts'
import type { AtomicCounters, Cache } from '../../adapters/ports.ts'
import type { SessionGuard } from '../../auth/session-guard.ts'
import type { Clock } from '../../clock.ts'
import type { AuthSession, RequestAuth } from '../../context.ts'
import { ApiError } from '../../errors.ts'
import type { Logger } from '../../logger.ts'
import type { Metrics } from '../../metrics.ts'
import type { AnalyticsService } from '../analytics.ts'
import { createMeterHolds, type FluxMeter } from '../billing/index.ts'
import type { ConfigService } from '../config.ts'
import type { KeyVault } from '../key-vault.ts'
import type { RateLimits } from '../rate-limits.ts'
import { sttMeterRuntime } from '../transcription/index.ts'
import type { UpstreamKeyPool } from '../upstream-keys.ts'
import { transcriptionCloseCodeFor } from './protocol.ts'
import { startTranscriptionSession, type TranscriptionSessionHandle, type TranscriptionSink } from './session.ts'

export * from './protocol.ts'
export type { TranscriptionSessionHandle, TranscriptionSink } from './session.ts'

/** How long a ticket may wait for its socket (SPEC §4.13, as speech tickets). */
const TICKET_TTL_SECONDS = 60
/** Bound of one dial of the upstream. */
const CONNECT_TIMEOUT_MS = 10_000
/** Tickets are 256 random bits, base64url; anything else is not looked up. */
const TICKET_PATTERN = /^[\w-]{43}$/

export interface StreamingTranscriptionDeps {
  config: ConfigService
  cache: Cache
  counters: AtomicCounters
  /** The `stt` meter (the transcription service's), so REST and streaming transcription share one debt. */
  meter: FluxMeter
  keyVault: KeyVault | undefined
  /** The process's one upstream key pool. */
  keyPool: UpstreamKeyPool
  sessionGuard: SessionGuard
  logger: Logger
  /** Limits tickets per user (`transcription-ticket`, 30 a minute by default). */
  rateLimits: Pick<RateLimits, 'hit'>
  metrics?: Pick<Metrics, 'sttSeconds' | 'sttPreflightRejections'>
  analytics?: Pick<AnalyticsService, 'voiceInputUsed'>
  /** A ticket's expiry is read against it. */
  clock: Clock
  /** The upstream protocol; OpenAI Realtime transcription by default. */
  adapter?: StreamingSttAdapter
}

/** Who a ticket was issued to: the user and the session that asked for it. */
export interface TranscriptionTicketHolder {
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
  expiresAt: z.number(),
})

/**
 * Streaming speech-to-text over the raw socket (SPEC §4.13): single-use tickets
 * that carry the user and session to the socket, and the sessions themselves
 * (see `session.ts` for the protocol and billing rules).
 */
export function createStreamingTranscriptionService({ config, cache, counters, meter, keyVault, keyPool, sessionGuard, logger, rateLimits, metrics, analytics, clock, adapter = openaiRealtimeSttAdapter }: StreamingTranscriptionDeps) {
  const holds = createMeterHolds({ counters, meter, resolveRuntime: sttMeterRuntime(config), logger })
  const live = new Set<TranscriptionSessionHandle>()

  async function resolveUpstream() {
    const upstream = await config.getOrThrow('STREAMING_STT_UPSTREAM')
    if (!keyVault)
      throw new ApiError(503, 'CONFIG_NOT_SET', 'LLM_ROUTER_MASTER_KEY is not set', { key: 'LLM_ROUTER_MASTER_KEY' })
    const poolId = `${STREAMING_STT_KEY_ALIAS}@${new URL(upstream.url).origin}`
    const turns = keyPool.inTurn({ poolId, alias: STREAMING_STT_KEY_ALIAS, keys: upstream.keys })
    return {
      upstream,
      target: {
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        nextKey(): StreamingSttKey | undefined {
          for (let turn = turns.next(); !turn.done; turn = turns.next()) {
            if (turn.value.apiKey !== undefined)
              return { id: turn.value.id, apiKey: turn.value.apiKey }
          }
          return undefined
        },
        onKeyRefused(keyId: string, status: number, retryAfter: string | undefined) {
          logger.warn({ upstream: poolId, keyId, status }, 'streaming transcription upstream refused a key; trying the next')
          keyPool.noteRefusal(poolId, keyId, status, retryAfter)
        },
      },
    }
  }

  function onBilled(userId: string, ms: number): void {
    metrics?.sttSeconds.add(ms / 1000, { 'airi.stt.transport': 'stream' })
    analytics?.voiceInputUsed(userId, 'stream').catch((error: unknown) => logger.warn({ err: error, userId }, 'could not record voice_input_used'))
  }

  return {
    /** A ticket for one socket, valid 60 s, bound to the caller's user and session. */
    async createTicket(auth: RequestAuth): Promise<{ ticket: string, expiresAt: Date }> {
      await rateLimits.hit('transcription-ticket', auth.user.id)
      const ticket = randomBytes(32).toString('base64url')
      const expiresAt = clock.now() + TICKET_TTL_SECONDS * 1000
      await cache.set(keys.transcriptionTicket(ticket), JSON.stringify({ userId: auth.user.id, session: auth.session, expiresAt }), TICKET_TTL_SECONDS)
      return { ticket, expiresAt: new Date(expiresAt) }
    },

    /**
     * Consumes a ticket (atomically: of two sockets racing with one ticket, on any
     * instance, one gets it) and answers its holder, or null when it is missing,
     * used, expired or its session no longer authorizes.
     */
    async redeemTicket(ticket: string | undefined): Promise<TranscriptionTicketHolder | null> {
      if (!ticket || !TICKET_PATTERN.test(ticket))
        return null
      const raw = await cache.take(keys.transcriptionTicket(ticket))
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
        logger.warn({ issues: parsed.error.issues }, 'dropping a malformed transcription ticket')
        return null
      }
      const { userId, session, expiresAt } = parsed.data
      if (clock.now() > expiresAt)
        return null
      return (await sessionGuard.isActive(session)) ? { userId, session } : null
    },

    /** Starts the session of a redeemed ticket on a client socket. */
    startSession(holder: TranscriptionTicketHolder, sink: TranscriptionSink): TranscriptionSessionHandle {
      const handle = startTranscriptionSession({
        ...holder,
        sink,
        adapter,
        meter,
        holds,
        sessionGuard,
        logger,
        resolveUpstream,
        closeCodeFor: transcriptionCloseCodeFor,
        onBilled: ms => onBilled(holder.userId, ms),
        onPreflightRejected: () => metrics?.sttPreflightRejections.add(1, { 'airi.stt.transport': 'stream' }),
      })
      live.add(handle)
      void handle.ended.then(() => live.delete(handle))
      return handle
    },

    /** The close code after an `error` frame with `code` (for the transport's own refusals). */
    closeCodeFor: transcriptionCloseCodeFor,

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

export type StreamingTranscriptionService = ReturnType<typeof createStreamingTranscriptionService>
