import { createRouter, protectedProcedure } from '../trpc.ts'

export const authRouter = createRouter({
  /** The caller as every transport sees it: the same `{ user, session }` for cookies, session tokens and JWTs. */
  me: protectedProcedure.query(({ ctx }) => ({ user: ctx.auth.user, session: ctx.auth.session })),
})
