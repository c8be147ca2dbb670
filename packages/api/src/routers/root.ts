import { createRouter } from '../trpc.ts'
import { adminRouter } from './admin.ts'
import { authRouter } from './auth.ts'
import { fluxRouter } from './flux.ts'
import { metaRouter } from './meta.ts'

export const appRouter = createRouter({
  admin: adminRouter,
  auth: authRouter,
  flux: fluxRouter,
  meta: metaRouter,
})

export type AppRouter = typeof appRouter
