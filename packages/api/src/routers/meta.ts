import { createRouter, publicProcedure } from '../trpc.ts'

export const metaRouter = createRouter({
  /** Service identity; proves the HTTP link. */
  info: publicProcedure.query(({ ctx }) => ctx.services.meta.info()),
})
