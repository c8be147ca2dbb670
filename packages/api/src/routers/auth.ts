import { createRouter, protectedProcedure } from '../trpc.ts'

export const authRouter = createRouter({
  /** The caller as every transport sees it: the same `{ user, session }` for cookies, session tokens and JWTs. */
  me: protectedProcedure.query(({ ctx }) => ({ user: ctx.auth.user, session: ctx.auth.session })),

  /** Whether the admin procedures (and the web client's admin pages) are open to the caller; apart from `me`, which reads nothing. */
  isAdmin: protectedProcedure.query(async ({ ctx }) => ctx.auth.user.emailVerified && await ctx.services.operator.admins.isAdmin(ctx.auth.user.email)),
})
