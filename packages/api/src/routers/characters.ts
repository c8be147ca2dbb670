import { z } from 'zod'

import { characterCreateInput, characterImportCardInput, characterListInput, characterUpdateInput } from '../services/characters/index.ts'
import { createRouter, protectedProcedure } from '../trpc.ts'
import { id } from './schemas.ts'

const byId = z.object({ id })

export const charactersRouter = createRouter({
  /** The caller's characters, or every character with `all: true`; newest first. */
  list: protectedProcedure.input(characterListInput).query(({ ctx, input }) => ctx.services.characters.list(ctx.user.id, input)),

  /** Any character that is not deleted, with all its parts. */
  get: protectedProcedure.input(byId).query(({ ctx, input }) => ctx.services.characters.get(ctx.user.id, input.id)),

  create: protectedProcedure.input(characterCreateInput).mutation(({ ctx, input }) => ctx.services.characters.create(ctx.user.id, input)),

  /** A new character from a Character Card V2/V3: JSON, or a base64 PNG carrying it (≤ 8 MiB); 400 `INVALID_CARD` names what is wrong. */
  importCard: protectedProcedure.input(characterImportCardInput).mutation(({ ctx, input }) => ctx.services.characters.importCard(ctx.user.id, input)),

  /** Owner only; a child list that is given replaces the old one. */
  update: protectedProcedure.input(characterUpdateInput).mutation(({ ctx, input }) => ctx.services.characters.update(ctx.user.id, input)),

  /** Owner only; soft delete. */
  delete: protectedProcedure.input(byId).mutation(({ ctx, input }) => ctx.services.characters.delete(ctx.user.id, input.id)),

  toggleLike: protectedProcedure.input(byId).mutation(({ ctx, input }) => ctx.services.characters.toggleLike(ctx.user.id, input.id)),

  toggleBookmark: protectedProcedure.input(byId).mutation(({ ctx, input }) => ctx.services.characters.toggleBookmark(ctx.user.id, input.id)),
})
