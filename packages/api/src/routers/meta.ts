import { createRouter, protectedProcedure, publicProcedure } from '../trpc.ts'

export const metaRouter = createRouter({
  /** Service identity; proves the HTTP link. */
  info: publicProcedure.query(({ ctx }) => ctx.services.meta.info()),

  /** Which services the operator has set up (chat, speech, transcription, top-ups), so a client offers only those. */
  features: protectedProcedure.query(({ ctx }) => ctx.services.meta.features()),
})
