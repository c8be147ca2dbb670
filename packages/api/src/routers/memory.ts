import { memoryAddInput, memoryByIdInput, memoryCharacterInput, memoryListInput, memorySearchInput, memorySetSettingsInput, memoryUpdateInput } from '../services/memory/index.ts'
import { createRouter, protectedProcedure } from '../trpc.ts'

/** Long-term memory (SPEC §4.16): only ever the caller's own memories; anyone else's is 404. */
export const memoryRouter = createRouter({
  /** The caller's memories of a character, newest first. */
  list: protectedProcedure.input(memoryListInput).query(({ ctx, input }) => ctx.services.memory.list(ctx.user.id, input)),

  /** 409 `MEMORY_LIMIT_REACHED` at 2 000 memories of one character. */
  add: protectedProcedure.input(memoryAddInput).mutation(({ ctx, input }) => ctx.services.memory.add(ctx.user.id, input)),

  update: protectedProcedure.input(memoryUpdateInput).mutation(({ ctx, input }) => ctx.services.memory.update(ctx.user.id, input)),

  delete: protectedProcedure.input(memoryByIdInput).mutation(({ ctx, input }) => ctx.services.memory.delete(ctx.user.id, input.id)),

  /** The memories most relevant to `query`, best first, each with its `score`. */
  search: protectedProcedure.input(memorySearchInput).query(({ ctx, input }) => ctx.services.memory.search(ctx.user.id, input)),

  /** Memory is on for a character unless the caller turned it off. */
  settings: protectedProcedure.input(memoryCharacterInput).query(({ ctx, input }) => ctx.services.memory.settings(ctx.user.id, input.characterId)),

  setSettings: protectedProcedure.input(memorySetSettingsInput).mutation(({ ctx, input }) => ctx.services.memory.setSettings(ctx.user.id, input)),
})
