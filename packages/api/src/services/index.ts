import type { SessionGuard } from '../auth/session-guard.ts'
import type { AccountExport } from './account-export/index.ts'
import type { AnalyticsService } from './analytics.ts'
import type { BillingService, createFluxMeterFactory, FluxGrantService } from './billing/index.ts'
import type { CharacterService } from './characters/index.ts'
import type { ChatService } from './chats/index.ts'
import type { ConfigService } from './config.ts'
import type { EmailService } from './email.ts'
import type { LlmGateway } from './llm-gateway/index.ts'
import type { MemoryService } from './memory/index.ts'
import type { ApiKeyService } from './api-keys/index.ts'
import type { OperatorService } from './operator/index.ts'
import type { createMetaService } from './meta.ts'
import type { ProviderService } from './providers.ts'
import type { RateLimits } from './rate-limits.ts'
import type { SpeechService } from './speech/index.ts'
import type { StreamingSpeechService } from './streaming-speech/index.ts'
import type { StreamingTranscriptionService } from './streaming-transcription/index.ts'
import type { StripeService } from './stripe/index.ts'
import type { TranscriptionService } from './transcription/index.ts'
import type { UsageService } from './usage/index.ts'
import type { UserDeletionRegistry } from './user-deletion.ts'

/** Every domain service, as composed by `createApi`. */
export interface Services {
  /** Product events (PostHog); a no-op without POSTHOG_KEY. */
  analytics: AnalyticsService
  /** Per-user fixed-window limits of the paid and abusable routes. */
  rateLimits: RateLimits
  billing: BillingService
  characters: CharacterService
  chats: ChatService
  config: ConfigService
  /** Makes a Flux meter for a kind of sub-Flux usage (e.g. TTS characters). */
  createFluxMeter: ReturnType<typeof createFluxMeterFactory>
  fluxGrants: FluxGrantService
  llmGateway: LlmGateway
  /** Long-term memory: what each character remembers of a user, and its search. */
  memory: MemoryService
  /** Personal API keys for the REST gateways. */
  apiKeys: ApiKeyService
  /** Upstreams by alias, administrators and accounts, for the CLI and the admin pages. */
  operator: OperatorService
  /** Speech synthesis and voice catalogues, billed on the `tts` meter. */
  speech: SpeechService
  /** Speech tickets and the sessions of the streaming speech socket, billed on the same `tts` meter. */
  streamingSpeech: StreamingSpeechService
  /** Transcription tickets and the sessions of the streaming transcription socket, billed on the same `stt` meter. */
  streamingTranscription: StreamingTranscriptionService
  /** Speech-to-text over REST, billed by the millisecond on the `stt` meter (its `meter` serves the streaming socket too). */
  transcription: TranscriptionService
  email: EmailService
  /** Re-checks long-lived connections' sessions and ends them on revocation. */
  sessionGuard: SessionGuard
  userDeletion: UserDeletionRegistry
  /** GET /api/v1/account/export: the tables each service registers, as one streamed JSON document. */
  accountExport: AccountExport
  meta: ReturnType<typeof createMetaService>
  providers: ProviderService
  /** Flux top-ups through Stripe; answers 503 STRIPE_NOT_CONFIGURED without a key. */
  stripe: StripeService
  /** `usage.calls` and `usage.summary`: every metered call of a user, and their sums. */
  usage: UsageService
}
