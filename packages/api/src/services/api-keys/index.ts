// Personal API keys (SPEC §4.17): durable credentials for the REST gateways, scoped,
// budgeted and rate-limited per key; a third kind of credential beside sessions and JWTs.
export { createApiKeyService, isApiKey, keySessionId, type ApiKeyService, type KeyIdentity } from './service.ts'
export { apiKeyByIdInput, apiKeyCreateInput, type ApiKeyScope } from './schema.ts'
