import type { ColumnType, Generated, Selectable } from 'kysely'

// ---------------------------------------------------------------------------
// Column helpers
// ---------------------------------------------------------------------------

/** `timestamptz not null default now()`: read as Date, optional on insert. */
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>

/** `timestamptz null` (e.g. `deleted_at`): null until set. */
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>

type JsonPrimitive = string | number | boolean | null
type JsonArray = JsonValue[]
export interface JsonObject { [key: string]: JsonValue }
export type JsonValue = JsonPrimitive | JsonObject | JsonArray

// node-postgres JSON-encodes plain objects but turns JS arrays into Postgres array
// literals and sends strings raw, so only objects may be passed as-is; anything else
// must be written as JSON text (`JSON.stringify(value)`).
type JsonWrite<T> = string | Exclude<T, JsonPrimitive | readonly unknown[]>

/** `jsonb not null` */
type Json<T = JsonValue> = ColumnType<T, JsonWrite<T>, JsonWrite<T>>

/** `jsonb not null default ...` */
type JsonWithDefault<T = JsonValue> = ColumnType<T, JsonWrite<T> | undefined, JsonWrite<T>>

/** `jsonb null` */
type NullableJson<T = JsonValue> = ColumnType<T | null, JsonWrite<T> | null | undefined, JsonWrite<T> | null>

// ---------------------------------------------------------------------------
// Characters
// ---------------------------------------------------------------------------

