import type { Migration } from 'kysely'

import * as characters from './0001_characters.ts'
import * as chats from './0002_chats.ts'
import * as providers from './0003_providers.ts'
import * as flux from './0004_flux.ts'
import * as stripe from './0005_stripe.ts'
import * as configEntries from './0006_config_entries.ts'
import * as llmRequestLog from './0007_llm_request_log.ts'
import * as fluxTransactionSeq from './0008_flux_transaction_seq.ts'
import * as characterChildPosition from './0009_character_child_position.ts'
import * as llmRequestLogState from './0010_llm_request_log_state.ts'
import * as stripeRefunds from './0012_stripe_refunds.ts'
import * as chatSyncFeed from './0013_chat_sync_feed.ts'
import * as userMilestones from './0014_user_milestones.ts'
import * as fluxTransactionUnbilled from './0015_flux_transaction_unbilled.ts'
import * as betterAuth from './0016_better_auth.ts'
import * as chatReplies from './0017_chat_replies.ts'
import * as requestLogUsage from './0018_request_log_usage.ts'
import * as characterMetadata from './0019_character_metadata.ts'
import * as meteredUsage from './0020_metered_usage.ts'
import * as operatorAdmins from './0021_operator_admins.ts'
import * as memories from './0022_memories.ts'
import * as embeddingsKind from './0023_embeddings_kind.ts'
import * as memoryRecall from './0024_memory_recall.ts'
import * as apiKeys from './0025_api_keys.ts'
import * as apiKeySpendInLedger from './0026_api_key_spend_in_ledger.ts'

/**
 * Every migration, keyed by name. Kysely's Migrator applies them in key order, so
 * the numeric prefix fixes the order; never rename or edit an applied migration.
 */
export const migrations: Record<string, Migration> = {
  '0001_characters': characters,
  '0002_chats': chats,
  '0003_providers': providers,
  '0004_flux': flux,
  '0005_stripe': stripe,
  '0006_config_entries': configEntries,
  '0007_llm_request_log': llmRequestLog,
  '0008_flux_transaction_seq': fluxTransactionSeq,
  '0009_character_child_position': characterChildPosition,
  '0010_llm_request_log_state': llmRequestLogState,
  '0012_stripe_refunds': stripeRefunds,
  '0013_chat_sync_feed': chatSyncFeed,
  '0014_user_milestones': userMilestones,
  '0015_flux_transaction_unbilled': fluxTransactionUnbilled,
  '0016_better_auth': betterAuth,
  '0017_chat_replies': chatReplies,
  '0018_request_log_usage': requestLogUsage,
  '0019_character_metadata': characterMetadata,
  '0020_metered_usage': meteredUsage,
  '0021_operator_admins': operatorAdmins,
  '0022_memories': memories,
  '0023_embeddings_kind': embeddingsKind,
  '0024_memory_recall': memoryRecall,
  '0025_api_keys': apiKeys,
  '0026_api_key_spend_in_ledger': apiKeySpendInLedger,
}
