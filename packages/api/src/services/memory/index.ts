// The memory domain (SPEC §4.16): what a character remembers about one user, its
// full-text search (Chinese and English alike), the per-character switch, recall into
// a reply's prompt and extraction after it.
export { memoryAddInput, memoryByIdInput, memoryCharacterInput, memoryListInput, memorySearchInput, memorySetSettingsInput, memoryUpdateInput } from './schema.ts'
export { createMemoryService, type MemoryItem, type MemoryService } from './service.ts'
export { createMemoryExtractor } from './extractor.ts'
export { createMemoryEmbeddings } from './embeddings.ts'
