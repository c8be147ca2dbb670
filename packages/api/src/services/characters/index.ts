// The characters domain: characters and their covers, capabilities, translations,
// prompts and avatar models.
export { createCharacterService, type CharacterService } from './service.ts'
