import type { Meter } from '@opentelemetry/api'

import type { Db } from '@airi/db'

import type { EmailTransport } from './adapters/email.ts'
import type { Adapters } from './adapters/ports.ts'
import { createPosthogSink, noopAnalyticsSink, type PosthogSettings } from './adapters/posthog.ts'
import { createStripeGateway, type StripeSettings } from './adapters/stripe.ts'
import { systemClock, type Clock } from './clock.ts'
import { identityExportTables } from './auth/account-export.ts'
import { createAuth } from './auth/auth.ts'
import { createIdentityCache, type IdentityCacheOptions } from './auth/identity-cache.ts'
import { AUTH_BASE_PATH, type AuthSettings } from './auth/options.ts'
import { createRequestAuthResolver } from './auth/resolver.ts'
import { createSessionGuard } from './auth/session-guard.ts'
import { seedTrustedClients, type TrustedClient } from './auth/trusted-clients.ts'
import { acceptedLanguages, type AuthInput, type Context, type ProcedureServices, type RequestAuth, type RequestAuthResolver } from './context.ts'
import { ApiError, outageError } from './errors.ts'
import type { Logger } from './logger.ts'
import { createMetrics } from './metrics.ts'
import { appRouter } from './routers/root.ts'
import { createAccountExport } from './services/account-export/index.ts'
import { createAnalyticsService } from './services/analytics.ts'
import { createBillingService, createFluxGrantService, createFluxMeterFactory } from './services/billing/index.ts'
import { createCharacterService } from './services/characters/index.ts'
import { createBalanceFanout, createChatFanout, createChatService } from './services/chats/index.ts'
import { createConfigService } from './services/config.ts'
import { createEmailService } from './services/email.ts'
import type { Services } from './services/index.ts'
import { createKeyVault } from './services/key-vault.ts'
import { createLlmGateway, createLlmUsageReads } from './services/llm-gateway/index.ts'
import { createApiKeyService } from './services/api-keys/index.ts'
import { createMemoryEmbeddings, createMemoryExtractor, createMemoryService } from './services/memory/index.ts'
import { createMetaService } from './services/meta.ts'
import { createAdminRegistry, createOperatorUsers, createUpstreamAdmin, type OperatorService } from './services/operator/index.ts'
import { createProviderService } from './services/providers.ts'
import { createRateLimits, type RateLimitSettings } from './services/rate-limits.ts'
import { createSpeechService } from './services/speech/index.ts'
import { createStreamingSpeechService } from './services/streaming-speech/index.ts'
import { createStreamingTranscriptionService } from './services/streaming-transcription/index.ts'
import { createStripeService } from './services/stripe/index.ts'
import { createTranscriptionService } from './services/transcription/index.ts'
import { createUpstreamKeyPool } from './services/upstream-keys.ts'
import { createUsageLog, createUsageService } from './services/usage/index.ts'
import { createUserDeletionRegistry } from './services/user-deletion.ts'
import { createUsers } from './services/users.ts'
import { toTRPCError } from './trpc.ts'

export interface ApiDeps {
  db: Db
  adapters: Adapters
  logger: Logger
  /** Resend in production, the log transport in development. */
  emailTransport: EmailTransport
  auth: AuthSettings & { trustedClients?: TrustedClient[] }
  /** E-mails allowed to call admin procedures (ADMIN_EMAILS), matched case-insensitively. */
  adminEmails?: readonly string[]
  service?: { name: string, version: string }
  /** Where the `airi.*` instruments report; the global OpenTelemetry meter by default. */
  meter?: Meter
  /** LLM_ROUTER_MASTER_KEY (32 bytes): decrypts upstream keys. Without it the gateway answers 503. */
  llmMasterKey?: Buffer
  /** STRIPE_SECRET_KEY and friends. Without them billing procedures and the webhook answer 503. */
  stripe?: StripeSettings
  /** Bounds of the in-process identity cache (auth/identity-cache.ts); its defaults otherwise. */
  identityCache?: IdentityCacheOptions
  /** POSTHOG_KEY and POSTHOG_HOST; without them product events go nowhere. */
  posthog?: PosthogSettings
  /** Per-user limits (LLM_RATE_LIMIT_PER_MINUTE, TTS_RATE_LIMIT_PER_MINUTE, …); SPEC's defaults otherwise. */
  rateLimits?: RateLimitSettings
  /** LIVE_SYNC_FALLBACK_POLL_MS: how often live subscriptions read their feeds while pub/sub is down (default 1 s). */
  liveSyncFallbackPollMs?: number
  /** CHAT_SUBSCRIPTIONS_PER_USER: live `chats.onMessages` subscriptions per user on this instance (default 32). */
  chatSubscriptionsPerUser?: number
  /** Where services read the time (TTLs, durations, cutoffs); the system's by default, a manual one in tests. */
  clock?: Clock
}

