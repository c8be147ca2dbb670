// The characters domain: characters and their covers, capabilities, translations,
// prompts and avatar models.
export { characterCreateInput, characterImportCardInput, characterListInput, characterUpdateInput } from './schema.ts'
export { createCharacterService, type CharacterService } from './service.ts'
export type { Persona } from './read.ts'