interface CharacterTable {
  id: Generated<string>
  version: string
  cover_url: string
  avatar_url: string
  /** Human-readable slug. */
  character_id: string
  creator_id: string
  owner_id: string
  priority: Generated<number>
  default_voice_id: string | null
  default_model_id: string | null
  likes_count: Generated<number>
  bookmarks_count: Generated<number>
  interactions_count: Generated<number>
  forks_count: Generated<number>
  /** What has no column of its own; `characterCard`: the unmapped fields of the card it was imported from. */
  metadata: JsonWithDefault<JsonObject>
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface CharacterCoverTable {
  id: Generated<string>
  character_id: string
  /** Order within the character, as its owner gave it. */
  position: Generated<number>
  foreground_url: string
  background_url: string
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface CharacterCapabilityTable {
  id: Generated<string>
  character_id: string
  /** Order within the character, as its owner gave it. */
  position: Generated<number>
  type: string
  config: Json
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface CharacterI18nTable {
  id: Generated<string>
  character_id: string
  /** Order within the character, as its owner gave it. */
  position: Generated<number>
  language: string
  name: string
  tagline: string | null
  description: string
  tags: Generated<string[]>
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

type CharacterPromptType = 'system' | 'personality' | 'greetings' | (string & {})

interface CharacterPromptTable {
  id: Generated<string>
  character_id: string
  /** Order within the character, as its owner gave it. */
  position: Generated<number>
  language: string
  type: CharacterPromptType
  content: string
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

type AvatarModelType = 'vrm' | 'live2d' | (string & {})

interface AvatarModelTable {
  id: Generated<string>
  character_id: string
  /** Order within the character, as its owner gave it. */
  position: Generated<number>
  name: string
  type: AvatarModelType
  description: string
  config: Json
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface UserCharacterLikeTable {
  user_id: string
  character_id: string
  created_at: Timestamp
}

interface UserCharacterBookmarkTable {
  user_id: string
  character_id: string
  created_at: Timestamp
}

export type Character = Selectable<CharacterTable>

// ---------------------------------------------------------------------------
// Chats
// ---------------------------------------------------------------------------

export type ChatType = 'private' | 'bot' | 'group' | 'channel'
type ChatMemberType = 'user' | 'character'

interface ChatTable {
  id: Generated<string>
  type: ChatType
  title: string | null
  creator_id: string
  /** Last assigned message seq; bumped under a row lock on the chat. */
  last_seq: Generated<number>
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface ChatMemberTable {
  id: Generated<string>
  chat_id: string
  member_type: ChatMemberType
  /** A user id or a character id, depending on `member_type`. */
  member_id: string
  created_at: Timestamp
  deleted_at: NullableTimestamp
}

interface MessageTable {
  /** Client-supplied, so a resend is a no-op. */
  id: string
  chat_id: string
  seq: number
  /** Bare text, no FK: a deleted user's group messages stay. */
  sender_id: string
  role: string
  content: string
  metadata: NullableJson
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

export type Chat = Selectable<ChatTable>
export type ChatReply = Selectable<ChatReplyTable>

export type Message = Selectable<MessageTable>

/** A user's live-sync counter: the seq of their newest feed row. */
interface ChatSyncHeadTable {
  user_id: string
  last_seq: Generated<number>
}

/** A once-in-a-lifetime moment of a user (`first_message_sent`), for product analytics. */
interface UserMilestoneTable {
  user_id: string
  milestone: string
  reached_at: Generated<Date>
}

/** "Chat `chat_id` got messages `from_seq`..`to_seq`", numbered per user in commit order. */
export type ChatSyncFeedKind = 'messages' | 'edited' | 'deleted'

interface ChatSyncFeedTable {
  user_id: string
  seq: number
  chat_id: string
  from_seq: number
  to_seq: number
  /** `messages`: the range from_seq..to_seq; `edited` / `deleted`: the messages `message_ids`. */
  kind: Generated<ChatSyncFeedKind>
  message_ids: string[] | null
  created_at: Timestamp
}

type ChatReplyStatus = 'streaming' | 'complete' | 'stopped' | 'failed'

/** A reply made on the server: one per `respond` or `regenerate`, ended by its stored message. */
interface ChatReplyTable {
  id: string
  chat_id: string
  /** Who asked for it (and pays). */
  user_id: string
  character_id: string
  /** The user message it answers. */
  answers_id: string
  regenerates_id: string | null
  /** The LLM gateway call that makes it (null until reserved). */
  call_id: string | null
  model: string
  status: ChatReplyStatus
  /** The stored assistant message (complete, stopped). */
  message_id: string | null
  error_code: string | null
  error_message: string | null
  created_at: Timestamp
  ended_at: NullableTimestamp
}

// ---------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------

interface UserProviderConfigTable {
  id: Generated<string>
  owner_id: string
  definition_id: string
  name: string
  config: JsonWithDefault<JsonObject>
  validated: Generated<boolean>
  validation_bypassed: Generated<boolean>
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface SystemProviderConfigTable {
  id: Generated<string>
  definition_id: string
  name: string
  config: JsonWithDefault<JsonObject>
  validated: Generated<boolean>
  validation_bypassed: Generated<boolean>
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

export type UserProviderConfig = Selectable<UserProviderConfigTable>

export type SystemProviderConfig = Selectable<SystemProviderConfigTable>

// ---------------------------------------------------------------------------
// Flux
// ---------------------------------------------------------------------------

export type FluxTransactionType = 'credit' | 'debit' | 'initial' | 'promo'

interface UserFluxTable {
  user_id: string
  flux: Generated<number>
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface FluxTransactionTable {
  id: Generated<string>
  /** Ledger order: drawn under the user's balance lock, so it follows the balance chain. */
  seq: Generated<number>
  user_id: string
  type: FluxTransactionType
  amount: number
  balance_before: number
  balance_after: number
  /** Idempotency key: unique per user when set. */
  request_id: string | null
  description: string | null
  metadata: NullableJson
  /** What a debit owed but could not take (the balance ran short); 0 otherwise. Never moved the balance. */
  unbilled: Generated<number>
  created_at: Timestamp
  /** The personal API key that made the call this row bills, if one did. */
  api_key_id: Generated<string | null>
}

export type FluxTransaction = Selectable<FluxTransactionTable>

// ---------------------------------------------------------------------------
// Stripe mirror
// ---------------------------------------------------------------------------

interface StripeCustomerTable {
  id: Generated<string>
  user_id: string
  stripe_customer_id: string
  email: string | null
  created_at: Timestamp
  updated_at: Timestamp
  deleted_at: NullableTimestamp
}

interface StripeCheckoutSessionTable {
  id: Generated<string>
  user_id: string
  stripe_session_id: string
  stripe_customer_id: string | null
  stripe_price_id: string | null
  mode: string
  status: string
  payment_status: string | null
  amount_total: number | null
  currency: string | null
  flux_amount: number | null
  flux_credited: Generated<boolean>
  url: string | null
  created_at: Timestamp
  updated_at: Timestamp
  /** Set when the session completes; `charge.refunded` finds the purchase by it. */
  stripe_payment_intent_id: string | null
  /** Flux of this purchase taken back (or held back before the credit) for refunds. */
  flux_refunded: Generated<number>
}

interface StripeSubscriptionTable {
  id: Generated<string>
  user_id: string
  stripe_subscription_id: string
  stripe_customer_id: string
  stripe_price_id: string | null
  status: string
  current_period_start: NullableTimestamp
  current_period_end: NullableTimestamp
  cancel_at_period_end: Generated<boolean>
  created_at: Timestamp
  updated_at: Timestamp
}

interface StripeInvoiceTable {
  id: Generated<string>
  user_id: string
  stripe_invoice_id: string
  stripe_customer_id: string
  stripe_subscription_id: string | null
  amount_paid: number
  currency: string
  status: string
  hosted_invoice_url: string | null
  invoice_pdf: string | null
  flux_credited: Generated<boolean>
  created_at: Timestamp
  updated_at: Timestamp
}

// ---------------------------------------------------------------------------
// Operator config
// ---------------------------------------------------------------------------

interface ConfigEntryTable {
  key: string
  value: Json
  updated_by: string | null
  created_at: Timestamp
  updated_at: Timestamp
}

/** Administrators added at run time, beside ADMIN_EMAILS (lower-cased e-mail). */
interface OperatorAdminTable {
  email: string
  added_by: string | null
  created_at: Timestamp
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

/** What a character remembers about one user (SPEC §4.16); the memory service owns it. */
interface MemoryTable {
  id: Generated<string>
  user_id: string
  character_id: string
  /** 1–2 000 characters, trimmed. */
  content: string
  /** 1–5 (3 by default). */
  importance: Generated<number>
  source: 'auto' | 'user'
  /** `to_tsvector('simple', …)` of the content and its CJK bigrams, written with `sql` by the service (read as text). */
  search_vector: string
  created_at: Timestamp
  updated_at: Timestamp
  /** Set each time recall puts the memory in a prompt. */
  last_used_at: NullableTimestamp
  /** The content's embedding by `embedding_model`, when MEMORY_EMBEDDING_MODEL was set as it was written. */
  embedding: number[] | null
  embedding_model: string | null
}

/** A user's memory switch for one character; no row means on. */
interface MemorySettingsTable {
  user_id: string
  character_id: string
  enabled: boolean
  updated_at: Timestamp
}

export type Memory = Selectable<MemoryTable>

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

interface LlmRequestLogTable {
  id: Generated<string>
  user_id: string
  request_id: string
  model: string
  upstream: string | null
  /** The HTTP status the call ended with; null while pending. */
  status: number | null
  duration_ms: number | null
  /** Input tokens (the prompt, cached part included). */
  prompt_tokens: number | null
  /** Output tokens. */
  completion_tokens: number | null
  /** The part of `prompt_tokens` the upstream served from its cache; null when it did not say. */
  cached_tokens: number | null
  total_tokens: number | null
  /** From the call's start to the first generated text of a stream; null for a plain answer or none relayed. */
  first_token_ms: number | null
  flux_consumed: Generated<number>
  error: string | null
  created_at: Timestamp
  /** `pending` from before the upstream call until settlement; `reconciled` when an operator settled it. */
  state: Generated<LlmRequestState>
  /** Where the billed tokens came from; null when nothing was billed by tokens (a failed call). */
  usage_source: LlmUsageSource | null
  flux_reserved: Generated<number>
  completed_at: NullableTimestamp
  /** `llm`: a client's gateway call; `reply`: a reply the server made in a chat; `embedding`: a call to the gateway's embeddings; `memory`: the extraction after a reply. */
  kind: Generated<LlmCallKind>
  /** The personal API key that made the call, if one did. */
  api_key_id: Generated<string | null>
}

type ApiKeyScope = 'llm' | 'speech' | 'transcription'
export type ApiKeyBudgetPeriod = 'day' | 'month' | 'total'

/** A personal API key (migration 0025): only its hash is kept. */
interface ApiKeyTable {
  id: Generated<string>
  user_id: string
  name: string
  /** The key's first characters, to tell keys apart (`airi_sk_` + 6). */
  prefix: string
  key_hash: string
  scopes: ApiKeyScope[]
  budget_flux: number | null
  budget_period: ApiKeyBudgetPeriod | null
  rate_limit_per_minute: number | null
  expires_at: NullableTimestamp
  revoked_at: NullableTimestamp
  last_used_at: NullableTimestamp
  created_at: Generated<Date>
}

export type ApiKey = Selectable<ApiKeyTable>

/**
 * A budgeted key's spending in its current period (from `period_start`; the epoch
 * for 'total'): made with the key, moved only by the ledger's write statement.
 */
interface ApiKeySpendTable {
  api_key_id: string
  period_start: Date
  flux: Generated<number>
}

export type LlmCallKind = 'llm' | 'reply' | 'embedding' | 'memory'

/** One metered speech call: what it used and the whole Flux its meter debited for it. */
interface MeteredUsageTable {
  id: Generated<string>
  user_id: string
  kind: MeteredUsageKind
  model: string
  /** `completed`, or how a billed stream ended otherwise (`cancelled`, `failed`). */
  status: MeteredUsageStatus
  /** TTS: characters billed; null for speech-to-text. */
  characters: number | null
  /** STT: milliseconds of audio billed; null for speech synthesis. */
  audio_ms: number | null
  duration_ms: number
  /** Whole Flux debited under this call (0 when its units stayed below one Flux of debt). */
  flux: Generated<number>
  created_at: Timestamp
  /** The personal API key that made the call, if one did. */
  api_key_id: Generated<string | null>
}

export type MeteredUsageKind = 'tts' | 'tts-stream' | 'stt' | 'stt-stream'
export type MeteredUsageStatus = 'completed' | 'cancelled' | 'failed'

type LlmRequestState = 'pending' | 'completed' | 'reconciled'
/** `upstream`: the upstream's usage; `counted`/`estimated`: our tokenizer (known/unknown model family); `flat`: FLUX_PER_REQUEST. */
export type LlmUsageSource = 'upstream' | 'counted' | 'estimated' | 'flat'

// ---------------------------------------------------------------------------
// Auth (written by better-auth, created by migration 0016; typed here only for reads)
// ---------------------------------------------------------------------------

interface AuthUserTable {
  id: string
  name: string
  email: string
  emailVerified: boolean
  image: string | null
  createdAt: Date
  updatedAt: Date
}

interface AuthSessionTable {
  id: string
  userId: string
  token: string
  expiresAt: Date
  createdAt: Date
  updatedAt: Date
  ipAddress: string | null
  userAgent: string | null
}

interface AuthAccountTable {
  id: string
  accountId: string
  providerId: string
  userId: string
  accessToken: string | null
  refreshToken: string | null
  idToken: string | null
  accessTokenExpiresAt: Date | null
  refreshTokenExpiresAt: Date | null
  scope: string | null
  /** Hash, for e-mail-and-password accounts. */
  password: string | null
  createdAt: Date
  updatedAt: Date
}

interface AuthVerificationTable {
  id: string
  identifier: string
  value: string
  expiresAt: Date
  createdAt: Date
  updatedAt: Date
}

interface AuthJwksTable {
  id: string
  publicKey: string
  privateKey: string
  createdAt: Date
  expiresAt: Date | null
  alg: string | null
  crv: string | null
}

interface OAuthClientTable {
  id: string
  clientId: string
  clientSecret: string | null
  clientDiscoveryId: string | null
  disabled: boolean | null
  skipConsent: boolean | null
  enableEndSession: boolean | null
  subjectType: string | null
  scopes: string[] | null
  clientCredentialsScopes: string[] | null
  userId: string | null
  createdAt: Date | null
  updatedAt: Date | null
  name: string | null
  uri: string | null
  icon: string | null
  contacts: string[] | null
  tos: string | null
  policy: string | null
  softwareId: string | null
  softwareVersion: string | null
  softwareStatement: string | null
  redirectUris: string[]
  postLogoutRedirectUris: string[] | null
  backchannelLogoutUri: string | null
  backchannelLogoutSessionRequired: boolean | null
  tokenEndpointAuthMethod: string | null
  applicationType: string | null
  jwks: string | null
  jwksUri: string | null
  grantTypes: string[] | null
  responseTypes: string[] | null
  requirePKCE: boolean | null
  dpopBoundAccessTokens: boolean | null
  referenceId: string | null
  metadata: JsonValue | null
}

interface OAuthResourceTable {
  id: string
  identifier: string
  name: string
  accessTokenTtl: number | null
  refreshTokenTtl: number | null
  signingAlgorithm: string | null
  signingKeyId: string | null
  allowedScopes: string[] | null
  customClaims: JsonValue | null
  dpopBoundAccessTokensRequired: boolean | null
  disabled: boolean | null
  createdAt: Date | null
  updatedAt: Date | null
  policyVersion: number | null
  metadata: JsonValue | null
}

interface OAuthClientResourceTable {
  id: string
  clientId: string
  resourceId: string
  metadata: JsonValue | null
  createdAt: Date | null
}

interface OAuthRefreshTokenTable {
  id: string
  token: string
  clientId: string
  sessionId: string | null
  userId: string
  referenceId: string | null
  authorizationCodeId: string | null
  resources: string[] | null
  requestedUserInfoClaims: string[] | null
  expiresAt: Date
  createdAt: Date
  revoked: Date | null
  rotatedAt: Date | null
  rotationReplayResponse: string | null
  rotationReplayExpiresAt: Date | null
  authTime: Date | null
  confirmation: JsonValue | null
  scopes: string[]
}

interface OAuthAccessTokenTable {
  id: string
  token: string
  clientId: string
  sessionId: string | null
  userId: string | null
  referenceId: string | null
  authorizationCodeId: string | null
  resources: string[] | null
  requestedUserInfoClaims: string[] | null
  refreshId: string | null
  expiresAt: Date
  createdAt: Date
  revoked: Date | null
  confirmation: JsonValue | null
  scopes: string[]
}

interface OAuthConsentTable {
  id: string
  clientId: string
  userId: string | null
  referenceId: string | null
  resources: string[] | null
  requestedUserInfoClaims: string[] | null
  scopes: string[]
  createdAt: Date
  updatedAt: Date
}

interface OAuthClientAssertionTable {
  id: string
  expiresAt: Date
}

// ---------------------------------------------------------------------------

export interface Database {
  user: AuthUserTable
  session: AuthSessionTable
  account: AuthAccountTable
  verification: AuthVerificationTable
  jwks: AuthJwksTable
  oauthClient: OAuthClientTable
  oauthResource: OAuthResourceTable
  oauthClientResource: OAuthClientResourceTable
  oauthRefreshToken: OAuthRefreshTokenTable
  oauthAccessToken: OAuthAccessTokenTable
  oauthConsent: OAuthConsentTable
  oauthClientAssertion: OAuthClientAssertionTable

  characters: CharacterTable
  character_covers: CharacterCoverTable
  character_capabilities: CharacterCapabilityTable
  character_i18n: CharacterI18nTable
  character_prompts: CharacterPromptTable
  avatar_models: AvatarModelTable
  user_character_likes: UserCharacterLikeTable
  user_character_bookmarks: UserCharacterBookmarkTable

  chats: ChatTable
  chat_members: ChatMemberTable
  messages: MessageTable
  chat_sync_heads: ChatSyncHeadTable
  chat_sync_feed: ChatSyncFeedTable
  chat_replies: ChatReplyTable
  user_milestones: UserMilestoneTable

  user_provider_configs: UserProviderConfigTable
  system_provider_configs: SystemProviderConfigTable

  user_flux: UserFluxTable
  flux_transaction: FluxTransactionTable

  stripe_customer: StripeCustomerTable
  stripe_checkout_session: StripeCheckoutSessionTable
  stripe_subscription: StripeSubscriptionTable
  stripe_invoice: StripeInvoiceTable

  config_entries: ConfigEntryTable
  operator_admins: OperatorAdminTable

  llm_request_log: LlmRequestLogTable
  metered_usage: MeteredUsageTable
  api_keys: ApiKeyTable
  api_key_spend: ApiKeySpendTable

  memory: MemoryTable
  memory_settings: MemorySettingsTable
}