export interface ContextInput extends AuthInput {
  requestId: string
  logger?: Logger
}

/**
 * Where a checkout or the billing portal may send the user back: this server, the
 * web clients' redirect URIs, and AUTH_TRUSTED_ORIGINS.
 */
function returnOrigins(auth: ApiDeps['auth']): string[] {
  const webRedirects = (auth.trustedClients ?? []).filter(client => client.applicationType === 'web').flatMap(client => client.redirectUris)
  return [auth.baseUrl, ...webRedirects, ...(auth.trustedOrigins ?? [])]
}

/**
 * The composition root: builds every service from its explicit dependencies and
 * returns what a transport needs to serve them.
 */
export async function createApi(deps: ApiDeps) {
  const { db, adapters, logger } = deps
  const clock = deps.clock ?? systemClock

  const metrics = createMetrics(deps.meter)
  const analytics = createAnalyticsService({ db, sink: deps.posthog ? createPosthogSink(deps.posthog, logger) : noopAnalyticsSink, logger })
  const rateLimits = createRateLimits({ counters: adapters.counters, metrics, logger, ...deps.rateLimits })
  // One vault for every upstream key (LLM router, speech), each sealed under its alias.
  const keyVault = deps.llmMasterKey ? createKeyVault(deps.llmMasterKey) : undefined
  const config = await createConfigService({ db, cache: adapters.cache, pubsub: adapters.pubsub, logger, clock, keyVault })
  const email = createEmailService({ transport: deps.emailTransport, logger, metrics })
  const userDeletion = createUserDeletionRegistry({ logger })
  // A top-up, refund or grant reaches the user's devices as a balance event on their live feed (`chats` is built below; writes come later).
  const billing = createBillingService({ db, cache: adapters.cache, logger, metrics, initialFlux: () => config.get('INITIAL_USER_FLUX'), onBalanceChanged: (userId, balance) => chats.announceBalance(userId, balance) })
  // A deleted character's memories go with it (`memory` is built below).
  const characters = createCharacterService({ db, onDeleted: ids => memory.deleteForCharacters(ids) })
  const users = createUsers({ db })
  // One key pool for LLM, speech and streaming speech, so a key cooled down by one is skipped by all.
  const keyPool = createUpstreamKeyPool({ keyVault, logger, clock })
  const llmGateway = createLlmGateway({ db, config, billing, metrics, logger, keyVault, keyPool, clock })
  // A memory change reaches the user's devices as a `memory` event on their live feed (`chats` is built below).
  const memory = createMemoryService({
    db,
    clock,
    characters,
    logger,
    config,
    embeddings: { api: createMemoryEmbeddings({ db, gateway: llmGateway, logger }) },
    onChanged: (userId, change) => chats.announceMemory(userId, change),
  })
  const providers = createProviderService({ db })
  const memoryExtractor = createMemoryExtractor({ memory, gateway: llmGateway, config, logger })
  const chats = createChatService({
    db,
    characters,
    users,
    fanout: createChatFanout({ pubsub: adapters.pubsub, logger }),
    balances: createBalanceFanout({ pubsub: adapters.pubsub, logger }),
    logger,
    analytics,
    fallbackPollMs: deps.liveSyncFallbackPollMs,
    rateLimits,
    subscriptionsPerUser: deps.chatSubscriptionsPerUser,
    // Replies made on the server are gateway calls made in-process; they recall memories and start extraction.
    conversations: {
      gateway: llmGateway,
      config,
      cache: adapters.cache,
      clock,
      memory: { recall: memory.recall, afterReply: memoryExtractor.afterReply },
    },
  })
  const stripe = createStripeService({
    db,
    billing,
    cache: adapters.cache,
    config,
    logger,
    metrics,
    gateway: deps.stripe?.secretKey ? createStripeGateway(deps.stripe, logger) : undefined,
    trustedOrigins: returnOrigins(deps.auth),
    rateLimits,
    onPaymentCompleted: payment => analytics.paymentCompleted(payment),
  })
  userDeletion.register({ name: 'stripe', priority: 10, softDelete: userId => stripe.deleteAllForUser(userId) })
  userDeletion.register({ name: 'flux', priority: 20, softDelete: userId => billing.deleteAllForUser(userId) })
  userDeletion.register({ name: 'characters', priority: 30, softDelete: userId => characters.deleteAllForUser(userId) })
  userDeletion.register({ name: 'providers', priority: 30, softDelete: userId => providers.deleteAllForUser(userId) })
  userDeletion.register({ name: 'chats', priority: 30, softDelete: userId => chats.deleteAllForUser(userId) })
  userDeletion.register({ name: 'memory', priority: 30, softDelete: userId => memory.deleteAllForUser(userId) })
  userDeletion.register({ name: 'analytics', priority: 30, softDelete: userId => analytics.deleteAllForUser(userId) })
  // The same services, each with the tables it owns, in the order the document lists them.
  const accountExport = createAccountExport({ rateLimits, logger, clock })
  accountExport.register({ name: 'identity', tables: userId => identityExportTables(db, userId) })
  accountExport.register({ name: 'characters', tables: userId => characters.exportTables(userId) })
  accountExport.register({ name: 'providers', tables: userId => providers.exportTables(userId) })
  accountExport.register({ name: 'chats', tables: userId => chats.exportTables(userId) })
  accountExport.register({ name: 'memory', tables: userId => memory.exportTables(userId) })
  accountExport.register({ name: 'flux', tables: userId => billing.exportTables(userId) })
  accountExport.register({ name: 'stripe', tables: userId => stripe.exportTables(userId) })
  accountExport.register({ name: 'llm-gateway', tables: userId => llmGateway.exportTables(userId) })
  // Calls made with an API key are named by it (`apiKeys` is built below).
  const usage = createUsageService({ db, llmCalls: createLlmUsageReads(db), keysOf: (userId, ids) => apiKeys.describe(userId, ids) })
  accountExport.register({ name: 'usage', tables: userId => usage.exportTables(userId) })
  accountExport.register({ name: 'analytics', tables: userId => analytics.exportTables(userId) })
  const admins = createAdminRegistry({ db, users, envEmails: deps.adminEmails ?? [] })
  accountExport.register({ name: 'operator', tables: userId => admins.exportTables(userId) })

  // Callers already resolved; every instance drops them when the guard hears of a revocation or user change.
  const identities = createIdentityCache(deps.identityCache)
  const sessionGuard = createSessionGuard({ db, pubsub: adapters.pubsub, logger, onRevocation: revocation => identities.drop(revocation) })
  await sessionGuard.start()
  const auth = createAuth({
    db,
    settings: deps.auth,
    email,
    logger,
    beforeDeleteUser: userId => userDeletion.run(userId),
    onUserCreated: (userId) => {
      metrics.userRegistered.add(1)
      analytics.userSignedUp(userId)
    },
    onRevoked: revocation => sessionGuard.revoke(revocation).catch((error: unknown) => {
      // This instance already knows; the others find out within the guard's cache TTL.
      logger.warn({ err: error, ...revocation }, 'could not publish a session revocation')
    }),
  })
  // better-auth initialises (and its OAuth provider seeds our API resource) eagerly;
  // wait for it so a failure stops start-up instead of surfacing later, unhandled.
  await auth.$context
  const baseUrl = deps.auth.baseUrl.replace(/\/$/, '')
  await seedTrustedClients({ auth, db, clients: deps.auth.trustedClients ?? [], resource: baseUrl })
  // A key's revocation reaches every instance as a session revocation (the identity cache drops it).
  const apiKeys = createApiKeyService({ db, clock, revoke: revocation => sessionGuard.revoke(revocation), spentBy: ids => billing.keysSpent(ids) })
  userDeletion.register({ name: 'api-keys', priority: 30, softDelete: userId => apiKeys.deleteAllForUser(userId) })
  accountExport.register({ name: 'api-keys', tables: userId => apiKeys.exportTables(userId) })
  const resolveRequestAuth = createRequestAuthResolver({ auth, issuer: `${baseUrl}${AUTH_BASE_PATH}`, audience: baseUrl, logger, clock, identities, apiKeys })
  const pingPostgres = async () => {
    await db.selectNoFrom(eb => eb.lit(1).as('ok')).execute()
  }
  // The resolver throws the database's own error when a read found Postgres out of
  // reach (auth/outage.ts), so the failure itself says whether this is an outage.
  const resolveAuth: RequestAuthResolver = input => resolveRequestAuth(input).catch((error: unknown) => {
    const outage = outageError(error)
    if (outage)
      logger.warn({ err: error }, 'cannot authenticate a request: dependency unavailable')
    throw outage ?? error
  })

  const createFluxMeter = createFluxMeterFactory({ billing, counters: adapters.counters, logger, usageLog: createUsageLog(db) })
  const speech = createSpeechService({ config, cache: adapters.cache, counters: adapters.counters, createFluxMeter, keyVault, keyPool, logger })
  const transcription = createTranscriptionService({ config, counters: adapters.counters, createFluxMeter, keyVault, keyPool, logger, metrics, analytics })
  const operator: OperatorService = {
    upstreams: createUpstreamAdmin({ config, keyVault }),
    admins,
    users: createOperatorUsers({ auth, sessionGuard, billing, usage, admins, clock }),
  }
  const services: Services = {
    billing,
    characters,
    chats,
    providers,
    config,
    stripe,
    createFluxMeter,
    fluxGrants: createFluxGrantService({ users, billing, logger, onGranted: grant => analytics.fluxGranted(grant) }),
    llmGateway,
    memory,
    apiKeys,
    operator,
    speech,
    transcription,
    streamingSpeech: createStreamingSpeechService({ config, cache: adapters.cache, counters: adapters.counters, meter: speech.meter, keyVault, keyPool, sessionGuard, logger, rateLimits, metrics, clock }),
    streamingTranscription: createStreamingTranscriptionService({ config, cache: adapters.cache, counters: adapters.counters, meter: transcription.meter, keyVault, keyPool, sessionGuard, logger, rateLimits, metrics, analytics, clock }),
    email,
    sessionGuard,
    userDeletion,
    accountExport,
    analytics,
    rateLimits,
    meta: createMetaService({ service: deps.service?.name ?? 'airi-server', version: deps.service?.version ?? '0.0.0' }, config),
    usage,
  }

  // Procedures see only the services they call (ProcedureServices).
  const procedureServices: ProcedureServices = {
    apiKeys: services.apiKeys,
    billing: services.billing,
    characters: services.characters,
    chats: services.chats,
    config: services.config,
    fluxGrants: services.fluxGrants,
    llmGateway: services.llmGateway,
    memory: services.memory,
    meta: services.meta,
    operator: services.operator,
    providers: services.providers,
    sessionGuard: services.sessionGuard,
    streamingSpeech: services.streamingSpeech,
    streamingTranscription: services.streamingTranscription,
    stripe: services.stripe,
    usage: services.usage,
  }

  return {
    router: appRouter,
    services,
    /** The instruments, for the host's HTTP and WebSocket measurements. */
    metrics,
    auth,
    resolveAuth,
    adapters,
    async createContext(input: ContextInput): Promise<Context> {
      let caller: Promise<RequestAuth | null> | undefined
      return {
        // Lazily, once: only procedures that need the caller pay for finding it.
        getAuth: () => caller ??= resolveAuth(input).catch((error: unknown) => {
          // The WebSocket handler asks outside any procedure's error mapping.
          throw error instanceof ApiError ? toTRPCError(error) : error
        }),
        services: procedureServices,
        logger: input.logger ?? logger,
        requestId: input.requestId,
        languages: acceptedLanguages(input.headers.get('accept-language')),
      }
    },
    /** Readiness checks, by name. */
    checks: {
      postgres: pingPostgres,
      ...(adapters.kind === 'redis' ? { redis: () => adapters.ping() } : {}),
    } as Record<string, () => Promise<void>>,
    async close(): Promise<void> {
      // First, while Postgres is still open: replies under way stop and are stored,
      // then the calls still under way end and settle.
      await services.chats.close()
      // Extractions follow replies: they end after them, before the gateway they call.
      await memoryExtractor.close()
      await services.memory.close()
      await services.llmGateway.close()
      await services.streamingSpeech.close()
      await services.streamingTranscription.close()
      await sessionGuard.close()
      await config.close()
      // Last: the events of the calls that just ended go out too.
      await analytics.close()
    },
  }
}

export type Api = Awaited<ReturnType<typeof createApi>>
