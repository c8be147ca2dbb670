import { createRouter } from '../trpc.ts'
import { adminRouter } from './admin.ts'
import { authRouter } from './auth.ts'
import { metaRouter } from './meta.ts'

export const appRouter = createRouter({
  admin: adminRouter,
  auth: authRouter,
  meta: metaRouter,
})

export type AppRouter = typeof appRouter
